"""A BERT-compatible transformer encoder in plain torch.

This file is the spec of the model: read it top to bottom. It depends on torch only (no Lightning,
Hydra or DictConfig). Weights are laid out like Hugging Face's ``BertModel`` except that the query,
key and value projections of each layer are fused into one ``qkv`` Linear (one GEMM instead of
three); ``hf_to_tasklight`` / ``tasklight_to_hf`` convert state dicts both ways. RoBERTa,
DistilBERT and ELECTRA are the same post-LayerNorm block with other names, a position offset
(RoBERTa), no segment embeddings (DistilBERT) or a projection after the embeddings (ELECTRA-small):
two config fields cover them.

Attention goes through one function, ``attention``, with two back-ends chosen at run time:
``sdpa`` (``torch.nn.functional.scaled_dot_product_attention``, fused) and ``math`` (the plain
reference). An unpadded (varlen) back-end plugs in at the same place.

Shapes: B batch, T padded length, H hidden size, N heads, D head size (H = N * D).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

AttnImpl = Literal["sdpa", "math"]

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    hidden_dropout: float = 0.1
    # Attention-probability dropout defaults to 0: fused kernels (CPU flash, varlen) need it off,
    # and fine-tuning results do not depend on it.
    attention_dropout: float = 0.0
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # RoBERTa numbers positions from pad_token_id + 1 (= 2): the position table's first rows
    # are never used.
    position_offset: int = 0
    # ELECTRA-small factorises the embeddings: vectors of this size, then a Linear to
    # hidden_size. None: hidden_size (BERT).
    embedding_size: int | None = None

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")


PRESETS: dict[str, EncoderConfig] = {
    # 2 layers, hidden 64: the test model. Vocabulary of the uncased BERT tokenizer.
    "tiny": EncoderConfig(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256),
    # MiniLM-L6-H384 shape.
    "small": EncoderConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
    # bert-base shape.
    "base": EncoderConfig(),
}


def preset(name: str, **overrides: object) -> EncoderConfig:
    """The named preset, with fields replaced by ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown encoder preset {name!r}; choose one of {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def attention(
    q: torch.Tensor,  # (B, N, T, D)
    k: torch.Tensor,  # (B, N, T, D)
    v: torch.Tensor,  # (B, N, T, D)
    keep: torch.Tensor,  # (B, 1, 1, T) bool, True where the key is a real token
    dropout: float,
    impl: AttnImpl,
) -> torch.Tensor:  # (B, N, T, D)
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
    # Reference path: softmax(q k^T / sqrt(D)) v, written out.
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))  # (B, N, T, T)
    scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
    probs = F.dropout(scores.softmax(dim=-1), p=dropout, training=dropout > 0)
    return probs @ v


# (rows, columns) of the selected tokens in row-major order, each one's slot among its row's
# selected tokens, and the most selected tokens in a row.
Selection = tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        e = cfg.embedding_size or cfg.hidden_size
        self.position_offset = cfg.position_offset
        self.word_embeddings = nn.Embedding(cfg.vocab_size, e, cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, e)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, e)
        self.norm = nn.LayerNorm(e, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.project = nn.Linear(e, cfg.hidden_size) if e != cfg.hidden_size else None

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,  # (B, T); None: 0..T-1
    ) -> torch.Tensor:
        positions = position_ids
        if positions is None:
            positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        positions = positions + self.position_offset
        x = self.word_embeddings(input_ids)  # (B, T, E)
        x = x + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        x = self.dropout(self.norm(x))
        return self.project(x) if self.project is not None else x  # (B, T, H)


class Layer(nn.Module):
    """One post-LayerNorm BERT block: self-attention then MLP, each with a residual."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.attention_dropout = cfg.attention_dropout
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.mlp_in = nn.Linear(h, cfg.intermediate_size)
        self.mlp_out = nn.Linear(cfg.intermediate_size, h)
        self.mlp_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        keep: torch.Tensor,  # (B, 1, 1, T) or (B, 1, T, T) bool
        impl: AttnImpl,
        only: Selection | None = None,
        real: tuple[torch.Tensor, int, int] | None = None,
    ) -> torch.Tensor:  # (B, T, H), (M, H) at the ``only`` positions, or (n, H) with ``real``
        """``real`` = (flat indices of the n real tokens in the (B, T) batch, B, T): ``x`` is
        then (n, H), the real tokens only, and only attention sees the padded layout."""
        H, N = x.size(-1), self.num_heads
        p = self.attention_dropout if self.training else 0.0
        if real is not None:
            idx, B, T = real
            # Linear layers, norms and activations run on the n real tokens; the projections
            # are scattered into a zero (B*T, 3H) block for attention and gathered back.
            qkv = self.qkv(x)  # (n, 3H)
            qkv = qkv.new_zeros(B * T, 3 * H).index_copy(0, idx, qkv)
            qkv = qkv.view(B, T, 3, N, H // N).permute(2, 0, 3, 1, 4)  # (3, B, N, T, D)
            a = attention(qkv[0], qkv[1], qkv[2], keep, p, impl)  # (B, N, T, D)
            a = a.transpose(1, 2).reshape(B * T, H).index_select(0, idx)  # (n, H)
            residual = x
        elif only is None:
            B, T = x.shape[:2]
            qkv = self.qkv(x).view(B, T, 3, N, H // N).permute(2, 0, 3, 1, 4)  # (3, B, N, T, D)
            a = attention(qkv[0], qkv[1], qkv[2], keep, p, impl)  # (B, N, T, D)
            a = a.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
            residual = x
        else:
            B, T = x.shape[:2]
            # Every token is a key and a value; only the selected ones are queries, and the
            # rest of the block (output projection, MLP, norms) runs on those M tokens alone.
            rows, cols, slots, Q = only
            residual = x[rows, cols]  # (M, H)
            w, b = self.qkv.weight, self.qkv.bias
            kv = F.linear(x, w[H:], b[H:]).view(B, T, 2, N, H // N).permute(2, 0, 3, 1, 4)
            q_real = F.linear(residual, w[:H], b[:H])  # (M, H)
            q = q_real.new_zeros(B, Q, H)  # selected queries, left-aligned per row
            q[rows, slots] = q_real
            q = q.view(B, Q, N, H // N).transpose(1, 2)  # (B, N, Q, D)
            # Unused query slots attend to every key: no empty softmax rows (NaN), then dropped.
            q_keep = keep.new_ones(B, 1, Q, T)
            q_keep[rows, 0, slots] = keep.expand(B, 1, T, T)[rows, 0, cols]
            a = attention(q, kv[0], kv[1], q_keep, p, impl)  # (B, N, Q, D)
            a = a.transpose(1, 2)[rows, slots].reshape(-1, H)  # (M, H)
        x = self.attn_norm(residual + self.dropout(self.attn_out(a)))
        m = self.mlp_out(self.act(self.mlp_in(x)))
        return self.mlp_norm(x + self.dropout(m))


class Encoder(nn.Module):
    """Token ids in, contextual vectors out (the ``last_hidden_state`` of ``BertModel``)."""

    def __init__(
        self, cfg: EncoderConfig, attn_impl: AttnImpl = "sdpa", unpad: bool = False
    ) -> None:
        super().__init__()
        if attn_impl not in ("sdpa", "math"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'math', not {attn_impl!r}")
        self.cfg = cfg
        self.attn_impl: AttnImpl = attn_impl
        # Padded batches run their token-wise work on the real tokens only (``_unpadded``).
        self.unpad = unpad
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers))
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.cfg.initializer_range)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        attention_mask: torch.Tensor | None = None,  # (B, T), 1 for real tokens
        token_type_ids: torch.Tensor | None = None,  # (B, T) long
        segment_ids: torch.Tensor | None = None,  # (B, T) long: packed documents
        position_ids: torch.Tensor | None = None,  # (B, T) long: restart in each document
        output_mask: torch.Tensor | None = None,  # (B, T) bool: the outputs a head reads
    ) -> torch.Tensor:  # (B, T, H), or (M, H) with output_mask
        """With ``segment_ids`` (several documents packed in one row), a token attends only to
        the tokens of its own segment: the attention mask is block-diagonal.

        With ``output_mask``, returns ``hidden[output_mask]`` (row-major, M selected tokens) and
        runs the last layer for those tokens only: all tokens still serve as keys and values,
        but its queries, output projection and MLP cost M/(B*T) of the full layer. Masked-LM
        training reads 15% of the positions, so this removes ~85% of the last layer's work."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None and self.cfg.position_offset:
            # RoBERTa counts positions over the real tokens only (left padding included).
            position_ids = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        if segment_ids is not None:
            same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # (B, 1, T, T)
            keep = keep & same
        if self.unpad and output_mask is None and not bool(attention_mask.all()):
            return self._unpadded(input_ids, attention_mask, token_type_ids, position_ids, keep)
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        last = len(self.layers) - 1 if output_mask is not None else len(self.layers)
        for layer in self.layers[:last]:
            x = layer(x, keep, self.attn_impl)
        if output_mask is None:
            return x
        rows, cols = output_mask.nonzero(as_tuple=True)
        if last < 0 or rows.numel() == 0:
            return x[rows, cols]
        slots = output_mask.long().cumsum(1)[rows, cols] - 1
        most = int(output_mask.sum(1).max())  # one host sync: the query block's length
        return self.layers[last](x, keep, self.attn_impl, (rows, cols, slots, most))

    def _unpadded(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor,  # (B, T)
        position_ids: torch.Tensor | None,  # (B, T)
        keep: torch.Tensor,  # (B, 1, 1, T) or (B, 1, T, T)
    ) -> torch.Tensor:  # (B, T, H), zeros at the padding
        """The pad tokens are removed once, before the embeddings: every Linear, LayerNorm and
        activation runs on the n real tokens (n, H), which on short-text batches is most of the
        saving; attention gets them in the padded layout (SDPA with the key mask)."""
        B, T = input_ids.shape
        idx = attention_mask.flatten().nonzero().squeeze(1)  # (n,)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        flat = [t.flatten().index_select(0, idx)[None] for t in (input_ids, token_type_ids,
                                                                  position_ids)]  # fmt: skip
        x = self.embeddings(*flat)[0]  # (n, H)
        for layer in self.layers:
            x = layer(x, keep, self.attn_impl, real=(idx, B, T))
        return x.new_zeros(B * T, x.size(-1)).index_copy(0, idx, x).view(B, T, -1)


# ----------------------------------------------------------------------------------------------
# Hugging Face BERT checkpoints <-> this encoder
# ----------------------------------------------------------------------------------------------

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


def fsdp_units() -> set[type[nn.Module]]:
    """The modules FSDP wraps as units (``trainer=fsdp``): one per encoder layer."""
    return {Layer}
