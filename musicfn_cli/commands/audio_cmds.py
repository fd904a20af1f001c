"""``musicfn analyze`` and ``musicfn normalize``: the audio functions on local files.

The functions are imported inside the handlers so ``musicfn --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from functions.options import (
    BIT_DEPTH_SUBTYPES,
    DEFAULT_PRESET,
    EncodeOptions,
    FormatName,
    PresetName,
    resolve_levels,
)
from musicfn.errors import InvalidRequestError

if TYPE_CHECKING:
    from functions.decode import DecodeLimits
    from functions.results import AnalysisResult, AudioInfo

_SUFFIX_FORMATS: dict[str, FormatName] = {
    ".wav": "wav",
    ".flac": "flac",
    ".ogg": "ogg",
    ".oga": "ogg",
    ".mp3": "mp3",
}


def register(subparsers: Any) -> None:
    """Add the ``analyze`` and ``normalize`` commands."""
    analyze = subparsers.add_parser(
        "analyze",
        help="measure loudness, tempo, key and spectrum of audio files",
        description="Analyse audio files: levels, loudness, spectrum, tempo, key, waveform.",
    )
    analyze.add_argument("files", nargs="+", type=Path, metavar="FILE")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="also draw the waveforms into a PNG"
    )
    analyze.add_argument(
        "--buckets", type=int, default=1000, help="waveform peak buckets (default 1000)"
    )
    analyze.set_defaults(func=_analyze)

    normalize = subparsers.add_parser(
        "normalize",
        help="normalise loudness with a true-peak limiter and encode",
        description="Normalise a file's loudness (BS.1770 / EBU R128) under a true-peak "
        "ceiling and write it out.",
    )
    normalize.add_argument("input", type=Path, metavar="IN")
    normalize.add_argument("output", type=Path, metavar="OUT")
    normalize.add_argument(
        "--preset",
        choices=get_args(PresetName),
        help=f"streaming -14 LUFS, podcast -16, broadcast -23 (all -1 dBTP); default "
        f"{DEFAULT_PRESET}",
    )
    normalize.add_argument(
        "--target",
        type=float,
        metavar="LUFS",
        help="loudness target (default -16, or the preset's)",
    )
    normalize.add_argument(
        "--ceiling",
        type=float,
        metavar="DBTP",
        help="true-peak ceiling (default -1, or the preset's)",
    )
    normalize.add_argument(
        "--format",
        choices=("wav", "flac", "ogg", "mp3"),
        help="output format (default: from OUT's extension)",
    )
    normalize.add_argument(
        "--bit-depth",
        choices=("16", "24", "32", "float"),
        help="PCM sample format for WAV/FLAC (default 16)",
    )
    normalize.add_argument("--json", action="store_true", help="print the report as JSON")
    normalize.set_defaults(func=_normalize)


def _limits() -> DecodeLimits:
    from functions.decode import DecodeLimits
    from musicfn.settings import get_settings

    return DecodeLimits.from_settings(get_settings())


def _analyze(args: argparse.Namespace) -> int:
    from functions.analysis import analyze
    from functions.decode import decode_audio

    limits = _limits()
    results: list[tuple[Path, AudioInfo, AnalysisResult]] = []
    for path in args.files:
        decoded = decode_audio(path, limits)
        analysis = analyze(decoded.audio, decoded.sample_rate, buckets=args.buckets)
        results.append((path, decoded.info, analysis))
    if args.plot is not None:
        from functions.waveform_png import render_png

        _write_atomic(args.plot, render_png([a.waveform for _, _, a in results]))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "file": str(p),
                        "audio": i.model_dump(mode="json"),
                        "analysis": a.model_dump(mode="json"),
                    }
                    for p, i, a in results
                ]
            )
        )
    else:
        print(_table(results))
    return 0


def _table(results: list[tuple[Path, AudioInfo, AnalysisResult]]) -> str:
    header = (
        "file",
        "format",
        "dur s",
        "rate",
        "ch",
        "peak dBFS",
        "RMS dBFS",
        "LUFS",
        "crest dB",
        "tempo",
        "key",
        "centroid Hz",
    )
    rows = [header]
    for path, info, a in results:
        tempo = f"{a.tempo.bpm:.1f} ({a.tempo.confidence:.2f})" if a.tempo else "-"
        key = f"{a.key.label} ({a.key.confidence:.2f})" if a.key else "-"
        rows.append(
            (
                path.name,
                f"{info.format}/{info.subtype}",
                f"{a.duration_s:.2f}",
                str(a.sample_rate),
                str(a.channels),
                _num(a.peak_dbfs),
                _num(a.rms_dbfs),
                _num(a.integrated_lufs),
                _num(a.crest_factor_db),
                tempo,
                key,
                _num(a.spectral.centroid_hz if a.spectral else None, 0),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _normalize(args: argparse.Namespace) -> int:
    from functions.decode import decode_audio
    from functions.encode import encode
    from functions.normalize import normalize

    fmt: FormatName | None = args.format or _SUFFIX_FORMATS.get(args.output.suffix.lower())
    if fmt is None:
        raise InvalidRequestError(
            f"cannot tell the format of {args.output}: use --format or a .wav/.flac/.ogg/.mp3 name",
            code="unknown_format",
        )
    if args.bit_depth is not None and fmt in ("ogg", "mp3"):
        raise InvalidRequestError(
            f"--bit-depth does not apply to {fmt} (lossy)", code="bad_subtype"
        )
    target, ceiling = resolve_levels(args.preset, args.target, args.ceiling)

    decoded = decode_audio(args.input, _limits())
    audio, report = normalize(decoded.audio, decoded.sample_rate, target, ceiling)
    report = report.model_copy(update={"preset": args.preset})
    options = EncodeOptions(
        format=fmt, subtype=BIT_DEPTH_SUBTYPES[args.bit_depth] if args.bit_depth else None
    )
    data, facts = encode(audio, decoded.sample_rate, options)
    _write_atomic(args.output, data)
    if args.json:
        print(
            json.dumps(
                {
                    "input": str(args.input),
                    "output": str(args.output),
                    "loudness": report.model_dump(mode="json"),
                    "encoding": facts.model_dump(mode="json"),
                }
            )
        )
        return 0
    before, after = report.before, report.after
    if report.skipped_reason:
        print(f"{args.input}: unchanged ({report.skipped_reason}) -> {args.output}")
        return 0
    limiter = (
        f"limiter -{report.limiter_max_reduction_db:.1f} dB max"
        if report.limiter_applied
        else "limiter idle"
    )
    print(
        f"{args.input}: {_num(before.integrated_lufs)} -> {_num(after.integrated_lufs)} LUFS, "
        f"true peak {_num(before.true_peak_dbtp)} -> {_num(after.true_peak_dbtp)} dBTP, "
        f"gain {report.gain_db:+.1f} dB, {limiter} -> {args.output} "
        f"({facts.format} {facts.subtype}, {facts.bytes} bytes)"
    )
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory, then rename over ``path``."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        raise InvalidRequestError(
            f"cannot write {path}: {exc.strerror or exc}", code="cannot_write"
        ) from None
