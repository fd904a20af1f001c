"""Accuracy of musicfn's loudness, key, tempo and normalisation on real recordings.

Reads ``shared/testdata/real-audio/ground_truth.json`` (next to the repository; override with
``REAL_AUDIO_DIR``), runs our analysis and normalisation on every tier-A file, scores
them with the field's rules (mir_eval's MIREX key score, tempo Accuracy1/2, EBU tolerances) and
times our whole analysis beside librosa's and, when it is installed, essentia's. Prints one
table per measure and a summary line; ``--check`` exits 1 when a target is missed.

    .venv/bin/python bench/accuracy.py [--check] [--repeats N]

Runs on one core (the process is pinned before numpy loads) so the timings compare like with
like. Imports nothing from tests/: a site-packages ``tests`` package can shadow it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import mir_eval  # type: ignore[import-untyped]  # noqa: E402
import numpy as np  # noqa: E402
import pyloudnorm  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from functions.analysis import analyze  # noqa: E402
from functions.audio import to_mono  # noqa: E402
from functions.decode import DecodedAudio, decode_audio  # noqa: E402
from functions.loudness import measure_loudness  # noqa: E402
from functions.normalize import DEFAULT_PRESET, PRESETS, normalize  # noqa: E402

DATA_ENV = "REAL_AUDIO_DIR"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/testdata/real-audio"
MIN_TEMPO_S = 4.0
TEMPO_TOL = 0.04
TIMING_CLIP, TIMING_S = "ess_techno_loop", 30.0
TARGETS = {"key": 0.85, "key_exact": 6, "acc1": 7, "timing_ms": 200.0, "vs_essentia": 0.1}

Row = list[str]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    data = Path(os.environ.get(DATA_ENV, DEFAULT_DATA))
    if not (data / "ground_truth.json").is_file():
        print(f"no ground_truth.json in {data} (set {DATA_ENV})", file=sys.stderr)
        return 2
    entries = json.loads((data / "ground_truth.json").read_text())["files"]
    clips = {e["id"]: decode_audio(data / e["file"]) for e in entries}
    essentia = _essentia()
    results = {
        "loudness": _loudness(entries, clips, "integrated_lufs", essentia),
        "lra": _loudness(entries, clips, "lra_lu", essentia),
        "key": _key(entries, clips, essentia),
        "tempo": _tempo(entries, clips, essentia),
        "normalise": _normalise(entries, clips),
    }
    timing = _timing(clips, essentia, args.repeats)
    missed = _summary(results, timing)
    return 1 if args.check and missed else 0


def _table(title: str, header: Row, rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n## {title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ok(ok: bool) -> str:
    return "ok" if ok else "MISS"


def _tier_a(entries: list[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
    return [e for e in entries if measure in e["truth"] and e["tier"] == "A"]


def _loudness(
    entries: list[dict[str, Any]], clips: dict[str, DecodedAudio], measure: str, ess: Any
) -> tuple[int, int]:
    rows, hits = [], 0
    for e in _tier_a(entries, measure):
        clip, truth = clips[e["id"]], e["truth"][measure]
        stats = measure_loudness(clip.audio, clip.sample_rate)
        ours = stats.integrated_lufs if measure == "integrated_lufs" else stats.loudness_range_lu
        ok = ours is not None and abs(ours - truth["value"]) <= truth["tol"]
        hits += ok
        theirs = None
        if ess is not None:
            ebu = ess.LoudnessEBUR128(sampleRate=clip.sample_rate)(_stereo(clip))
            theirs = float(ebu[2] if measure == "integrated_lufs" else ebu[3])
        rows.append([e["id"], _fmt(truth["value"], 1), _fmt(ours), _fmt(theirs), _ok(ok)])
    label = "integrated loudness (LUFS, +-0.1)" if measure == "integrated_lufs" else "LRA (LU, +-1)"
    _table(label, ["clip", "truth", "ours", "essentia", ""], rows)
    return hits, len(rows)


def _key(
    entries: list[dict[str, Any]], clips: dict[str, DecodedAudio], ess: Any
) -> tuple[float, int, int]:
    rows, total, exact, count = [], 0.0, 0, 0
    for e in [e for e in entries if "key" in e["truth"]]:
        clip, truth = clips[e["id"]], e["truth"]["key"]
        result = analyze(clip.audio, clip.sample_rate).key
        ours = result.label if result else "-"
        scored = e["tier"] == "A" and not truth.get("disputed")
        score = mir_eval.key.weighted_score(truth["value"], ours) if result else 0.0
        if scored:
            total, exact, count = total + score, exact + (score == 1.0), count + 1
        theirs = "-"
        if ess is not None:
            key, scale, _ = ess.KeyExtractor(sampleRate=clip.sample_rate)(_mono(clip))
            theirs = f"{key} {scale}"
        runner = f"{result.runner_up} ({result.runner_up_confidence:.2f})" if result else "-"
        conf = _fmt(result.confidence if result else None)
        rows.append([e["id"], truth["value"], ours, conf, runner, _fmt(score, 1), theirs])
        rows[-1][5] = rows[-1][5] if scored else "(shown)"
    _table(
        "key (mir_eval weighted score)",
        ["clip", "truth", "ours", "conf", "runner-up", "score", "essentia"],
        rows,
    )
    return total / max(count, 1), exact, count


def _tempo_hit(bpm: float | None, truth: float) -> tuple[bool, bool]:
    if bpm is None:
        return False, False
    acc1 = abs(bpm / truth - 1.0) <= TEMPO_TOL
    factors = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    return acc1, any(abs(bpm / (truth * f) - 1.0) <= TEMPO_TOL for f in factors)


def _tempo(
    entries: list[dict[str, Any]], clips: dict[str, DecodedAudio], ess: Any
) -> dict[str, tuple[int, int]]:
    import librosa

    rows: list[Row] = []
    counts = {name: [0, 0] for name in ("ours", "librosa", "essentia")}
    scored = 0
    for e in [e for e in entries if "tempo_bpm" in e["truth"]]:
        clip, truth = clips[e["id"]], e["truth"]["tempo_bpm"]["value"]
        seconds = clip.audio.shape[1] / clip.sample_rate
        tempo = analyze(clip.audio, clip.sample_rate).tempo
        estimates = {
            "ours": tempo.bpm if tempo else None,
            "librosa": float(librosa.feature.tempo(y=_mono(clip), sr=clip.sample_rate)[0]),
            "essentia": float(ess.RhythmExtractor2013()(_mono(clip, 44_100))[0]) if ess else None,
        }
        counted = e["tier"] == "A" and seconds >= MIN_TEMPO_S
        scored += counted
        marks = []
        for name, bpm in estimates.items():
            acc1, acc2 = _tempo_hit(bpm, truth)
            if counted:
                counts[name][0] += acc1
                counts[name][1] += acc2
            marks.append(f"{_fmt(bpm, 1)} {'A1' if acc1 else 'A2' if acc2 else '--'}")
        note = "" if counted else ("(tier B)" if e["tier"] != "A" else f"(< {MIN_TEMPO_S:g} s)")
        rows.append([e["id"], f"{seconds:.1f}", _fmt(truth, 1), *marks, note])
    _table(
        f"tempo (BPM; A1 within 4 %, A2 also x2 x1/2 x3 x1/3; scored: tier A >= {MIN_TEMPO_S:g} s)",
        ["clip", "s", "truth", "ours", "librosa", "essentia", ""],
        rows,
    )
    return {name: (a1, a2) for name, (a1, a2) in counts.items()} | {"n": (scored, scored)}


def _normalise(entries: list[dict[str, Any]], clips: dict[str, DecodedAudio]) -> tuple[int, int]:
    preset = PRESETS[DEFAULT_PRESET]
    rows, hits = [], 0
    for e in entries:
        clip = clips[e["id"]]
        out, report = normalize(clip.audio, clip.sample_rate, preset=DEFAULT_PRESET)
        meter = pyloudnorm.Meter(clip.sample_rate)
        lufs = float(meter.integrated_loudness(out.T.astype(np.float64)))
        oversampled = resample_poly(out.astype(np.float64), 4, 1, axis=1)
        dbtp = 20.0 * np.log10(max(float(np.abs(oversampled).max()), 1e-12))
        ok = abs(lufs - preset.target_lufs) <= 0.1 and dbtp <= preset.ceiling_dbtp
        hits += ok
        why = report.off_target_reason or report.skipped_reason or ""
        limited = _fmt(report.limiter_max_reduction_db, 1) if report.limiter_applied else "-"
        before = _fmt(report.before.integrated_lufs)
        rows.append([e["id"], before, _fmt(lufs), _fmt(dbtp), limited, _ok(ok), why])
    _table(
        f"normalise to {preset.target_lufs:g} LUFS / {preset.ceiling_dbtp:g} dBTP "
        "(checked with pyloudnorm and 4x resample_poly)",
        ["clip", "before", "after", "dBTP", "limited dB", "", "reason"],
        rows,
    )
    return hits, len(rows)


def _timing(
    clips: dict[str, DecodedAudio], ess: Any, repeats: int
) -> dict[str, tuple[float, float]]:
    """Median seconds on the 30 s clip, and the total over every clip (one run each)."""
    clip = clips[TIMING_CLIP]
    frames = int(TIMING_S * clip.sample_rate)
    audio, rate = np.ascontiguousarray(clip.audio[:, :frames]), clip.sample_rate
    runners: dict[str, Callable[[DecodedAudio], object]] = {
        "ours": lambda c: analyze(c.audio, c.sample_rate),
        "librosa": _librosa_analysis,
    }
    if ess is not None:
        runners["essentia"] = lambda c: _essentia_analysis(c, ess)
    trimmed = DecodedAudio(audio=audio, sample_rate=rate, info=clip.info)
    seconds = {}
    for name, run in runners.items():
        run(trimmed)  # warm: imports, caches, numba
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run(trimmed)
            times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for each in clips.values():
            run(each)
        seconds[name] = (statistics.median(times), time.perf_counter() - start)
    ours = seconds["ours"]
    rows = [
        [n, f"{1000 * a:.1f}", f"{a / ours[0]:.1f}x", f"{b:.2f}", f"{b / ours[1]:.1f}x"]
        for n, (a, b) in seconds.items()
    ]
    _table(
        f"whole analysis, warm, one core: {TIMING_S:g} s stereo {rate} Hz (median of {repeats}) "
        f"and all {len(clips)} clips",
        ["", "30 s: ms", "vs ours", "all: s", "vs ours"],
        rows,
    )
    return seconds


def _librosa_analysis(clip: DecodedAudio) -> None:
    """What our analysis computes, the librosa way: loudness (pyloudnorm), spectral shape,
    tempo and CQT chroma for the key."""
    import librosa

    pyloudnorm.Meter(clip.sample_rate).integrated_loudness(clip.audio.T)
    y = librosa.resample(_mono(clip), orig_sr=clip.sample_rate, target_sr=22_050)
    spectrum = np.abs(librosa.stft(y))
    librosa.feature.spectral_centroid(S=spectrum)
    librosa.feature.spectral_bandwidth(S=spectrum)
    librosa.feature.spectral_rolloff(S=spectrum)
    librosa.feature.zero_crossing_rate(y)
    librosa.feature.tempo(y=y, sr=22_050)
    librosa.feature.chroma_cqt(y=y, sr=22_050)


def _essentia_analysis(clip: DecodedAudio, ess: Any) -> None:
    """The essentia equivalent: EBU R128 loudness, frame-wise spectral shape at 22.05 kHz (as
    ours and librosa's), key and rhythm extractors."""
    ess.LoudnessEBUR128(sampleRate=clip.sample_rate)(_stereo(clip))
    y = _mono(clip, 22_050)
    window, spectrum = ess.Windowing(type="hann"), ess.Spectrum()
    centroid, rolloff = ess.Centroid(range=11_025), ess.RollOff(sampleRate=22_050)
    spread, zcr = ess.CentralMoments(range=11_025), ess.ZeroCrossingRate()
    for frame in ess.FrameGenerator(y, frameSize=2048, hopSize=512):
        magnitude = spectrum(window(frame))
        centroid(magnitude)
        rolloff(magnitude)
        spread(magnitude)
        zcr(frame)
    ess.KeyExtractor(sampleRate=clip.sample_rate)(_mono(clip))
    ess.RhythmExtractor2013()(_mono(clip, 44_100))


def _summary(results: dict[str, Any], timing: dict[str, tuple[float, float]]) -> list[str]:
    (lufs, lufs_n), (lra, lra_n) = results["loudness"], results["lra"]
    score, exact, keys = results["key"]
    tempo, (normalised, files) = results["tempo"], results["normalise"]
    n = tempo["n"][0]
    ours = timing["ours"][0]
    ratios = {name: ours / seconds[0] for name, seconds in timing.items() if name != "ours"}
    missed = [
        name
        for name, bad in (
            ("loudness", lufs < lufs_n),
            ("lra", lra < lra_n),
            ("key", score < TARGETS["key"] or exact < TARGETS["key_exact"]),
            ("tempo", tempo["ours"][0] < TARGETS["acc1"] or tempo["ours"][1] < n),
            ("normalise", normalised < files),
            ("timing", 1000 * ours > TARGETS["timing_ms"]),
            ("vs essentia", ratios.get("essentia", 0.0) > TARGETS["vs_essentia"]),
        )
        if bad
    ]
    speed = ", ".join(f"{r:.3f}x {name}" for name, r in ratios.items())
    print(
        f"\nSUMMARY loudness {lufs}/{lufs_n} | LRA {lra}/{lra_n} | key {score:.3f} "
        f"({exact}/{keys} exact) | tempo Acc1 {tempo['ours'][0]}/{n} Acc2 {tempo['ours'][1]}/{n} "
        f"(librosa {tempo['librosa'][0]}/{n}, essentia {tempo['essentia'][0]}/{n}) | normalise "
        f"{normalised}/{files} | 30 s analysis {1000 * ours:.0f} ms = {speed} "
        f"| missed: {', '.join(missed) or 'none'}"
    )
    return missed


def _mono(clip: DecodedAudio, rate: int | None = None) -> np.ndarray:
    mono = to_mono(clip.audio)
    if rate is not None and rate != clip.sample_rate:
        import librosa

        mono = librosa.resample(mono, orig_sr=clip.sample_rate, target_sr=rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _stereo(clip: DecodedAudio) -> np.ndarray:
    audio = clip.audio if clip.audio.shape[0] == 2 else np.repeat(clip.audio[:1], 2, axis=0)
    return np.ascontiguousarray(audio.T, dtype=np.float32)


def _essentia() -> Any:
    try:
        import essentia  # type: ignore[import-untyped]
        import essentia.standard as ess  # type: ignore[import-untyped]
    except ImportError:
        return None
    essentia.log.infoActive = False
    essentia.log.warningActive = False
    return ess


if __name__ == "__main__":
    sys.exit(main())
