"""Hugging Face BERT-family checkpoints <-> ``framework.encoder``: configs and state dicts.

The encoder's weights follow ``BertModel``'s layout except that each layer's query, key and value
projections are one fused ``qkv`` Linear. BERT, MiniLM, ELECTRA (discriminator) and RoBERTa
use BERT's names (RoBERTa's positions start after the padding index: ``position_offset``);
DistilBERT's names and config keys are mapped to BERT's first. Exports are always BERT-layout.
"""

from __future__ import annotations

import torch

from framework.encoder import EncoderConfig

_HF_LAYER = "encoder.layer.{i}."
_RENAMES = {  # ours -> Hugging Face, per layer (q/k/v handled separately: they are fused here)
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense",
    "mlp_norm": "output.LayerNorm",
}


FAMILIES = ("bert", "roberta", "distilbert", "electra")
_DISTILBERT_CONFIG = {  # DistilBERT config.json -> BERT's names
    "dim": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "hidden_dim": "intermediate_size",
    "activation": "hidden_act",
    "dropout": "hidden_dropout_prob",
}


def config_from_hf(hf: dict) -> EncoderConfig:
    """An ``EncoderConfig`` from a Hugging Face ``config.json`` dict of a BERT, RoBERTa,
    DistilBERT or ELECTRA (discriminator) model."""
    family = hf.get("model_type", "bert")
    if family == "distilbert":
        # BERT's fields under other names; no segments (one all-zero type vector) and a
        # LayerNorm eps fixed in DistilBERT's code.
        hf = {_DISTILBERT_CONFIG.get(k, k): v for k, v in hf.items()}
        hf.update(type_vocab_size=1, layer_norm_eps=1e-12)
    pad_token_id = hf.get("pad_token_id") or 0
    embedding_size = hf.get("embedding_size") if family == "electra" else None
    return EncoderConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        pad_token_id=pad_token_id,
        initializer_range=hf.get("initializer_range", 0.02),
        position_offset=pad_token_id + 1 if family == "roberta" else 0,
        embedding_size=None if embedding_size == hf["hidden_size"] else embedding_size,
    )


def config_to_hf(cfg: EncoderConfig) -> dict:
    """A Hugging Face ``BertConfig`` dict for ``cfg``: every export is BERT-layout (a RoBERTa's
    position table loses its unused first rows; a DistilBERT gets its all-zero type vector)."""
    if cfg.embedding_size not in (None, cfg.hidden_size):
        raise ValueError(
            f"an encoder with factorised embeddings (embedding_size {cfg.embedding_size} != "
            f"hidden_size {cfg.hidden_size}, ELECTRA-small) has no BERT layout to export to"
        )
    return {
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings - cfg.position_offset,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "pad_token_id": cfg.pad_token_id,
        "initializer_range": cfg.initializer_range,
        "position_embedding_type": "absolute",
    }


_DISTILBERT_LAYER = {  # DistilBERT -> BERT, per layer
    "attention.q_lin": "attention.self.query",
    "attention.k_lin": "attention.self.key",
    "attention.v_lin": "attention.self.value",
    "attention.out_lin": "attention.output.dense",
    "sa_layer_norm": "attention.output.LayerNorm",
    "ffn.lin1": "intermediate.dense",
    "ffn.lin2": "output.dense",
    "output_layer_norm": "output.LayerNorm",
}


def _distilbert_as_bert(hf: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """DistilBERT keys (``distilbert.`` prefix stripped) -> BertModel keys, plus a zero type
    vector; keys that are not the encoder's (heads) pass through unchanged."""
    out = dict(hf)
    for i in range(num_layers):
        for theirs, bert in _DISTILBERT_LAYER.items():
            for p in ("weight", "bias"):
                out[f"{_HF_LAYER.format(i=i)}{bert}.{p}"] = out.pop(
                    f"transformer.layer.{i}.{theirs}.{p}"
                )
    words = out["embeddings.word_embeddings.weight"]
    out["embeddings.token_type_embeddings.weight"] = words.new_zeros(1, words.size(1))
    return out


def hf_to_tasklight(
    hf_state: dict[str, torch.Tensor], num_layers: int, family: str = "bert"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a checkpoint's state dict into (encoder state, everything else, e.g. ``pooler.*``).

    Accepts bare base-model keys (``BertModel``...) and keys under the family's prefix
    (``bert.``, ``roberta.``, ``distilbert.``, ``electra.``: the ``...For*`` classes).
    """
    prefix = f"{family}."
    hf = {k.removeprefix(prefix): v for k, v in hf_state.items()}
    if family == "distilbert":
        hf = _distilbert_as_bert(hf, num_layers)
    ours: dict[str, torch.Tensor] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        ours[f"embeddings.{name}.weight"] = hf.pop(f"embeddings.{name}.weight")
    for p in ("weight", "bias"):
        ours[f"embeddings.norm.{p}"] = hf.pop(f"embeddings.LayerNorm.{p}")
        if f"embeddings_project.{p}" in hf:  # ELECTRA's factorised embeddings
            ours[f"embeddings.project.{p}"] = hf.pop(f"embeddings_project.{p}")
    hf.pop("embeddings.position_ids", None)  # a buffer in old checkpoints, not a weight
    hf.pop("embeddings.token_type_ids", None)  # a buffer too (RoBERTa, ELECTRA)
    for i in range(num_layers):
        pre = _HF_LAYER.format(i=i)
        for p in ("weight", "bias"):
            qkv = [hf.pop(f"{pre}attention.self.{n}.{p}") for n in ("query", "key", "value")]
            ours[f"layers.{i}.qkv.{p}"] = torch.cat(qkv, dim=0)
            for mine, theirs in _RENAMES.items():
                ours[f"layers.{i}.{mine}.{p}"] = hf.pop(f"{pre}{theirs}.{p}")
    return ours, hf


def tasklight_to_hf(
    state: dict[str, torch.Tensor], num_layers: int, position_offset: int = 0
) -> dict[str, torch.Tensor]:
    """The inverse of ``hf_to_tasklight`` for the encoder: ``BertModel`` keys (no prefix).

    ``position_offset`` (RoBERTa's 2) drops the position table's unused first rows: BERT counts
    positions from 0."""
    s = dict(state)
    hf: dict[str, torch.Tensor] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        hf[f"embeddings.{name}.weight"] = s.pop(f"embeddings.{name}.weight")
    positions = hf["embeddings.position_embeddings.weight"]
    hf["embeddings.position_embeddings.weight"] = positions[position_offset:]
    for p in ("weight", "bias"):
        hf[f"embeddings.LayerNorm.{p}"] = s.pop(f"embeddings.norm.{p}")
    for i in range(num_layers):
        pre = _HF_LAYER.format(i=i)
        for p in ("weight", "bias"):
            q, k, v = s.pop(f"layers.{i}.qkv.{p}").chunk(3, dim=0)
            for n, t in zip(("query", "key", "value"), (q, k, v), strict=True):
                hf[f"{pre}attention.self.{n}.{p}"] = t.contiguous()
            for mine, theirs in _RENAMES.items():
                hf[f"{pre}{theirs}.{p}"] = s.pop(f"layers.{i}.{mine}.{p}")
    if s:
        raise ValueError(f"unexpected encoder keys: {sorted(s)[:5]}")
    return hf
