"""Build a tiny random-weight transformers MusicGen (or MusicGen-Melody) directory, offline.

The transformers engine loads it through the same ``from_pretrained(local_dir)`` path as a
downloaded checkpoint: ``config.json`` + ``model.safetensors`` + ``generation_config.json`` for
the model, and the processor (EnCodec or chroma feature extractor + a T5 fast tokenizer) beside
them. Nothing is downloaded: the sub-model configs are tiny and the tokenizer is a small unigram
vocabulary (letters, digits, a few music words) built with ``tokenizers``.

The shapes match musicgen-small where it matters: 32 kHz mono, EnCodec hop 640 (50 frames/s),
4 codebooks of 2048 entries (so ``top_k`` up to 2048 is valid), token 2048 as pad and start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SAMPLE_RATE = 32_000
CODEBOOK_SIZE = 2048
NUM_CODEBOOKS = 4
# EnCodec hop = prod(ratios) = 640 samples -> 50 frames per second at 32 kHz.
_RATIOS = [8, 5, 4, 4]
# 4 codebooks × 11 bits × 50 frames/s = 2.2 kbps (what musicgen's EnCodec uses).
_BANDWIDTH_KBPS = 2.2
_WORDS = (
    "drums", "bass", "line", "electric", "guitar", "vocals", "piano", "synth", "pad",
    "arpeggiated", "bells", "bpm", "in", "major", "minor", "chords", "rock", "pop", "jazz",
    "techno", "house", "ambient", "lofi", "dark", "energetic", "calm", "happy", "sad", "slow",
    "fast", "music", "beat", "melody", "song", "loop",
)
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789#,.-'!?:/()&+"


def _tokenizer() -> Any:
    """A T5-style fast tokenizer (metaspace unigram, ``</s>`` appended) with a tiny vocab."""
    import tokenizers  # type: ignore[import-untyped]
    import transformers

    tk: Any = tokenizers  # untyped libraries: use them as Any
    hf: Any = transformers

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [(c, -5.0) for c in _CHARS]
    vocab += [("▁" + c, -5.5) for c in _CHARS]
    vocab += [("▁" + w, -2.0) for w in _WORDS]
    tok = tk.Tokenizer(tk.models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = tk.normalizers.Sequence(
        [tk.normalizers.NFKC(), tk.normalizers.Lowercase()]
    )
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = tk.decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = tk.processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return hf.T5TokenizerFast(
        tokenizer_object=tok, eos_token="</s>", unk_token="<unk>",  # noqa: S106 - not secrets
        pad_token="<pad>", extra_ids=0, model_max_length=512,  # noqa: S106
    )


def _sub_configs(vocab_size: int, *, melody: bool, stereo: bool) -> tuple[Any, Any, Any]:
    import transformers

    hf: Any = transformers

    text = hf.T5Config(
        vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="relu", dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    audio = hf.EncodecConfig(
        target_bandwidths=[_BANDWIDTH_KBPS], sampling_rate=SAMPLE_RATE, audio_channels=1,
        normalize=False, chunk_length_s=None, overlap=None, hidden_size=16, num_filters=4,
        num_residual_layers=1, upsampling_ratios=_RATIOS, use_causal_conv=False,
        num_lstm_layers=1, codebook_size=CODEBOOK_SIZE, codebook_dim=16, pad_mode="reflect",
    )
    decoder_cls = hf.MusicgenMelodyDecoderConfig if melody else hf.MusicgenDecoderConfig
    decoder = decoder_cls(
        vocab_size=CODEBOOK_SIZE, max_position_embeddings=2048, num_hidden_layers=2, ffn_dim=64,
        num_attention_heads=2, hidden_size=32,
        # Stereo models interleave a left and a right codebook per level (mono EnCodec each).
        num_codebooks=NUM_CODEBOOKS * (2 if stereo else 1), audio_channels=2 if stereo else 1,
        dropout=0.0, pad_token_id=CODEBOOK_SIZE, bos_token_id=CODEBOOK_SIZE,
    )
    return text, audio, decoder


def make_tiny_transformers_model(
    out_dir: Path, *, seed: int = 0, melody: bool = False, stereo: bool = False
) -> Path:
    """Build a tiny random MusicGen (``melody``: MusicGen-Melody) and ``save_pretrained`` it.

    ``stereo`` builds a musicgen-stereo-style decoder (left/right codebooks interleaved).

    Returns ``out_dir``, which ``MusicgenForConditionalGeneration.from_pretrained`` (or the
    melody class) and ``AutoProcessor.from_pretrained`` load without any network access.
    """
    import torch
    import transformers

    hf: Any = transformers

    tokenizer = _tokenizer()
    text, audio, decoder = _sub_configs(len(tokenizer), melody=melody, stereo=stereo)
    model: Any
    processor: Any
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if melody:
            config = hf.MusicgenMelodyConfig.from_sub_models_config(text, audio, decoder)
            model = hf.MusicgenMelodyForConditionalGeneration(config)
            # At the default init (std 0.02) the chroma prefix is ~50× smaller than the text
            # prefix and never changes a token: make the melody audible in the tiny model.
            with torch.no_grad():
                model.audio_enc_to_dec_proj.weight.normal_(std=1.0)
            processor = hf.MusicgenMelodyProcessor(
                feature_extractor=hf.MusicgenMelodyFeatureExtractor(sampling_rate=SAMPLE_RATE),
                tokenizer=tokenizer,
            )
        else:
            config = hf.MusicgenConfig.from_sub_models_config(text, audio, decoder)
            model = hf.MusicgenForConditionalGeneration(config)
            processor = hf.MusicgenProcessor(
                feature_extractor=hf.EncodecFeatureExtractor(
                    feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0
                ),
                tokenizer=tokenizer,
            )
        # EnCodec codebooks are zero buffers until trained: give them random entries, or every
        # token sequence would decode to the same audio.
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
            layer.codebook.embed_avg.copy_(layer.codebook.embed)
    # What musicgen-small's generation_config.json says (minus max_length: callers set it).
    model.generation_config = hf.GenerationConfig(
        bos_token_id=CODEBOOK_SIZE, pad_token_id=CODEBOOK_SIZE,
        decoder_start_token_id=CODEBOOK_SIZE, do_sample=True, guidance_scale=3.0,
        max_length=1500,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
