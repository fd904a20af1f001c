"""Load a MusicGen checkpoint without audiocraft's throw-away random initialisation.

``MusicGen.get_pretrained`` builds the LM with real random weights (audiocraft's ``gaussian``
init: ~25 s for musicgen-small on one CPU thread) and then overwrites them all with
``load_state_dict``. ``load_musicgen`` builds the LM's transformer on the ``meta`` device (no
memory, no init; only the small text conditioners are built for real) and adopts the
checkpoint's tensors with ``load_state_dict(assign=True)``; a local
``state_dict.bin`` is memory-mapped, so on the CPU with float32 weights the parameters are the
page cache's pages, shared by every replica on the node. Same checkpoints, same config
handling, same ``MusicGen`` object as ``get_pretrained`` (EnCodec still goes through
audiocraft's loader: it is small and its LSTM and weight-norm modules hold derived state).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.tiny_model import LM_FILE, is_model_dir

# Keys audiocraft's load_lm_model drops from older checkpoints' configs.
_STALE_KEYS = ("conditioners.self_wav.chroma_stem.cache_path",
               "conditioners.args.merge_text_conditions_p", "conditioners.args.drop_desc_p")


def load_musicgen(name_or_dir: str, device: str) -> Any:
    """``MusicGen.get_pretrained(name_or_dir, device)``, minus the random init of the LM."""
    import torch
    from audiocraft.models import builders, loaders
    from audiocraft.models.musicgen import MusicGen
    from omegaconf import OmegaConf

    local = Path(name_or_dir)
    if is_model_dir(local):
        pkg = torch.load(local / LM_FILE, map_location="cpu", mmap=True)
    else:
        pkg = loaders.load_lm_model_ckpt(name_or_dir)
    cfg = OmegaConf.create(pkg["xp.cfg"])
    cfg.dtype = "float32" if device == "cpu" else "float16"
    for key in _STALE_KEYS:
        loaders._delete_param(cfg, key)
    cfg.device = "meta"
    lm = builders.get_lm_model(cfg)
    cfg.device = device
    # The conditioners are built for real: T5's weights live outside the state dict (audiocraft
    # keeps the encoder out of it), so a meta-device T5 could never be filled in.
    lm.condition_provider = builders.get_conditioner_provider(cfg.transformer_lm.dim, cfg).to(
        device)
    # Each tensor in the dtype audiocraft's loader would give it (the LM's layers in cfg.dtype,
    # the conditioners in float32), on the target device.
    wanted = lm.state_dict()
    state = {}
    for key, value in pkg["best_state"].items():
        target = wanted.get(key)
        dtype = target.dtype if target is not None else value.dtype
        state[key] = value.to(device=device, dtype=dtype)
    lm.load_state_dict(state, assign=True)
    lm.cfg = cfg
    lm.eval()
    compression = loaders.load_compression_model(name_or_dir, device=device)
    if "self_wav" in lm.condition_provider.conditioners:
        melody: Any = lm.condition_provider.conditioners["self_wav"]
        melody.match_len_on_eval = True
        melody._use_masking = False
    return MusicGen(name_or_dir, compression, lm)
