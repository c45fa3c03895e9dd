"""Hugging Face encoder checkpoints <-> ``framework.encoder``: configs and state dicts.

What differs by family (config names, key prefix, tensor names, RoBERTa's ``position_offset``)
is declared by its module in ``framework.families``; this module applies the declarations both
ways. Our fused Linears (q, k, v; a gated MLP's two halves) are concatenated on load and split
on export.
"""

from __future__ import annotations

import torch

from framework.encoder import Encoder, EncoderConfig
from framework.families import Names, get_family
from framework.families.bert import BERT_NAMES, bert_config

# Buffers some checkpoints hold beside their weights (never ours, never a head's).
_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids", "rotary_emb.inv_freq")


def config_from_hf(hf: dict) -> EncoderConfig:
    """An ``EncoderConfig`` from a Hugging Face ``config.json`` dict of a registered family
    (``framework.families``; no ``model_type``: BERT)."""
    model_type = hf.get("model_type", "bert")
    return EncoderConfig(**get_family(model_type).encoder_config(hf), family=model_type)


def config_to_hf(cfg: EncoderConfig) -> dict:
    """A Hugging Face ``BertConfig`` dict for ``cfg``, the export of the BERT-shaped families (a
    RoBERTa's position table loses its unused first rows; a DistilBERT gets its all-zero type
    vector)."""
    if cfg.embedding_size not in (None, cfg.hidden_size):
        raise ValueError(
            f"an encoder with factorised embeddings (embedding_size {cfg.embedding_size} != "
            f"hidden_size {cfg.hidden_size}, ELECTRA-small) has no BERT layout to export to"
        )
    biases = (cfg.attention_bias, cfg.mlp_in_bias, cfg.mlp_out_bias, cfg.norm_bias)
    switches = {
        "pre_norm": cfg.pre_norm,
        "gated_mlp": cfg.gated_mlp,
        "rotary": cfg.rotary,
        "a sliding window": cfg.sliding_window and cfg.global_every > 1,
        "final_norm": cfg.final_norm,
        "no biases": not all(biases),
        "type_vocab_size=0": cfg.type_vocab_size == 0,
    }
    if any(switches.values()):
        on = ", ".join(name for name, value in switches.items() if value)
        raise ValueError(
            f"an encoder with {on} has no BERT layout to export to (only a family with a "
            "layout of its own exports these: framework.families)"
        )
    return {
        "model_type": "bert",
        **bert_config(cfg),
        "max_position_embeddings": cfg.max_position_embeddings - cfg.position_offset,
        "position_embedding_type": "absolute",
    }


def encoder_keys(cfg: EncoderConfig) -> list[str]:
    """The state-dict keys of ``Encoder(cfg)`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        return list(Encoder(cfg).state_dict())


def hf_to_tasklight(
    hf_state: dict[str, torch.Tensor], cfg: EncoderConfig, family: str = "bert"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a checkpoint's state dict into (encoder state, everything else, e.g. ``pooler.*``).

    Accepts bare base-model keys (``BertModel``...) and keys under the family's prefix
    (``bert.``, ``roberta.``, ``model.``: the ``...For*`` classes); a family with names of its own
    maps them onto BERT's first (``Family.to_bert_keys``) or declares them (``Family.names``).
    A missing tensor is a KeyError naming it.
    """
    fam = get_family(family)
    hf = dict(hf_state)
    for prefix in (fam.prefix, *fam.aliases):
        hf = {k.removeprefix(f"{prefix}."): v for k, v in hf.items()}
    if fam.to_bert_keys is not None:
        hf = fam.to_bert_keys(hf, cfg.num_layers)
    names = fam.names or BERT_NAMES
    ours: dict[str, torch.Tensor] = {}
    taken: dict[str, torch.Tensor] = {}  # tensors that several of our keys read parts of

    used: set[str] = set()

    def read(source: str, param: str) -> torch.Tensor:
        name, _, part = source.partition("@")
        key = f"{name}.{param}"
        used.add(key)
        if not part:
            return hf.pop(key)
        if key not in taken:
            taken[key] = hf.pop(key)
        k, n = map(int, part.split("/"))
        return taken[key].chunk(n, dim=0)[k]

    for key in encoder_keys(cfg):
        module, param = key.rsplit(".", 1)
        source = names.theirs(module)
        sources = (source,) if isinstance(source, str) else source
        parts = [read(s, param) for s in sources]
        ours[key] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    for key in [k for k in hf if k.endswith(_BUFFERS)]:
        del hf[key]
    # A tensor of the encoder's own kind left over (layer 6 of a config that says 4 layers)
    # would be silently dropped: the config does not describe the weights.
    stems = {_stem(k) for k in used}
    unused = sorted(k for k in hf if _stem(k) in stems)
    if unused:
        raise ValueError(
            f"the weights hold {unused[0]} (and {len(unused) - 1} more of the encoder's "
            f"tensors) that the config has no place for (num_hidden_layers={cfg.num_layers})"
        )
    return ours, hf


def _stem(key: str) -> str:
    """``key`` with its numbers replaced: ``encoder.layer.*.attention.self.query.weight``."""
    return ".".join("*" if part.isdigit() else part for part in key.split("."))


def tasklight_to_hf(
    state: dict[str, torch.Tensor],
    cfg: EncoderConfig,
    names: Names = BERT_NAMES,
    position_offset: int = 0,
) -> dict[str, torch.Tensor]:
    """The inverse of ``hf_to_tasklight`` for the encoder: keys in ``names`` (no prefix).

    ``position_offset`` (RoBERTa's 2, exported as BERT) drops the position table's unused first
    rows: BERT counts positions from 0."""
    hf: dict[str, torch.Tensor] = {}
    split: dict[str, dict[int, torch.Tensor]] = {}  # their tensors written in parts
    for key, tensor in state.items():
        module, param = key.rsplit(".", 1)
        source = names.theirs(module)
        if isinstance(source, str):
            hf[f"{source}.{param}"] = tensor
            continue
        for s, part in zip(source, tensor.chunk(len(source), dim=0), strict=True):
            name, _, at = s.partition("@")
            if at:
                split.setdefault(f"{name}.{param}", {})[int(at.split("/")[0])] = part
            else:
                hf[f"{s}.{param}"] = part.contiguous()
    for key, parts in split.items():
        hf[key] = torch.cat([parts[k] for k in sorted(parts)], dim=0)
    positions = "embeddings.position_embeddings.weight"
    if position_offset and positions in hf:
        hf[positions] = hf[positions][position_offset:]
    return hf
