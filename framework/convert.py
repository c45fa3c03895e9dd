"""Hugging Face BERT-family checkpoints <-> ``framework.encoder``: configs and state dicts.

The encoder's weights follow ``BertModel``'s layout except that each layer's query, key and value
projections are one fused ``qkv`` Linear. What differs by family (config names, key prefix, a
family's own key names, RoBERTa's ``position_offset``) is declared by its module in
``framework.families``. Exports are always BERT-layout.
"""

from __future__ import annotations

import torch

from framework.encoder import EncoderConfig
from framework.families import get_family

_HF_LAYER = "encoder.layer.{i}."
_RENAMES = {  # ours -> Hugging Face, per layer (q/k/v handled separately: they are fused here)
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "mlp_in": "intermediate.dense",
    "mlp_out": "output.dense",
    "mlp_norm": "output.LayerNorm",
}


def config_from_hf(hf: dict) -> EncoderConfig:
    """An ``EncoderConfig`` from a Hugging Face ``config.json`` dict of a registered family
    (``framework.families``; no ``model_type``: BERT)."""
    return EncoderConfig(**get_family(hf.get("model_type", "bert")).encoder_config(hf))


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


def hf_to_tasklight(
    hf_state: dict[str, torch.Tensor], num_layers: int, family: str = "bert"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a checkpoint's state dict into (encoder state, everything else, e.g. ``pooler.*``).

    Accepts bare base-model keys (``BertModel``...) and keys under the family's prefix
    (``bert.``, ``roberta.``, ``distilbert.``, ``electra.``: the ``...For*`` classes); a family
    with names of its own maps them onto BERT's first (``Family.to_bert_keys``).
    """
    fam = get_family(family)
    prefix = f"{fam.prefix}."
    hf = {k.removeprefix(prefix): v for k, v in hf_state.items()}
    if fam.to_bert_keys is not None:
        hf = fam.to_bert_keys(hf, num_layers)
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
