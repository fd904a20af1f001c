"""Build random-weight MusicGen checkpoints that load through ``MusicGen.get_pretrained``.

Tests, benches and local tries use them instead of downloaded weights: they go through exactly
the same loader path as production (``state_dict.bin`` + ``compression_state_dict.bin`` in a
directory). ``SIZES`` is the one table of architectures: ``tiny`` (the test model, a few
hundred kB), and ``small`` / ``medium`` with the published musicgen-small / musicgen-medium
shapes (audiocraft's ``config/model/lm/model_scale/{small,medium}.yaml`` +
``config/model/lm/musicgen_lm.yaml``, and the 32 kHz EnCodec of
``config/model/encodec/encodec_large_nq4_s640.yaml``), so memory, load time and speed match the
real models; the output is noise-like audio at 32 kHz, 50 frames per second.

The text conditioner is audiocraft's lookup-table (``lut``) conditioner with the ``noop``
tokenizer instead of T5: the whole description hashes to one embedding row. It needs no
download (T5 and spaCy models would), and it makes every description the same token length, so
batching never pads one request's conditioning because of another's. (The real models' T5-base
encoder adds ~110M parameters outside the decoder; its cost is once per request, not per step.)

Weights are saved as ``torch.save`` pickles, not safetensors: audiocraft's loader
(``audiocraft.models.loaders._get_state_dict``) only ever calls ``torch.load`` on
``state_dict.bin``. ``weights_dtype="float16"`` halves the files (the loader copies them into
its float32 (CPU) or float16 (CUDA) model either way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from musicfn.errors import ConfigurationError

LM_FILE = "state_dict.bin"
COMPRESSION_FILE = "compression_state_dict.bin"
SAMPLE_RATE = 32_000
# SEANet hop = prod(ratios) = 640 samples -> 50 frames per second at 32 kHz.
_RATIOS = [8, 5, 4, 4]

SizeName = Literal["tiny", "small", "medium"]
WeightsDtype = Literal["float32", "float16"]

# Keys every published MusicGen LM shares (audiocraft config/model/lm/musicgen_lm.yaml over
# lm/default.yaml). ``memory_efficient`` selects torch's scaled_dot_product_attention.
_PUBLISHED_LM: Mapping[str, Any] = MappingProxyType({
    "hidden_scale": 4, "memory_efficient": True, "bias_ff": False, "bias_attn": False,
    "weight_init": "gaussian", "depthwise_init": "current", "zero_bias_init": True,
    "attention_as_float32": False,
})
# The 32 kHz EnCodec (encodec/default.yaml + encodec_large_nq4_s640.yaml): ~57M parameters.
_PUBLISHED_SEANET: Mapping[str, Any] = MappingProxyType(
    {"dimension": 128, "n_filters": 64, "lstm": 2})
_TINY_SEANET: Mapping[str, Any] = MappingProxyType({"dimension": 16, "n_filters": 4, "lstm": 0})


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """One MusicGen architecture: the LM transformer's shape and the EnCodec it decodes with."""

    dim: int
    num_heads: int
    num_layers: int
    card: int  # codebook size; must be >= the largest top_k requests use (250 by default)
    n_q: int = 4  # codebooks
    hidden_scale: int = 2
    channels: int = 1
    lm_extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seanet: Mapping[str, Any] = dataclasses.field(default_factory=lambda: _TINY_SEANET)
    published: str | None = None  # the checkpoint this shape reproduces

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigurationError(
                f"dim {self.dim} is not a multiple of num_heads {self.num_heads}")
        if min(self.dim, self.num_heads, self.num_layers, self.card, self.n_q) < 1:
            raise ConfigurationError("model size values must be positive")


#: The one table of model sizes (``musicfn make-tiny-model --size``).
SIZES: Mapping[str, ModelSize] = MappingProxyType({
    "tiny": ModelSize(dim=32, num_heads=2, num_layers=2, card=256),
    "small": ModelSize(dim=1024, num_heads=16, num_layers=24, card=2048, hidden_scale=4,
                       lm_extra=_PUBLISHED_LM, seanet=_PUBLISHED_SEANET,
                       published="facebook/musicgen-small"),
    "medium": ModelSize(dim=1536, num_heads=24, num_layers=48, card=2048, hidden_scale=4,
                        lm_extra=_PUBLISHED_LM, seanet=_PUBLISHED_SEANET,
                        published="facebook/musicgen-medium"),
})
DEFAULT_SIZE: SizeName = "tiny"


def model_size(size: str = DEFAULT_SIZE, **overrides: Any) -> ModelSize:
    """``SIZES[size]`` with some fields replaced (e.g. ``num_layers=2`` for a shallow variant).

    Raises ``ConfigurationError`` for an unknown size or field, or an impossible shape.
    """
    if size not in SIZES:
        raise ConfigurationError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    fields = {f.name for f in dataclasses.fields(ModelSize)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigurationError(f"unknown model size field(s): {', '.join(unknown)}")
    return dataclasses.replace(SIZES[size], **overrides)


def build_config(size: str | ModelSize = DEFAULT_SIZE, **overrides: Any) -> dict[str, Any]:
    """The omegaconf-shaped config (a plain dict) of a MusicGen LM + EnCodec pair of ``size``.

    ``dataset.segment_duration`` is the model's max single-pass duration (30 s, like musicgen);
    audiocraft requires it to exceed the default extend stride (18 s).
    """
    s = (dataclasses.replace(size, **overrides) if isinstance(size, ModelSize)
         else model_size(size, **overrides))
    return {
        "device": "cpu",
        "dtype": "float32",
        "sample_rate": SAMPLE_RATE,
        "channels": s.channels,
        "dataset": {"segment_duration": 30.0},
        "compression_model": "encodec",
        "encodec": {
            "autoencoder": "seanet",
            "quantizer": "rvq",
            "sample_rate": SAMPLE_RATE,
            "channels": s.channels,
            "causal": False,
            "renormalize": False,
        },
        "seanet": {
            "channels": s.channels,
            "causal": False,
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
            "disable_norm_outer_blocks": 0,
            "encoder": {},
            "decoder": {"trim_right_ratio": 1.0, "final_activation": None},
            **s.seanet,
        },
        "rvq": {"n_q": s.n_q, "q_dropout": False, "bins": s.card, "kmeans_init": False},
        "lm_model": "transformer_lm",
        "transformer_lm": {
            "n_q": s.n_q,
            "card": s.card,
            "dim": s.dim,
            "num_heads": s.num_heads,
            "num_layers": s.num_layers,
            "hidden_scale": s.hidden_scale,
            "norm": "layer_norm",
            "norm_first": True,
            "causal": True,
            "custom": False,
            "memory_efficient": False,
            "bias_proj": False,
            "positional_embedding": "sin",
            "dropout": 0.0,
            **s.lm_extra,
        },
        "codebooks_pattern": {"modeling": "delay", "delay": {"delays": list(range(s.n_q))}},
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
                "lut": {"n_bins": 1024, "dim": s.dim, "tokenizer": "noop", "pad_idx": 0},
            }
        },
    }


def count_parameters(size: str | ModelSize = DEFAULT_SIZE, **overrides: Any) -> tuple[int, int]:
    """(LM, EnCodec) parameter counts of ``size``, built on the meta device (no memory)."""
    from audiocraft.models import builders
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({**build_config(size, **overrides), "device": "meta"})
    lm = builders.get_lm_model(cfg)
    compression = builders.get_compression_model(cfg)
    return (sum(p.numel() for p in lm.parameters()),
            sum(p.numel() for p in compression.parameters()))


def make_tiny_model(
    out_dir: Path, *, size: str = DEFAULT_SIZE, seed: int = 0,
    weights_dtype: WeightsDtype = "float32", **overrides: Any,
) -> Path:
    """Build a random MusicGen of ``size`` with ``seed`` and save it as a checkpoint dir.

    ``overrides`` replace ``ModelSize`` fields (``num_layers=2``...). Returns ``out_dir``, which
    ``MusicGen.get_pretrained(str(out_dir), device=...)`` loads.
    """
    import torch
    from audiocraft.models import builders
    from omegaconf import OmegaConf

    if weights_dtype not in ("float32", "float16"):
        raise ConfigurationError(f"weights_dtype must be float32 or float16, not {weights_dtype}")
    cfg = OmegaConf.create(build_config(size, **overrides))
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        compression = builders.get_compression_model(cfg)
        lm = builders.get_lm_model(cfg)
    yaml_cfg = OmegaConf.to_yaml(cfg)
    dtype = getattr(torch, weights_dtype)
    for model, name in ((lm, LM_FILE), (compression, COMPRESSION_FILE)):
        state = {k: v.to(dtype) if v.is_floating_point() else v
                 for k, v in model.state_dict().items()}
        torch.save({"best_state": state, "xp.cfg": yaml_cfg}, out_dir / name)
    return out_dir


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds an audiocraft checkpoint pair (a local model, not an HF name)."""
    return (path / LM_FILE).is_file() and (path / COMPRESSION_FILE).is_file()
