"""Build a tiny random-weight MusicGen checkpoint that loads through ``MusicGen.get_pretrained``.

Tests and local tries use it instead of downloaded weights: it goes through exactly the same
loader path as production (``state_dict.bin`` + ``compression_state_dict.bin`` in a directory).
The output is noise-like audio at 32 kHz, 50 frames per second (the musicgen-small frame rate).

The text conditioner is audiocraft's lookup-table (``lut``) conditioner with the ``noop``
tokenizer: the whole description hashes to one embedding row. It needs no download (T5 and
spaCy models would), and it makes every description the same token length, so batching never
pads one request's conditioning because of another's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
SAMPLE_RATE = 32_000
# SEANet hop = prod(ratios) = 640 samples -> 50 frames per second at 32 kHz.
_RATIOS = [8, 5, 4, 4]


def tiny_config(
    *, dim: int = 32, num_layers: int = 2, n_q: int = 4, card: int = 256, channels: int = 1
) -> dict[str, Any]:
    """The omegaconf-shaped config (as a plain dict) for a tiny MusicGen LM + EnCodec pair.

    ``card`` must be at least the largest ``top_k`` requests use (250 by default).
    ``dataset.segment_duration`` is the model's max single-pass duration (30 s, like musicgen);
    audiocraft requires it to exceed the default extend stride (18 s).
    """
    return {
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": SAMPLE_RATE,
        "channels": channels,
        "dataset": {"segment_duration": 30.0},
        "compression_model": "encodec",
        "encodec": {
            "autoencoder": "seanet",
            "quantizer": "rvq",
            "sample_rate": SAMPLE_RATE,
            "channels": channels,
            "causal": False,
            "renormalize": False,
        },
        "seanet": {
            "dimension": 16,
            "channels": channels,
            "causal": False,
            "n_filters": 4,
            "n_residual_layers": 1,
            "ratios": _RATIOS,
            "activation": "ELU",
            "activation_params": {"alpha": 1.0},
            "norm": "weight_norm",
            "norm_params": {},
            "kernel_size": 7,
            "last_kernel_size": 7,
            "residual_kernel_size": 3,
            "dilation_base": 2,
            "pad_mode": "constant",
            "true_skip": True,
            "compress": 2,
            "lstm": 0,
            "disable_norm_outer_blocks": 0,
            "encoder": {},
            "decoder": {"trim_right_ratio": 1.0, "final_activation": None},
        },
        "rvq": {"n_q": n_q, "q_dropout": False, "bins": card, "kmeans_init": False},
        "lm_model": "transformer_lm",
        "transformer_lm": {
            "n_q": n_q,
            "card": card,
            "dim": dim,
            "num_heads": 2,
            "num_layers": num_layers,
            "hidden_scale": 2,
            "norm": "layer_norm",
            "norm_first": True,
            "causal": True,
            "custom": False,
            "memory_efficient": False,
            "bias_proj": False,
            "positional_embedding": "sin",
            "dropout": 0.0,
        },
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": list(range(n_q))}},
        "attribute_dropout": {},
        "classifier_free_guidance": {"training_dropout": 0.0, "inference_coef": 3.0},
        "fuser": {
            "cross_attention_pos_emb": False,
            "cross_attention_pos_emb_scale": 1,
            "sum": [],
            "prepend": [],
            "cross": ["description"],
            "input_interpolate": [],
        },
        "conditioners": {
            "description": {
                "model": "lut",
                "lut": {"n_bins": 1024, "dim": dim, "tokenizer": "noop", "pad_idx": 0},
            }
        },
    }


def make_tiny_model(out_dir: Path, *, seed: int = 0, **config_overrides: int) -> Path:
    """Build a tiny random MusicGen with ``seed`` and save it as an audiocraft checkpoint dir.

    Returns ``out_dir``, which ``MusicGen.get_pretrained(str(out_dir), device=...)`` loads.
    """
    import torch
    from audiocraft.models import builders
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(tiny_config(**config_overrides))
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        compression = builders.get_compression_model(cfg)
        lm = builders.get_lm_model(cfg)
    yaml_cfg = OmegaConf.to_yaml(cfg)
    torch.save({"best_state": lm.state_dict(), "xp.cfg": yaml_cfg}, out_dir / LM_FILE)
    torch.save(
        {"best_state": compression.state_dict(), "xp.cfg": yaml_cfg}, out_dir / COMPRESSION_FILE
    )
    return out_dir


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds an audiocraft checkpoint pair (a local model, not an HF name)."""
    return (path / LM_FILE).is_file() and (path / COMPRESSION_FILE).is_file()
