"""Engine commands: ``make-tiny-model`` (a random-weight MusicGen for local tries) and
``generate`` (one generation in-process, no Ray, written to WAV)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engines.loader import ENGINE_NAMES
from musicfn.errors import ConfigurationError, InvalidRequestError, NoGpuError


def register(subparsers: Any) -> None:
    """Add the engine commands to the ``musicfn`` parser."""
    from engines.tiny_model import DEFAULT_SIZE, SIZES

    p = subparsers.add_parser(
        "make-tiny-model",
        help="build a random-weight MusicGen checkpoint directory (no download)",
        description="Write state_dict.bin + compression_state_dict.bin for a MusicGen with "
        "random weights. It loads through MusicGen.get_pretrained(DIR) like a real model and "
        "produces noise-like audio at 32 kHz: for tests, benches and local tries. --size "
        "small/medium build the published musicgen-small/-medium architectures (~1.9/7.6 GB "
        "in float32, half that with --weights-dtype float16).",
    )
    p.add_argument("dir", type=Path, help="output directory (created)")
    p.add_argument("--size", choices=list(SIZES), default=DEFAULT_SIZE,
                   help=f"architecture (default {DEFAULT_SIZE}: a few hundred kB, for tests)")
    p.add_argument("--weights-dtype", choices=["float32", "float16"], default="float32",
                   help="dtype of the saved weights (float16 halves the files and load I/O)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.add_argument("--force", action="store_true", help="overwrite an existing checkpoint")
    p.add_argument("--engine", choices=["audiocraft", "transformers"], default="audiocraft",
                   help="checkpoint format: audiocraft's, or a transformers save_pretrained "
                   "directory (tiny size only)")
    p.add_argument("--melody", action="store_true",
                   help="with --engine transformers: a MusicgenMelody model")
    p.set_defaults(func=_make_tiny_model)

    g = subparsers.add_parser(
        "generate-local",
        help="generate one clip in-process and write it as WAV",
        description="Run an engine in this process (no Ray) and write the audio as 16-bit WAV. "
        "With --stems, each stem is also written as OUT-<stem>.wav.",
    )
    g.add_argument("prompt", help="text prompt")
    g.add_argument("--out", type=Path, required=True, help="output .wav path")
    g.add_argument("--engine", choices=ENGINE_NAMES, default="audiocraft")
    g.add_argument("--model", default="facebook/musicgen-small",
                   help="HF id or a local checkpoint dir (see make-tiny-model)")
    g.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto",
                   help="where audiocraft runs (auto: cuda when available)")
    g.add_argument("--duration", type=float, default=5.0, help="seconds")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--bpm", type=float, default=None)
    g.add_argument("--key", default=None, help="e.g. 'A minor'")
    g.add_argument("--chords", default=None, help="comma-separated, e.g. Am,F,C,G")
    g.add_argument("--stems", default=None, help="comma-separated, e.g. drums,bass,piano")
    g.add_argument("--style", default=None, help="e.g. rock")
    g.set_defaults(func=_generate)


def _make_tiny_model(args: argparse.Namespace) -> int:
    from engines.tiny_model import is_model_dir, make_tiny_model

    out: Path = args.dir
    if args.engine == "transformers":
        from engines.tiny_transformers import make_tiny_transformers_model

        if (out / "config.json").exists() and not args.force:
            raise ConfigurationError(f"{out} already holds a checkpoint (use --force to "
                                     "overwrite)")
        make_tiny_transformers_model(out, seed=args.seed, melody=args.melody)
        print(f"tiny random-weight transformers MusicGen written to {out}")
        print(f"try: musicfn generate-local 'lofi beat' --engine transformers --model {out} "
              "--device cpu --out tiny.wav")
        return 0
    if is_model_dir(out) and not args.force:
        raise ConfigurationError(f"{out} already holds a checkpoint (use --force to overwrite)")
    make_tiny_model(out, size=args.size, seed=args.seed, weights_dtype=args.weights_dtype)
    print(f"{args.size} random-weight MusicGen ({args.weights_dtype}) written to {out}")
    print(f"try: musicfn generate-local 'lofi beat' --model {out} --device cpu --out tiny.wav")
    return 0


def _split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _generate(args: argparse.Namespace) -> int:
    import soundfile as sf

    from engines.loader import EngineSpec, load_engine
    from engines.requests import Limits, parse_request
    from engines.stems import jobs_for, mix

    if args.out.suffix.lower() != ".wav":
        raise InvalidRequestError(f"--out must end in .wav, got {args.out}")
    device = args.device
    if args.engine in ("audiocraft", "transformers") and device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.engine in ("audiocraft", "transformers") and device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise NoGpuError("--device cuda but no CUDA GPU is visible; use --device cpu")
    limits = Limits()
    request: dict[str, Any] = {
        "prompt": args.prompt, "duration_s": args.duration, "seed": args.seed, "bpm": args.bpm,
        "key": args.key, "chords": _split(args.chords), "stems": _split(args.stems),
        "style": args.style,
    }
    req = parse_request({k: v for k, v in request.items() if v is not None}, limits)
    engine = load_engine(EngineSpec(engine=args.engine, model=args.model,
                                    device="cpu" if args.engine == "synth" else device))
    jobs = jobs_for(req)
    for job in jobs:
        engine.validate(job)
    outputs = engine.generate(jobs)
    sample_rate = outputs[0].sample_rate
    audio = mix([o.audio for o in outputs]) if req.stems else outputs[0].audio
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(args.out, audio.T, sample_rate, subtype="PCM_16")
    if req.stems:
        for job, out in zip(jobs, outputs, strict=True):
            sf.write(args.out.with_name(f"{args.out.stem}-{job.stem}.wav"), out.audio.T,
                     sample_rate, subtype="PCM_16")
    info = engine.describe()
    print(f"{args.out}: {audio.shape[1] / sample_rate:.2f} s, {audio.shape[0]} ch, "
          f"{sample_rate} Hz, engine {info.engine}, model {info.model}, seed {req.seed}")
    return 0
