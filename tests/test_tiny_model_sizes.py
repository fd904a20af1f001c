"""Random-weight MusicGen sizes: the table matches the published architectures, a shallow
``small`` loads through audiocraft's real ``get_pretrained`` (and the cold-start loader
``engines.fast_load``, to the same audio) and generates, and the CLI parses.

Building the full ``small`` (420M-parameter decoder) takes minutes on a shared CPU, so the full
shapes are checked by parameter count on the meta device (no memory), and the load/generate
path runs on ``small`` with 2 of its 24 layers (same width, heads, codebooks and EnCodec).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.fast_load import load_musicgen
from engines.tiny_model import (
    COMPRESSION_FILE,
    LM_FILE,
    SAMPLE_RATE,
    SIZES,
    build_config,
    count_parameters,
    is_model_dir,
    make_tiny_model,
    model_size,
)
from musicfn.errors import ConfigurationError
from musicfn_cli.main import build_parser, main


def test_the_size_table_has_the_published_shapes() -> None:
    # audiocraft config/model/lm/model_scale/{small,medium}.yaml and musicgen_lm.yaml.
    shapes = {name: (s.dim, s.num_heads, s.num_layers, s.n_q, s.card, s.hidden_scale)
              for name, s in SIZES.items()}
    assert shapes["small"] == (1024, 16, 24, 4, 2048, 4)
    assert shapes["medium"] == (1536, 24, 48, 4, 2048, 4)
    assert SIZES["small"].published == "facebook/musicgen-small"
    for name in ("small", "medium"):
        cfg = build_config(name)
        lm = cfg["transformer_lm"]
        assert (lm["memory_efficient"], lm["bias_ff"], lm["bias_attn"], lm["bias_proj"],
                lm["norm_first"], lm["positional_embedding"]) == (
            True, False, False, False, True, "sin")
        assert cfg["codebooks_pattern"] == {"modeling": "delay", "delay": {"delays": [0, 1, 2, 3]}}
        # The 32 kHz EnCodec: hop 640 -> 50 frames per second, 4 codebooks of 2048.
        seanet = cfg["seanet"]
        assert (seanet["dimension"], seanet["n_filters"], seanet["lstm"]) == (128, 64, 2)
        assert SAMPLE_RATE // int(np.prod(seanet["ratios"])) == 50
        assert (cfg["rvq"]["n_q"], cfg["rvq"]["bins"]) == (4, 2048)


def test_full_size_parameter_counts_on_the_meta_device() -> None:
    small_lm, encodec = count_parameters("small")
    medium_lm, _ = count_parameters("medium")
    # 24 layers x (self + cross attention + 4x FFN) x 1024^2 = 403M, plus embeddings, heads
    # and the LUT conditioner.
    assert 400e6 < small_lm < 450e6
    assert 1.75e9 < medium_lm < 1.95e9
    assert 50e6 < encodec < 65e6


def test_shallow_small_loads_through_get_pretrained_and_generates(tmp_path: Path) -> None:
    import torch
    from audiocraft.models.musicgen import MusicGen

    out = make_tiny_model(tmp_path / "small-2", size="small", num_layers=2, seed=7,
                          weights_dtype="float16")
    assert is_model_dir(out)
    saved = torch.load(out / LM_FILE, map_location="cpu")
    assert {v.dtype for v in saved["best_state"].values() if v.is_floating_point()} == {
        torch.float16}
    del saved
    model = MusicGen.get_pretrained(str(out), device="cpu")
    assert (model.lm.dim, model.lm.num_codebooks, model.lm.card) == (1024, 4, 2048)
    assert len(model.lm.transformer.layers) == 2
    assert next(model.lm.parameters()).dtype == torch.float32  # the loader's CPU dtype
    assert (model.sample_rate, model.frame_rate) == (SAMPLE_RATE, 50)
    model.set_generation_params(duration=0.2, top_k=250)
    torch.manual_seed(0)
    wav = model.generate(["ambient pad"])
    assert wav.shape == (1, 1, round(0.2 * SAMPLE_RATE))
    assert torch.isfinite(wav).all()

    # The cold-start loader (no random init, memory-mapped weights) gives the same model.
    fast = load_musicgen(str(out), device="cpu")
    assert next(fast.lm.parameters()).dtype == torch.float32
    fast.set_generation_params(duration=0.2, top_k=250)
    torch.manual_seed(0)
    assert torch.equal(fast.generate(["ambient pad"]), wav)


def test_bad_sizes_and_fields_raise() -> None:
    with pytest.raises(ConfigurationError, match="unknown model size 'large'"):
        model_size("large")
    with pytest.raises(ConfigurationError, match="unknown model size field"):
        model_size("small", depth=3)
    with pytest.raises(ConfigurationError, match="not a multiple"):
        model_size("small", num_heads=5)


def test_make_tiny_model_cli_parses_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    parser = build_parser()
    args = parser.parse_args(["make-tiny-model", str(tmp_path / "m"), "--size", "small",
                              "--weights-dtype", "float16"])
    assert (args.size, args.weights_dtype, args.dir) == ("small", "float16", tmp_path / "m")
    default = parser.parse_args(["make-tiny-model", str(tmp_path / "m")])
    assert (default.size, default.weights_dtype) == ("tiny", "float32")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["make-tiny-model", str(tmp_path / "m"), "--size", "huge"])
    assert exc.value.code == 2
    # The default size end to end: a checkpoint pair, and a second run refuses to overwrite.
    assert main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / COMPRESSION_FILE).is_file()
    assert "tiny random-weight MusicGen (float32)" in capsys.readouterr().out
    assert main(["make-tiny-model", str(tmp_path / "tiny")]) != 0
