"""ModernBERT (and the Ettin and mmBERT encoders, which share its ``model_type``): pre-norm,
GeGLU, no biases, rotary positions with a global and a local theta, global attention every
``global_attn_every_n_layers`` layers and a sliding window on the others, a final norm."""

from __future__ import annotations

from framework.errors import UserError
from framework.families import Family, Names, register_family


def modernbert_fields(hf: dict) -> dict:
    from transformers import ModernBertConfig

    # transformers reads every version of the config (rope_theta keys, layer_types or the
    # global_attn_every_n_layers of the hub's configs) into one form.
    c = ModernBertConfig(**{k: v for k, v in hf.items() if k != "model_type"})
    full = [i for i, t in enumerate(c.layer_types) if t == "full_attention"]
    every = full[1] - full[0] if len(full) > 1 else c.num_hidden_layers
    if full[:1] != [0] or full != list(range(0, c.num_hidden_layers, every)):
        raise UserError(
            f"ModernBERT layer_types {c.layer_types} are not a global layer every n layers "
            "from layer 0, the pattern the fused encoder runs; use a checkpoint with that pattern"
        )
    return {
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "num_layers": c.num_hidden_layers,
        "num_heads": c.num_attention_heads,
        "intermediate_size": c.intermediate_size,
        "max_position_embeddings": c.max_position_embeddings,
        "type_vocab_size": 0,
        "layer_norm_eps": c.norm_eps,
        "hidden_act": c.hidden_activation,
        "hidden_dropout": c.mlp_dropout,
        "attention_dropout": c.attention_dropout,
        "pad_token_id": c.pad_token_id or 0,
        "initializer_range": c.initializer_range,
        "pre_norm": True,
        "gated_mlp": True,
        "attention_bias": c.attention_bias,
        "mlp_in_bias": c.mlp_bias,
        "mlp_out_bias": c.mlp_bias,
        "norm_bias": c.norm_bias,
        "rotary": True,
        "rope_theta": c.rope_parameters["full_attention"]["rope_theta"],
        "local_rope_theta": c.rope_parameters["sliding_attention"]["rope_theta"],
        "sliding_window": c.local_attention // 2,  # transformers: |i - j| <= local_attention/2
        "global_every": every,
        "final_norm": True,
    }


MODERNBERT_NAMES = Names(
    top={
        "embeddings.word_embeddings": "embeddings.tok_embeddings",
        "embeddings.norm": "embeddings.norm",
        "final_norm": "final_norm",
    },
    layer_prefix="layers.{i}.",
    layer={
        "qkv": "attn.Wqkv",
        "attn_out": "attn.Wo",
        "attn_norm": "attn_norm",
        "mlp_in": "mlp.Wi",  # its first half is the activated one, as ours
        "mlp_out": "mlp.Wo",
        "mlp_norm": "mlp_norm",
    },
)

register_family(Family("modernbert", "model", modernbert_fields, names=MODERNBERT_NAMES))
