"""DistilBERT: BERT's fields and weights under other names; no segments (one all-zero type
vector) and a LayerNorm eps fixed in DistilBERT's code."""

from __future__ import annotations

from framework.families import Family, State, register_family
from framework.families.bert import bert_fields

_CONFIG = {  # DistilBERT config.json -> BERT's names
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
}
_LAYER = {  # DistilBERT -> BERT, per layer
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def distilbert_fields(hf: dict) -> dict:
    hf = {_CONFIG.get(k, k): v for k, v in hf.items()}
    return bert_fields({**hf, "type_vocab_size": 1, "layer_norm_eps": 1e-12})


def distilbert_as_bert(hf: State, num_layers: int) -> State:
    """DistilBERT keys -> BertModel keys, plus a zero type vector; keys that are not the
    encoder's (heads) pass through unchanged."""
    out = dict(hf)
    for i in range(num_layers):
        for theirs, bert in _LAYER.items():
            for p in ("weight", "bias"):
                out[f"encoder.layer.{i}.{bert}.{p}"] = out.pop(
                    f"transformer.layer.{i}.{theirs}.{p}"
                )
    words = out["embeddings.word_embeddings.weight"]
    out["embeddings.token_type_embeddings.weight"] = words.new_zeros(1, words.size(1))
    return out


register_family(
    Family(
        "distilbert", "distilbert", distilbert_fields, distilbert_as_bert,
        mlm_head=("vocab_transform", "vocab_layer_norm", "vocab_projector.bias",
                  "vocab_projector.weight"),
    )
)  # fmt: skip
