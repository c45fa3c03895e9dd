"""BERT (and MiniLM, which is BERT-shaped): the layout every other family maps onto."""

from __future__ import annotations

from framework.families import Family, Names, register_family


def bert_fields(hf: dict) -> dict:
    """``EncoderConfig`` fields from a BERT-named ``config.json`` dict."""
    return {
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["hidden_size"],
        "num_layers": hf["num_hidden_layers"],
        "num_heads": hf["num_attention_heads"],
        "intermediate_size": hf["intermediate_size"],
        "max_position_embeddings": hf.get("max_position_embeddings", 512),
        "type_vocab_size": hf.get("type_vocab_size", 2),
        "layer_norm_eps": hf.get("layer_norm_eps", 1e-12),
        "hidden_act": hf.get("hidden_act", "gelu"),
        "hidden_dropout": hf.get("hidden_dropout_prob", 0.1),
        "pad_token_id": hf.get("pad_token_id") or 0,
        "initializer_range": hf.get("initializer_range", 0.02),
    }


def bert_config(cfg) -> dict:
    """BERT-named ``config.json`` keys of an ``EncoderConfig`` (the inverse of ``bert_fields``);
    a family adds its ``model_type`` and what else its config holds."""
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "pad_token_id": cfg.pad_token_id,
        "initializer_range": cfg.initializer_range,
    }


BERT_NAMES = Names(
    top={
        "embeddings.word_embeddings": "embeddings.word_embeddings",
        "embeddings.position_embeddings": "embeddings.position_embeddings",
        "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
        "embeddings.norm": "embeddings.LayerNorm",
        "embeddings.project": "embeddings_project",  # ELECTRA-small's factorised embeddings
    },
    layer_prefix="encoder.layer.{i}.",
    layer={
        "qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "mlp_in": "intermediate.dense",
        "mlp_out": "output.dense",
        "mlp_norm": "output.LayerNorm",
    },
)

BERT_MLM_HEAD = ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                 "cls.predictions.bias", "cls.predictions.decoder.weight")  # fmt: skip

register_family(Family("bert", "bert", bert_fields, mlm_head=BERT_MLM_HEAD))
