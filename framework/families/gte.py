"""GTE (gte-multilingual-base, gte-*-en-v1.5) and NomicBERT (nomic-embed-text): BERT's
post-norm block with rotary positions and a gated MLP (GeGLU for GTE, SwiGLU for NomicBERT),
their linears with biases (GTE, but for the MLP's input) or none (NomicBERT)."""

from __future__ import annotations

from framework.families import Family, Names, register_family
from framework.families.bert import bert_config, bert_fields


def _rope_theta(hf: dict, default: float) -> float:
    rope = hf.get("rope_parameters") or {}
    return float(rope.get("rope_theta", hf.get("rope_theta", default)))


def gte_fields(hf: dict) -> dict:
    types = hf.get("type_vocab_size", 1)
    return {
        **bert_fields({**hf, "type_vocab_size": types, "pad_token_id": hf.get("pad_token_id", 1)}),
        "max_position_embeddings": hf.get("max_position_embeddings", 8192),
        "attention_dropout": hf.get("attention_probs_dropout_prob", 0.0),
        "gated_mlp": True,
        "mlp_in_bias": False,
        "rotary": True,
        "rope_theta": _rope_theta(hf, 160000.0),
    }


def nomic_fields(hf: dict) -> dict:
    fields = bert_fields({**hf, "hidden_act": hf.get("hidden_act", "silu")})
    return {
        **fields,
        "max_position_embeddings": hf.get("max_position_embeddings", 2048),
        "hidden_dropout": hf.get("hidden_dropout_prob", 0.0),
        "attention_dropout": hf.get("attention_probs_dropout_prob", 0.0),
        "gated_mlp": True,
        "attention_bias": False,
        "mlp_in_bias": False,
        "mlp_out_bias": False,
        "rotary": True,
        "rope_theta": _rope_theta(hf, 1000.0),
    }


# Their hub layouts (transformers converts them on load and back on save).
GTE_NAMES = Names(
    top={
        "embeddings.word_embeddings": "embeddings.word_embeddings",
        "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
        "embeddings.norm": "embeddings.LayerNorm",
    },
    layer_prefix="encoder.layer.{i}.",
    layer={
        "qkv": "attention.qkv_proj",
        "attn_out": "attention.o_proj",
        "attn_norm": "attn_ln",
        # up then gate in one Linear, act(gate) * up: our activated half first
        "mlp_in": ("mlp.up_gate_proj@1/2", "mlp.up_gate_proj@0/2"),
        "mlp_out": "mlp.down_proj",
        "mlp_norm": "mlp_ln",
    },
)
NOMIC_NAMES = Names(
    top={
        "embeddings.word_embeddings": "embeddings.word_embeddings",
        "embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
        "embeddings.norm": "emb_ln",
    },
    layer_prefix="encoder.layers.{i}.",
    layer={
        "qkv": "attn.Wqkv",
        "attn_out": "attn.out_proj",
        "attn_norm": "norm1",
        "mlp_in": ("mlp.fc12", "mlp.fc11"),  # act(fc12) * fc11: the activated half first
        "mlp_out": "mlp.fc2",
        "mlp_norm": "norm2",
    },
)


def rotary_config(model_type: str):
    """The config.json of a GTE or NomicBERT ``EncoderConfig``: BERT's keys and a rope theta."""

    def config(cfg) -> dict:
        rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
        return {"model_type": model_type, **bert_config(cfg), "rope_parameters": rope}

    return config


def _classes(name: str) -> dict[str, str]:
    tasks = ("ForSequenceClassification", "ForTokenClassification", "ForMaskedLM")
    return {"BertModel": f"{name}Model", **{f"Bert{t}": f"{name}{t}" for t in tasks}}


register_family(
    Family("gte", "gte", gte_fields, names=GTE_NAMES, aliases=("new",),
           mlm_head=("lm_head.dense", "lm_head.norm", "lm_head.decoder.bias",
                     "lm_head.decoder.weight"),
           hf_config=rotary_config("gte"), classes=_classes("Gte"),
           heads={"bert.pooler.": "gte.pooler.", "cls.predictions.transform.dense.":
                  "lm_head.dense.", "cls.predictions.transform.LayerNorm.": "lm_head.norm.",
                  "cls.predictions.decoder.": "lm_head.decoder.",
                  "cls.predictions.bias": "lm_head.decoder.bias"})
)  # fmt: skip
register_family(
    Family("nomic_bert", "nomic_bert", nomic_fields, names=NOMIC_NAMES,
           mlm_head=("cls.predictions.transform.dense", "cls.predictions.transform.layer_norm",
                     "cls.predictions.bias", "cls.predictions.decoder.weight"),
           hf_config=rotary_config("nomic_bert"), classes=_classes("NomicBert"),
           heads={"bert.pooler.": "nomic_bert.pooler.",
                  "cls.predictions.transform.LayerNorm.": "cls.predictions.transform.layer_norm."})
)  # fmt: skip
