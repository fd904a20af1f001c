"""``musicfn analyze`` / ``musicfn normalize`` through ``musicfn_cli.main.main`` and the script."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from functions.loudness import measure_loudness
from musicfn_cli.main import main
from tests.support.signals import cadence, chord_progression, pattern

SR = 32_000
MUSICFN = Path(sys.executable).parent / "musicfn"


@pytest.fixture
def song(tmp_path: Path) -> Path:
    drums = pattern(120, 8, SR, drums=True)
    chords = chord_progression(cadence(57, True) * 2, 1.0, SR)  # A minor
    n = min(drums.shape[1], chords.shape[1])
    path = tmp_path / "song.wav"
    sf.write(path, (0.4 * drums[:, :n] + 0.5 * chords[:, :n]).T, SR, subtype="PCM_16")
    return path


@pytest.fixture
def bad_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.wav"
    path.write_bytes(b"this is not a wav file at all" * 10)
    return path


def test_analyze_prints_a_table(song: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(song)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["file", "format", "dur"]
    assert "song.wav" in out[1] and "A minor" in out[1] and "120" in out[1]


def test_analyze_json_and_plot(
    song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = tmp_path / "wave.png"
    assert (
        main(["analyze", str(song), str(song), "--json", "--plot", str(plot), "--buckets", "300"])
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2
    first = results[0]
    assert first["audio"]["format"] == "WAV" and first["audio"]["subtype"] == "PCM_16"
    assert first["analysis"]["key"]["label"] == "A minor"
    assert first["analysis"]["waveform"]["length"] <= 300
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == first["analysis"]["waveform"]["length"]
    assert height == 2 * 2 * 120 + 2  # two files x two channels, one separator


def test_normalize_with_preset(
    song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.wav"
    assert main(["normalize", str(song), str(out), "--preset", "broadcast"]) == 0
    assert "-> " in capsys.readouterr().out
    audio, sr = sf.read(out, dtype="float32", always_2d=True)
    assert sr == SR
    stats = measure_loudness(np.ascontiguousarray(audio.T), sr)
    assert stats.integrated_lufs == pytest.approx(-23.0, abs=0.5)
    assert stats.true_peak_dbtp is not None and stats.true_peak_dbtp <= -1.0 + 1e-3


def test_normalize_format_bit_depth_and_overrides(
    song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.bin"
    assert (
        main(
            [
                "normalize",
                str(song),
                str(out),
                "--preset",
                "streaming",
                "--target",
                "-18",
                "--ceiling",
                "-2",
                "--format",
                "flac",
                "--bit-depth",
                "24",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["loudness"]["target_lufs"] == -18.0
    assert report["loudness"]["ceiling_dbtp"] == -2.0
    assert report["encoding"]["format"] == "FLAC" and report["encoding"]["subtype"] == "PCM_24"
    info = sf.info(out)
    assert (info.format, info.subtype) == ("FLAC", "PCM_24")


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "{bad}"],
        ["analyze", "{missing}"],
        ["normalize", "{bad}", "{out}.wav"],
        ["normalize", "{song}", "{out}.xyz"],
        ["normalize", "{song}", "{out}.mp3", "--bit-depth", "24"],
        ["normalize", "{song}", "{out}.wav", "--target", "+5"],
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], song: Path, bad_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {
        "bad": bad_file,
        "missing": tmp_path / "missing.wav",
        "song": song,
        "out": tmp_path / "out",
    }
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("musicfn: error: ")


def test_console_script_reports_a_bad_file_in_one_line(bad_file: Path) -> None:
    proc = subprocess.run(
        [str(MUSICFN), "analyze", str(bad_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "bad.wav" in lines[0] and "[unreadable_audio]" in lines[0]
    assert proc.stdout == ""
