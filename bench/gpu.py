"""GPU benchmark of MusicGen generation: dtype x batch x clip length, against the bandwidth floor.

For each dtype (fp16, bf16), clip (10 s, 30 s) and batch (1, 4, 8, 16) it runs audiocraft's
``MusicGen.generate`` in this process (no Serve: the model's own speed) and prints wall time,
tokens/s, the real-time factor, peak GPU memory, and the floor that memory bandwidth allows:
every decoding step reads the LM's weights once, so a clip of F frames (F + 3 steps, the
4-codebook delay pattern) cannot take less than ``steps x weight bytes / bandwidth`` whatever
the batch (batching adds reads of activations and the KV cache, not of weights; classifier-free
guidance doubles the rows, not the weight reads). The floor covers the LM only; EnCodec decoding
and the text conditioner run once per clip.

A token is one frame of the 50 Hz EnCodec stream (20 ms of audio, 4 codebook entries).
RTF = wall time / clip duration (below 1 is faster than real time), the latency a request in
that batch sees; audio-s/s = batch x clip / wall is the throughput.

    .venv/bin/python bench/gpu.py --model facebook/musicgen-small      # downloads the weights
    .venv/bin/python bench/gpu.py --model DIR   # from `musicfn make-tiny-model DIR --size small`
    .venv/bin/python bench/gpu.py --size small  # builds random small weights first (minutes)
    .venv/bin/python bench/gpu.py --cpu-smoke   # proves the script on a CPU: tiny, fp32, 1 s
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# A bench/<name>.py named like an installed package would shadow it: take this script's
# directory off the path and put the project root on it instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

FRAME_RATE = 50  # EnCodec frames per second, every MusicGen
#: Peak memory bandwidth (TB/s, vendor figures) by a substring of torch's device name. First
#: match wins, so the more specific names come first.
GPU_BANDWIDTH_TBS: tuple[tuple[str, str, float], ...] = (
    ("H200", "H200 SXM", 4.8),
    ("H100 PCIe", "H100 PCIe", 2.0),
    ("H100 NVL", "H100 NVL", 3.9),
    ("H100", "H100 SXM", 3.35),
    ("GH200", "GH200", 4.0),
    ("A100-SXM4-40GB", "A100 40GB SXM", 1.555),
    ("A100-PCIE-40GB", "A100 40GB PCIe", 1.555),
    ("A100 80GB PCIe", "A100 80GB PCIe", 1.935),
    ("A100", "A100 80GB SXM", 2.0),
    ("L40S", "L40S", 0.864),
    ("L40", "L40", 0.864),
    ("L4", "L4", 0.3),
    ("A10G", "A10G", 0.6),
    ("A10", "A10", 0.6),
    ("T4", "T4", 0.32),
    ("V100", "V100", 0.9),
    ("RTX 4090", "RTX 4090", 1.008),
    ("RTX 3090", "RTX 3090", 0.936),
)
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class Row:
    """One measurement: a batch of ``batch`` clips of ``clip_s`` seconds in ``dtype``."""

    dtype: str
    clip_s: float
    batch: int
    wall_s: float
    peak_gib: float | None
    floor_s: float | None

    def line(self) -> str:
        """The row as printed in the table."""
        frames = math.ceil(self.clip_s * FRAME_RATE)
        peak = f"{self.peak_gib:.2f}" if self.peak_gib is not None else "-"
        floor = f"{self.floor_s * 1000:.1f}" if self.floor_s is not None else "-"
        ratio = f"{self.wall_s / self.floor_s:.3g}x" if self.floor_s else "-"
        return (f"{self.dtype:>8} {self.clip_s:>5g}s {self.batch:>5d} {self.wall_s:>8.2f} "
                f"{self.batch * frames / self.wall_s:>9.1f} {self.wall_s / self.clip_s:>6.2f} "
                f"{self.batch * self.clip_s / self.wall_s:>9.2f} {peak:>8} {floor:>8} "
                f"{ratio:>8}")


HEADER = (f"{'dtype':>8} {'clip':>6} {'batch':>5} {'wall s':>8} {'tokens/s':>9} {'RTF':>6} "
          f"{'audio-s/s':>9} {'peak GiB':>8} {'floor ms':>8} {'vs floor':>8}")


def bandwidth_for(name: str) -> tuple[str, float] | None:
    """(label, TB/s) of the first table entry whose pattern occurs in ``name``."""
    for pattern, label, tbs in GPU_BANDWIDTH_TBS:
        if pattern.lower() in name.lower():
            return label, tbs
    return None


def step_weight_bytes(model: Any, dtype: str) -> int:
    """Bytes of LM weights one decoding step reads (the text conditioner runs once per clip)."""
    lm = model.lm
    skip = {id(p) for p in lm.condition_provider.parameters()}
    return int(sum(p.numel() for p in lm.parameters() if id(p) not in skip)) * DTYPE_BYTES[dtype]


def floor_seconds(clip_s: float, weight_bytes: int, tbs: float) -> float:
    """The bandwidth floor for one clip: steps x weight bytes / bandwidth."""
    steps = math.ceil(clip_s * FRAME_RATE) + 3
    return steps * weight_bytes / (tbs * 1e12)


def set_dtype(model: Any, dtype: str, device: str) -> None:
    """Put the LM in ``dtype`` with matching autocast (EnCodec stays float32)."""
    import torch
    from audiocraft.utils.autocast import TorchAutocast

    torch_dtype = getattr(torch, dtype)
    model.lm.to(torch_dtype)
    model.autocast = TorchAutocast(enabled=dtype != "float32", device_type=device,
                                   dtype=torch_dtype)


def measure(model: Any, device: str, dtype: str, clip_s: float, batch: int,
            floor: float | None) -> Row:
    """Generate ``batch`` clips of ``clip_s`` seconds once; time it with the device synced."""
    import torch

    model.set_generation_params(duration=clip_s, top_k=250, cfg_coef=3.0)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(batch)
    started = time.perf_counter()
    wav = model.generate([f"bench prompt {i}" for i in range(batch)])
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    if wav.shape[0] != batch:
        raise RuntimeError(f"asked for {batch} clips, got {wav.shape[0]}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return Row(dtype, clip_s, batch, wall, peak, floor)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model, run the grid and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default=None, help="HF id or a local checkpoint dir")
    parser.add_argument("--size", default=None,
                        help="build random weights of this engines.tiny_model size instead")
    parser.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"],
                        choices=list(DTYPE_BYTES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--clips", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--gpu", default=None,
                        help="GPU name for the floor (default: the visible GPU's name; "
                        "on the CPU, H100)")
    parser.add_argument("--bandwidth-tbs", type=float, default=None,
                        help="memory bandwidth for the floor, overriding the table")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="reduced run on the CPU: tiny model, fp32, batch 1/2, 1 s clips")
    args = parser.parse_args(argv)

    import torch
    from audiocraft.models.musicgen import MusicGen

    from engines.tiny_model import make_tiny_model

    if args.cpu_smoke:
        device = "cpu"
        args.size, args.model = args.size or "tiny", None
        args.dtypes, args.batches, args.clips = ["float32"], [1, 2], [1.0]
    elif not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA GPU visible; use --cpu-smoke to check the script",
              file=sys.stderr)
        return 2
    else:
        device = "cuda"
    if (args.model is None) == (args.size is None):
        parser.error("give exactly one of --model and --size (or --cpu-smoke)")

    gpu_name = args.gpu or (torch.cuda.get_device_name(0) if device == "cuda" else "H100")
    known = bandwidth_for(gpu_name)
    tbs = args.bandwidth_tbs or (known[1] if known else None)
    label = known[0] if known and not args.bandwidth_tbs else gpu_name
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model
        if source is None:
            started = time.perf_counter()
            source = str(make_tiny_model(Path(tmp) / "model", size=args.size,
                                         weights_dtype="float16"))
            print(f"built random {args.size} weights in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        model = MusicGen.get_pretrained(source, device=device)
        print(f"model {source} on {device}: loaded in {time.perf_counter() - started:.1f} s, "
              f"torch {torch.__version__}")
    if tbs is None:
        print(f"no bandwidth known for {gpu_name!r}: pass --bandwidth-tbs for the floor")
    else:
        print(f"floor: LM weights read once per step at {label} {tbs:g} TB/s"
              + (" (a reference: this run is on the CPU)" if device == "cpu" else ""))

    print(HEADER)
    for dtype in args.dtypes:
        set_dtype(model, dtype, device)
        weights = step_weight_bytes(model, dtype)
        measure(model, device, dtype, min(args.clips), 1, None)  # warm-up (kernels, allocator)
        for clip in args.clips:
            floor = floor_seconds(clip, weights, tbs) if tbs else None
            for batch in args.batches:
                try:
                    print(measure(model, device, dtype, clip, batch, floor).line(), flush=True)
                except torch.cuda.OutOfMemoryError:
                    print(f"{dtype:>8} {clip:>5g}s {batch:>5d}  out of GPU memory")
                    torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
