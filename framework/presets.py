"""Random-weight architectures by name (``model.preset``): ``EncoderConfig``s of
``framework.encoder`` at the sizes tasklight pretrains and tests with."""

from __future__ import annotations

import dataclasses

from framework.encoder import EncoderConfig

# ModernBERT's block: pre-norm, GeGLU, no biases, rotary, global every 3rd layer, else a
# 128-token window (64 each side), a final norm.
MODERN = dict(pre_norm=True, gated_mlp=True, attention_bias=False, mlp_in_bias=False,
              mlp_out_bias=False, norm_bias=False, rotary=True, rope_theta=160000.0,
              local_rope_theta=10000.0, sliding_window=64, global_every=3, final_norm=True,
              type_vocab_size=0, layer_norm_eps=1e-5, hidden_dropout=0.0,
              max_position_embeddings=8192, family="modernbert")  # fmt: skip

# GTE's block (post-norm, rotary, GeGLU) at the test size.
_GTE_TINY = EncoderConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=96,
                          gated_mlp=True, mlp_in_bias=False, rotary=True, rope_theta=160000.0,
                          family="gte")  # fmt: skip

PRESETS: dict[str, EncoderConfig] = {
    # 2 layers, hidden 64: the test model. Vocabulary of the uncased BERT tokenizer.
    "tiny": EncoderConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256),
    # BERT-mini shape (4 layers, hidden 256): pretraining on a CPU-sized budget.
    "mini": EncoderConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
    # MiniLM-L6-H384 shape.
    "small": EncoderConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    # bert-base shape.
    "base": EncoderConfig(),
    # A ModernBERT block at BERT-mini size (6 layers: two global), for CPU pretraining.
    "modern_mini": EncoderConfig(
        hidden_size=256, num_layers=6, num_heads=4, intermediate_size=384, **MODERN
    ),
    "gte_tiny": _GTE_TINY,
    # NomicBERT's block (post-norm, rotary, SwiGLU, no linear biases) at the test size.
    "nomic_tiny": dataclasses.replace(
        _GTE_TINY,
        hidden_act="silu",
        attention_bias=False,
        mlp_out_bias=False,
        rope_theta=1000.0,
        family="nomic_bert",
    ),
    # ModernBERT's test shape: 3 layers, hidden 64, a window of 4 each side.
    "modern_tiny": EncoderConfig(
        hidden_size=64,
        num_layers=3,
        num_heads=4,
        intermediate_size=96,
        **{**MODERN, "sliding_window": 4},
    ),
}


def preset(name: str, **overrides: object) -> EncoderConfig:
    """The named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
