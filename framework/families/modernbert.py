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


def modernbert_config(cfg) -> dict:
    """``ModernBertConfig`` dict of an ``EncoderConfig`` (the inverse of ``modernbert_fields``)."""
    if cfg.mlp_in_bias != cfg.mlp_out_bias:
        raise ValueError("ModernBERT has one mlp_bias: mlp_in_bias and mlp_out_bias must agree")
    return {
        "model_type": "modernbert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_activation": cfg.hidden_act,
        "max_position_embeddings": cfg.max_position_embeddings,
        "initializer_range": cfg.initializer_range,
        "norm_eps": cfg.layer_norm_eps,
        "norm_bias": cfg.norm_bias,
        "attention_bias": cfg.attention_bias,
        "mlp_bias": cfg.mlp_in_bias,
        "attention_dropout": cfg.attention_dropout,
        "mlp_dropout": cfg.hidden_dropout,
        "embedding_dropout": cfg.hidden_dropout,
        "pad_token_id": cfg.pad_token_id,
        # ModernBERT's own special tokens, where the vocabulary has them (a trained one may not)
        **{
            f"{name}_token_id": (i if i < cfg.vocab_size else None)
            for name, i in (("bos", 50281), ("cls", 50281), ("eos", 50282), ("sep", 50282))
        },
        "local_attention": 2 * cfg.sliding_window,
        "global_attn_every_n_layers": cfg.global_every,
        "layer_types": [
            "sliding_attention" if cfg.window(i) else "full_attention"
            for i in range(cfg.num_layers)
        ],
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "sliding_attention": {
                "rope_type": "default",
                "rope_theta": cfg.local_rope_theta or cfg.rope_theta,
            },
        },
    }


def modernbert_heads(cfg):
    """Its prediction head (dense without bias, GELU, norm) before every output layer."""
    from framework.heads import HeadStyle

    return HeadStyle(
        pooler="transform",
        token_transform=True,
        act="gelu",
        norm_eps=cfg.layer_norm_eps,
        norm_bias=cfg.norm_bias,
        dense_bias=False,
    )


_TASKS = ("ForSequenceClassification", "ForTokenClassification", "ForMaskedLM")
register_family(
    Family("modernbert", "model", modernbert_fields, names=MODERNBERT_NAMES,
           mlm_head=("head.dense", "head.norm", "decoder.bias", "decoder.weight"),
           hf_config=modernbert_config, head_style=modernbert_heads,
           classes={"BertModel": "ModernBertModel",
                    **{f"Bert{t}": f"ModernBert{t}" for t in _TASKS}},
           heads={"cls.predictions.transform.dense.": "head.dense.",
                  "cls.predictions.transform.LayerNorm.": "head.norm.",
                  "cls.predictions.decoder.": "decoder.", "cls.predictions.bias": "decoder.bias"})
)  # fmt: skip
