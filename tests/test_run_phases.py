"""``musicfn run``'s start-up report and engine choice (no cluster needed)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

from musicfn_cli.commands.run_cmd import choose_engine
from musicfn_cli.commands.run_phases import Phases, process_age_s


def test_process_age_counts_from_the_process_start() -> None:
    code = "from musicfn_cli.commands.run_phases import process_age_s; print(process_age_s())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert 0.0 < float(out.stdout) < process_age_s()  # a child is younger than this test


def test_phase_lines_show_span_duration_and_total() -> None:
    phases = Phases()
    base = time.monotonic()
    phases.add("ray init", base, base + 2.0)
    phases.add("object store (S3 + bucket)", base - 0.5, base + 1.0)  # overlapping
    with phases.phase("deploy"):
        pass
    lines = phases.lines("ready (/healthz 200)")
    assert [line.split("  ")[1].strip() for line in lines] == [
        "object store (S3 + bucket)", "ray init", "deploy", "ready (/healthz 200)"]
    assert re.search(r"ray init\s+2\.00 s\s+\(\s*[\d.]+ ->\s*[\d.]+\)$", lines[1]), lines[1]
    assert re.search(r"object store \(S3 \+ bucket\)\s+1\.50 s", lines[0]), lines[0]
    assert lines[-1].startswith("start-up total  ready (/healthz 200)")


def test_engine_choice_asks_ray_for_gpus_not_torch() -> None:
    model = "facebook/musicgen-small"
    synth, why = choose_engine("auto", model, "cuda", gpus=0, weights=True)
    assert synth == {"engine": "synth", "device": "cpu"} and "no CUDA GPU" in why
    gpu, _ = choose_engine("auto", model, "cuda", gpus=1, weights=True)
    assert gpu == {"engine": "audiocraft", "model": model, "device": "cuda"}
    _, why = choose_engine("auto", model, "cuda", gpus=1, weights=False)
    assert "not found" in why
    asked, _ = choose_engine("audiocraft", model, "cuda", gpus=0, weights=False)
    assert asked["device"] == "cpu"
    code = ("import sys; from musicfn_cli.commands.run_cmd import choose_engine; "
            "choose_engine('auto', 'x', 'cuda', gpus=0, weights=False); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"  # torch costs seconds to import: not here
