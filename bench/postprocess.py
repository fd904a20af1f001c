"""Post-processing benchmark: our normalise + analyse + encode vs a naive seed-style script.

A synthetic 30 s, 32 kHz stereo song (drums at 120 BPM over I-IV-V-I in D major with a bass)
is written to a WAV file; each path reads it, normalises to -16 LUFS, analyses it (levels,
loudness, spectrum, tempo, key) and writes a 16-bit WAV.

- ours:  functions.decode + functions.pipeline.process_clip (one resample, one STFT, vectorised
         true-peak limiter, seeded TPDF dither) + one file write;
- naive: soundfile.read, pyloudnorm normalise, librosa beat_track at the native rate,
         chroma_cqt key, separate librosa passes for each statistic, soundfile.write.

Pinned to one core with single-threaded BLAS by default. First-call times are measured in
fresh subprocesses (imports done, nothing compiled or cached in memory yet); warm times are
medians over interleaved runs in this process.

    .venv/bin/python bench/postprocess.py [--runs 7] [--cores 1]
"""

from __future__ import annotations

import os
import sys


def _cores_requested(argv: list[str]) -> int:
    """``--cores N`` read before argparse: thread limits must be set before numpy loads."""
    for i, arg in enumerate(argv):
        if arg == "--cores" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--cores="):
            return int(arg.split("=", 1)[1])
    return 1


if _cores_requested(sys.argv[1:]) == 1:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import pyloudnorm  # noqa: E402
import soundfile as sf  # noqa: E402

from functions.decode import decode_audio  # noqa: E402
from functions.key import key_from_chroma  # noqa: E402
from functions.pipeline import ClipOptions, process_clip  # noqa: E402

SR = 32_000
SECONDS = 30.0
TARGET = -16.0
TRUE_BPM, TRUE_KEY = 120.0, "D major"


def make_song(path: Path) -> None:
    """Drums at 120 BPM, I-IV-V-I in D major (2 s per chord), a bass line; float WAV."""
    rng = np.random.default_rng(7)
    n = int(SECONDS * SR)
    t = np.arange(n) / SR
    out = np.zeros(n)
    beat = 0.5
    for i in range(int(SECONDS / beat)):
        start = int(i * beat * SR)
        length = min(int(0.25 * SR), n - start)
        tt = np.arange(length) / SR
        if i % 2 == 0:
            hit = np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-tt / 0.03)) / SR)
            hit *= np.exp(-tt / 0.08)
        else:
            hit = 0.5 * rng.standard_normal(length) * np.exp(-tt / 0.05)
        out[start : start + length] += hit
    chords = [[62, 66, 69], [67, 71, 74], [69, 73, 76], [62, 66, 69]]  # D G A D
    for i in range(int(SECONDS / 2)):
        notes = chords[i % 4]
        seg = slice(int(i * 2 * SR), int((i + 1) * 2 * SR))
        tt = t[seg] - i * 2
        env = np.minimum(1, np.minimum(tt, 2 - tt) / 0.02)
        for m in [*notes, notes[0] - 24]:
            f = 440 * 2 ** ((m - 69) / 12)
            out[seg] += (
                0.25
                * env
                * sum(a * np.sin(2 * np.pi * f * h * tt) for h, a in ((1, 1), (2, 0.4), (3, 0.2)))
            )
    out *= 0.5 / np.abs(out).max()
    stereo = np.stack([out, 0.95 * out + 0.01 * rng.standard_normal(n)])
    sf.write(path, stereo.T.astype(np.float32), SR, subtype="FLOAT")


def ours(src: Path, dst: Path) -> dict[str, Any]:
    decoded = decode_audio(src)
    clip = process_clip(
        decoded.audio, decoded.sample_rate, ClipOptions(preset=None, target_lufs=TARGET)
    )
    dst.write_bytes(clip.audio)
    a = clip.analysis
    return {
        "tempo": a.tempo.bpm if a.tempo else None,
        "key": a.key.label if a.key else None,
        "lufs": clip.loudness.after.integrated_lufs,
    }


def naive(src: Path, dst: Path) -> dict[str, Any]:
    data, sr = sf.read(src)
    meter = pyloudnorm.Meter(sr)
    loudness = meter.integrated_loudness(data)
    data = pyloudnorm.normalize.loudness(data, loudness, TARGET)
    data = np.clip(data, -1.0, 1.0)
    y = data.mean(axis=1).astype(np.float32)
    tempo, _beats = librosa.beat.beat_track(y=y, sr=sr)
    chroma = librosa.feature.chroma_cqt(y=y, sr=sr).mean(axis=1)
    key = key_from_chroma(chroma.astype(np.float64))
    stats = {
        "peak": float(np.abs(data).max()),
        "rms": float(librosa.feature.rms(y=y).mean()),
        "zcr": float(librosa.feature.zero_crossing_rate(y).mean()),
        "centroid": float(librosa.feature.spectral_centroid(y=y, sr=sr).mean()),
        "bandwidth": float(librosa.feature.spectral_bandwidth(y=y, sr=sr).mean()),
        "rolloff": float(librosa.feature.spectral_rolloff(y=y, sr=sr).mean()),
        "lufs": float(pyloudnorm.Meter(sr).integrated_loudness(data)),
    }
    sf.write(dst, data, sr, subtype="PCM_16")
    return {
        "tempo": float(np.atleast_1d(tempo)[0]),
        "key": key.label if not isinstance(key, str) else None,
        "lufs": stats["lufs"],
    }


PATHS = {"ours": ours, "naive": naive}


def _first_call(which: str, src: Path, dst: Path) -> None:
    start = time.perf_counter()
    answers = PATHS[which](src, dst)
    print(json.dumps({"seconds": time.perf_counter() - start, "answers": answers}))


def _pin(cores: int) -> None:
    if hasattr(os, "sched_setaffinity"):
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(available[:cores]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="warm runs per path (default 7)")
    parser.add_argument("--cores", type=int, default=1, help="CPU cores to pin to (default 1)")
    parser.add_argument("--first", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _pin(args.cores)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.first:
            _first_call(args.first, args.src, work / "out.wav")
            return 0
        src = work / "song.wav"
        make_song(src)
        first: dict[str, dict[str, Any]] = {}
        for which in PATHS:
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--first",
                    which,
                    "--src",
                    str(src),
                    "--cores",
                    str(args.cores),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            first[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        times: dict[str, list[float]] = {w: [] for w in PATHS}
        answers: dict[str, dict[str, Any]] = {}
        for which in PATHS:  # warm-up in this process
            answers[which] = PATHS[which](src, work / f"{which}.wav")
        for _ in range(args.runs):
            for which in PATHS:
                start = time.perf_counter()
                PATHS[which](src, work / f"{which}.wav")
                times[which].append(time.perf_counter() - start)
    warm = {w: statistics.median(t) for w, t in times.items()}
    cold = {w: first[w]["seconds"] for w in PATHS}
    o, nv = answers["ours"], answers["naive"]
    tempo_ratio = o["tempo"] / nv["tempo"] if o["tempo"] and nv["tempo"] else 0.0
    octave = min(abs(tempo_ratio - r) / r for r in (0.5, 2.0)) <= 0.04
    tempo_same = abs(tempo_ratio - 1) <= 0.04
    same = bool(
        (tempo_same or octave) and o["key"] == nv["key"] and abs(o["lufs"] - nv["lufs"]) <= 0.5
    )
    print(
        f"postprocess: {SECONDS:g} s, {SR // 1000} kHz stereo -> normalise {TARGET:g} LUFS + "
        f"analyse + WAV16; {args.cores} core(s), median of {args.runs} warm runs"
    )
    print(f"{'':8}{'first call':>12}{'warm median':>14}")
    for which in PATHS:
        print(f"{which:8}{cold[which]:>10.3f} s{warm[which] * 1000:>11.1f} ms")
    ratio_warm, ratio_cold = warm["ours"] / warm["naive"], cold["ours"] / cold["naive"]
    print(
        f"{'ratio':8}{ratio_cold:>12.3f}{ratio_warm:>14.3f}   "
        f"(target: warm ratio <= 0.25 and ours <= 250 ms)"
    )
    print(f"truth    tempo {TRUE_BPM:.2f} BPM, key {TRUE_KEY}, {TARGET:.2f} LUFS")
    for which, a in (("ours", o), ("naive", nv)):
        print(f"{which:8} tempo {a['tempo']:.2f} BPM, key {a['key']}, {a['lufs']:.2f} LUFS")
    verdict = (
        "same" if same and tempo_same else ("same up to a tempo octave" if same else "DIFFERENT")
    )
    print(f"answers: {verdict}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
