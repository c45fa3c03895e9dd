"""A BERT-compatible transformer encoder in plain torch.

This file is the spec of the model: read it top to bottom. It depends on torch only (no Lightning,
Hydra or DictConfig). Weights are laid out like Hugging Face's ``BertModel`` except that the query,
key and value projections of each layer are fused into one ``qkv`` Linear (one GEMM instead of
three); ``hf_to_tasklight`` / ``tasklight_to_hf`` convert state dicts both ways.

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
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,  # (B, T); None: 0..T-1
    ) -> torch.Tensor:
        positions = position_ids
        if positions is None:
            positions = torch.arange(input_ids.size(1), device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids)  # (B, T, H)
        x = x + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x))


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
    ) -> torch.Tensor:  # (B, T, H), or (M, H) at the ``only`` positions
        B, T, H = x.shape
        N = self.num_heads
        p = self.attention_dropout if self.training else 0.0
        if only is None:
            qkv = self.qkv(x).view(B, T, 3, N, H // N).permute(2, 0, 3, 1, 4)  # (3, B, N, T, D)
            a = attention(qkv[0], qkv[1], qkv[2], keep, p, impl)  # (B, N, T, D)
            a = a.transpose(1, 2).reshape(B, T, H)  # (B, T, H)
            residual = x
        else:
            # Every token is a key and a value; only the selected ones are queries, and the
            # rest of the block (output projection, MLP, norms) runs on those M tokens alone.
            rows, cols, slots, Q = only
            residual = x[rows, cols]  # (M, H)
            w, b = self.qkv.weight, self.qkv.bias
            kv = F.linear(x, w[H:], b[H:]).view(B, T, 2, N, H // N).permute(2, 0, 3, 1, 4)
            q = x.new_zeros(B, Q, H)  # selected queries, left-aligned per row
            q[rows, slots] = F.linear(residual, w[:H], b[:H])
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

    def __init__(self, cfg: EncoderConfig, attn_impl: AttnImpl = "sdpa") -> None:
        super().__init__()
        if attn_impl not in ("sdpa", "math"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'math', not {attn_impl!r}")
        self.cfg = cfg
        self.attn_impl: AttnImpl = attn_impl
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
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        if segment_ids is not None:
            same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # (B, 1, T, T)
            keep = keep & same
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


def config_from_hf(hf: dict) -> EncoderConfig:
    """An ``EncoderConfig`` from a Hugging Face BERT ``config.json`` dict."""
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
        pad_token_id=hf.get("pad_token_id") or 0,
        initializer_range=hf.get("initializer_range", 0.02),
    )


def config_to_hf(cfg: EncoderConfig) -> dict:
    """A Hugging Face ``BertConfig`` dict for ``cfg``."""
    return {
        "model_type": "bert",
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
        "position_embedding_type": "absolute",
    }


def hf_to_tasklight(
    hf_state: dict[str, torch.Tensor], num_layers: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a BertModel state dict into (encoder state, everything else, e.g. ``pooler.*``).

    Accepts both bare ``BertModel`` keys and keys under a ``bert.`` prefix (``BertFor*``).
    """
    hf = {k.removeprefix("bert."): v for k, v in hf_state.items()}
    ours: dict[str, torch.Tensor] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        ours[f"embeddings.{name}.weight"] = hf.pop(f"embeddings.{name}.weight")
    for p in ("weight", "bias"):
        ours[f"embeddings.norm.{p}"] = hf.pop(f"embeddings.LayerNorm.{p}")
    hf.pop("embeddings.position_ids", None)  # a buffer in old checkpoints, not a weight
    for i in range(num_layers):
        pre = _HF_LAYER.format(i=i)
        for p in ("weight", "bias"):
            qkv = [hf.pop(f"{pre}attention.self.{n}.{p}") for n in ("query", "key", "value")]
            ours[f"layers.{i}.qkv.{p}"] = torch.cat(qkv, dim=0)
            for mine, theirs in _RENAMES.items():
                ours[f"layers.{i}.{mine}.{p}"] = hf.pop(f"{pre}{theirs}.{p}")
    return ours, hf


def tasklight_to_hf(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The inverse of ``hf_to_tasklight`` for the encoder: ``BertModel`` keys (no prefix)."""
    s = dict(state)
    hf: dict[str, torch.Tensor] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        hf[f"embeddings.{name}.weight"] = s.pop(f"embeddings.{name}.weight")
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
