"""A BERT-compatible transformer encoder in plain torch: the spec of the model, top to bottom.

Depends on torch only. Weights are laid out like Hugging Face's ``BertModel`` except that each
layer's query, key and value projections are one fused ``qkv`` Linear (``framework/convert.py``
converts both ways). RoBERTa, DistilBERT and ELECTRA are the same post-LayerNorm block with a
position offset (RoBERTa), no segment embeddings (DistilBERT) or a projection after the
embeddings (ELECTRA-small).

Attention goes through ``framework.attention``: ``sdpa`` (fused) or ``math`` (the reference).
The unpadded path (``unpad=True``) runs everything but attention on the real tokens only; its
attention is a variable-length kernel on CUDA (half precision, no attention dropout), else SDPA
per length bucket of the batch's rows on CPU.

Shapes: B batch, T padded length, H hidden size, N heads, D head size (H = N * D).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from framework.attention import (
    AttnImpl,
    Selection,
    Unpadded,
    attention,
    bucketed,
    selection,
    use_varlen,
    varlen_attention,
)

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
    # Attention-probability dropout: 0 by default, as the fused kernels (varlen) need.
    attention_dropout: float = 0.0
    pad_token_id: int = 0
    initializer_range: float = 0.02
    # RoBERTa numbers positions from pad_token_id + 1 (= 2): its first table rows go unused.
    position_offset: int = 0
    # ELECTRA-small: embeddings of this size, then a Linear to hidden_size (None: BERT).
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
    # BERT-mini shape (4 layers, hidden 256): pretraining on a CPU-sized budget.
    "mini": EncoderConfig(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
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

    def _heads(self, x: torch.Tensor, B: int, T: int, k: int) -> torch.Tensor:
        """(B*T or B, T, k*H) projections -> (k, B, N, T, D)."""
        N = self.num_heads
        return x.view(B, T, k, N, -1).permute(2, 0, 3, 1, 4)

    def _finish(self, residual: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Attention output projection, residual, norm, then the MLP block (any leading dims)."""
        x = self.attn_norm(residual + self.dropout(self.attn_out(a)))
        m = self.mlp_out(self.act(self.mlp_in(x)))
        return self.mlp_norm(x + self.dropout(m))

    def forward(
        self,
        x: torch.Tensor,  # (B, T, H)
        keep: torch.Tensor,  # (B, 1, 1, T) or (B, 1, T, T) bool
        impl: AttnImpl,
    ) -> torch.Tensor:  # (B, T, H)
        """The padded layout: every slot, pads included, goes through every sub-layer."""
        B, T, H = x.shape
        p = self.attention_dropout if self.training else 0.0
        q, k, v = self._heads(self.qkv(x), B, T, 3)  # (B, N, T, D) each
        a = attention(q, k, v, keep, p, impl).transpose(1, 2).reshape(B, T, H)
        return self._finish(x, a)

    def forward_unpadded(
        self,
        x: torch.Tensor,  # (n, H): the real tokens only
        keep: torch.Tensor,  # (B, 1, 1, T) or (B, 1, T, T) bool
        impl: AttnImpl,
        real: Unpadded,
    ) -> torch.Tensor:  # (n, H)
        """Linears, norms and activations on the n real tokens. Attention: the varlen kernel
        (``real.cu``), SDPA per length bucket (``real.buckets``), or SDPA on the (B, T) layout."""
        H = x.size(-1)
        if real.cu is not None:  # varlen kernel: no padded layout at all
            q, k, v = self.qkv(x).view(-1, 3, self.num_heads, H // self.num_heads).unbind(1)
            a = varlen_attention(q, k, v, real.cu, real.cu, real.longest, real.longest)
            return self._finish(x, a.reshape(-1, H))  # (n, N, D) -> (n, H)
        p = self.attention_dropout if self.training else 0.0
        if real.buckets:  # attention per length bucket, each padded to its own longest row
            qkv = self.qkv(x)  # (n, 3H)
            qkv = torch.cat([qkv, qkv.new_zeros(1, 3 * H)])  # (n+1, 3H): row n pads
            parts = []
            for bk in real.buckets:
                q, k, v = self._heads(qkv.index_select(0, bk.slots), bk.b, bk.t, 3)  # (b,N,t,D)
                a = attention(q, k, v, bk.keep, p, impl).transpose(1, 2).reshape(-1, H)
                parts.append(a.index_select(0, bk.real))  # (m, H)
            return self._finish(x, torch.cat(parts).index_select(0, real.order))  # (n, H)
        q, k, v = self._heads(real.pad(self.qkv(x)), real.B, real.T, 3)  # (B, N, T, D) each
        a = attention(q, k, v, keep, p, impl)  # (B, N, T, D)
        a = a.transpose(1, 2).reshape(-1, H).index_select(0, real.idx)  # (n, H)
        return self._finish(x, a)

    def forward_selected(
        self,
        x: torch.Tensor,  # (B, T, H) padded, or (n, H) with ``real``
        keep: torch.Tensor,  # (B, 1, 1, T) or (B, 1, T, T) bool
        impl: AttnImpl,
        sel: Selection,
        real: Unpadded | None = None,
    ) -> torch.Tensor:  # (M, H)
        """Outputs at the M selected tokens only: every token is a key and a value, the M are
        the only queries, and the rest of the block runs on those M tokens alone."""
        H = x.size(-1)
        B, T = (real.B, real.T) if real is not None else x.shape[:2]
        p = self.attention_dropout if self.training else 0.0
        flat = x.reshape(-1, H)  # (B*T or n, H)
        residual = flat.index_select(0, sel.flat)  # (M, H)
        w, b = self.qkv.weight, self.qkv.bias
        kv = F.linear(flat, w[H:], b[H:])  # (B*T or n, 2H)
        if real is not None and real.cu is not None:  # varlen: queries grouped by row
            N, D = self.num_heads, H // self.num_heads
            k, v = kv.view(-1, 2, N, D).unbind(1)  # (n, N, D)
            q = F.linear(residual, w[:H], b[:H]).view(-1, N, D)  # (M, N, D)
            per_row = torch.bincount(sel.rows, minlength=B)  # (B,) selected tokens per row
            cu_q = F.pad(per_row.cumsum(0), (1, 0)).to(torch.int32)
            a = varlen_attention(q, k, v, cu_q, real.cu, sel.most, real.longest)
            return self._finish(residual, a.reshape(-1, H))  # (M, H)
        k, v = self._heads(real.pad(kv) if real is not None else kv, B, T, 2)  # (B, N, T, D)
        q_sel = F.linear(residual, w[:H], b[:H])  # (M, H); bf16 under autocast
        q = q_sel.new_zeros(B, sel.most, H)  # selected queries, left-aligned per row
        q[sel.rows, sel.slots] = q_sel
        q = q.view(B, sel.most, self.num_heads, -1).transpose(1, 2)  # (B, N, Q, D)
        # Unused query slots attend to every key: no empty softmax rows (NaN), then dropped.
        q_keep = keep.new_ones(B, 1, sel.most, T)
        q_keep[sel.rows, 0, sel.slots] = keep.expand(B, 1, T, T)[sel.rows, 0, sel.cols]
        a = attention(q, k, v, q_keep, p, impl)  # (B, N, Q, D)
        a = a.transpose(1, 2)[sel.rows, sel.slots].reshape(-1, H)  # (M, H)
        return self._finish(residual, a)


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
        """``segment_ids`` (documents packed in one row): a token attends to its own segment only.
        ``output_mask``: returns ``hidden[output_mask]`` (M tokens, row-major) and runs the last
        layer's queries, output projection and MLP for those M tokens only (masked LM reads 15%
        of the positions: ~85% of the last layer's work saved)."""
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
        if self.unpad and not bool(attention_mask.all()):
            return self._unpadded(
                input_ids, attention_mask, token_type_ids, position_ids, keep, output_mask
            )
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        last = len(self.layers) - 1 if output_mask is not None else len(self.layers)
        for layer in self.layers[:last]:
            x = layer(x, keep, self.attn_impl)
        if output_mask is None:
            return x
        rows, cols = output_mask.nonzero(as_tuple=True)
        if last < 0 or rows.numel() == 0:
            return x[rows, cols]
        sel = selection(output_mask, rows, cols, rows * x.size(1) + cols)
        return self.layers[last].forward_selected(x, keep, self.attn_impl, sel)

    def _use_varlen(self, device: torch.device, keep: torch.Tensor) -> bool:
        """Whether the unpadded path runs the varlen kernel: CUDA, fused attention (``sdpa``)
        and no packed segments, then ``use_varlen``'s checks (which warn when it falls back)."""
        if device.type != "cuda" or self.attn_impl != "sdpa" or keep.size(2) != 1:
            return False
        dropout = self.cfg.attention_dropout if self.training else 0.0
        return use_varlen(device, self.embeddings.word_embeddings.weight.dtype, dropout)

    def _unpadded(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor,  # (B, T)
        position_ids: torch.Tensor | None,  # (B, T)
        keep: torch.Tensor,  # (B, 1, 1, T) or (B, 1, T, T)
        output_mask: torch.Tensor | None,  # (B, T) bool, selected positions (real tokens)
    ) -> torch.Tensor:  # (B, T, H), zeros at the padding; or (M, H) with output_mask
        """The pad tokens are removed once, before the embeddings: every Linear, LayerNorm and
        activation runs on the n real tokens (n, H). Attention: a varlen kernel on CUDA; on CPU,
        SDPA over length buckets of the rows, each padded to its own longest row."""
        B, T = input_ids.shape
        idx = attention_mask.flatten().nonzero().squeeze(1)  # (n,)
        real = Unpadded(idx, B, T)
        lengths = attention_mask.sum(1)  # (B,) real tokens per row, in ``idx`` order
        if self._use_varlen(input_ids.device, keep):
            cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
            real = Unpadded(idx, B, T, cu, int(lengths.max()))
        elif input_ids.device.type == "cpu" and keep.size(2) == 1:  # no packed segments
            real = bucketed(real, lengths.tolist())
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        ids = (input_ids, token_type_ids, position_ids)
        flat = [t.flatten().index_select(0, real.idx)[None] for t in ids]  # (1, n) each
        x = self.embeddings(*flat)[0]  # (n, H)
        last = len(self.layers) - 1 if output_mask is not None else len(self.layers)
        for layer in self.layers[:last]:
            x = layer.forward_unpadded(x, keep, self.attn_impl, real)
        if output_mask is None:
            return real.pad(x).view(B, T, -1)
        rows, cols = output_mask.nonzero(as_tuple=True)
        # Each selected (real) token's row in the (n, H) layout: real tokens counted so far.
        in_real = attention_mask.flatten().long().cumsum(0)[rows * T + cols] - 1  # (M,)
        if last < 0 or rows.numel() == 0:
            return x.index_select(0, in_real)
        sel = selection(output_mask, rows, cols, in_real)
        return self.layers[last].forward_selected(x, keep, self.attn_impl, sel, real)


def fsdp_units() -> set[type[nn.Module]]:
    """The modules FSDP wraps as units (``trainer=fsdp``): one per encoder layer."""
    return {Layer}
