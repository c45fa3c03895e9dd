"""Attention back-ends and the layout the encoder runs on (``framework.encoder``).

``attention``: SDPA (fused) or the written-out reference, on a padded (B, N, T, D) block.
``varlen_attention``: a variable-length FlashAttention kernel on the real tokens only (CUDA):
torch's own (torch >= 2.10), else the ``flash-attn`` package's. ``Layout`` records where one
call's tokens are (every slot, or the real tokens only) and runs attention on them: the varlen
kernel, SDPA per length bucket of the rows on CPU (``Bucket``, ``length_buckets``), or SDPA on
the padded block; a sliding window (``windowed``) and rotary positions (``rotate``) included.
``Selection`` names the few tokens whose outputs a head reads.

Shapes: B batch, T padded length, H hidden size, N heads, D head size (H = N * D).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

AttnImpl = Literal["sdpa", "math"]


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


def _varlen_kernel():
    """A variable-length FlashAttention function ``(q, k, v, cu_q, cu_k, max_q, max_k)`` on
    (tokens, N, D) tensors: torch's own (torch >= 2.10), else ``flash-attn``'s; None if neither."""
    try:
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn
    except ImportError:
        pass
    try:  # optional dependency, never required
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func
    except ImportError:
        return None


VARLEN = _varlen_kernel()


def varlen_available() -> bool:
    return VARLEN is not None


def varlen_attention(
    q: torch.Tensor,  # (Mq, N, D): the queries of all sequences, one after the other
    k: torch.Tensor,  # (n, N, D)
    v: torch.Tensor,  # (n, N, D)
    cu_q: torch.Tensor,  # (B+1,) int32: where each sequence's queries start
    cu_k: torch.Tensor,  # (B+1,) int32: where each sequence's keys start
    max_q: int,
    max_k: int,
    window: int = 0,
) -> torch.Tensor:  # (Mq, N, D)
    """``window`` > 0: a query sees the keys at most ``window`` tokens away (both kernels align
    a sequence's queries with its keys bottom-right: give every query of a windowed layer)."""
    assert VARLEN is not None
    if window:
        return VARLEN(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(window, window))
    return VARLEN(q, k, v, cu_q, cu_k, max_q, max_k)


def half_precision(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether matmuls on ``device`` run in fp16/bf16 (autocast or half weights)."""
    half = (torch.float16, torch.bfloat16)
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type) in half
    return dtype in half


def use_varlen(device: torch.device, dtype: torch.dtype, dropout: float) -> bool:
    """Whether the varlen kernel can run on CUDA ``device`` for weights of ``dtype`` with this
    attention dropout; when it cannot, a warning says why (the caller falls back to SDPA)."""
    reasons = []
    if not varlen_available():
        reasons.append("no varlen kernel (torch >= 2.10 or the flash-attn package)")
    if not half_precision(device, dtype):
        reasons.append("fp32 (use trainer.precision=bf16-mixed)")
    if dropout > 0:
        reasons.append("attention dropout > 0 (model.attention_dropout=0)")
    if reasons:
        warnings.warn(
            "unpadded attention on CUDA falls back to SDPA on the padded layout: "
            + "; ".join(reasons),
            stacklevel=4,
        )
    return not reasons


@dataclass(frozen=True)
class Selection:
    """The M tokens whose outputs a head reads (``output_mask``), in row-major order."""

    flat: torch.Tensor  # (M,) row of each in the layer input: (B*T, H) padded or (n, H) unpadded
    rows: torch.Tensor  # (M,) batch row
    cols: torch.Tensor  # (M,) position in the row
    slots: torch.Tensor  # (M,) rank among the selected tokens of its row
    most: int  # the most selected tokens in one row


@dataclass(frozen=True)
class Bucket:
    """Rows of similar length whose attention runs as one padded (b, t) block."""

    slots: torch.Tensor  # (b*t,) each slot's row in the (n+1, F) layout; row n is all zeros
    keep: torch.Tensor  # (b, 1, 1, t) bool: real keys
    real: torch.Tensor  # (m,) the slots that hold real tokens, in the (n, H) order
    b: int
    t: int


def split_heads(x: torch.Tensor, B: int, T: int, k: int, heads: int) -> torch.Tensor:
    """(B*T, k*H) projections -> (k, B, N, T, D)."""
    return x.view(B, T, k, heads, -1).permute(2, 0, 3, 1, 4)


def windowed(keep: torch.Tensor, window: int) -> torch.Tensor:
    """``keep`` (b, 1, 1 or t, t) with keys more than ``window`` slots from the query masked;
    a query left with no key (a pad slot) keeps them all (no NaN rows; its output is dropped)."""
    t = keep.size(-1)
    pos = torch.arange(t, device=keep.device)
    m = keep & ((pos[:, None] - pos[None]).abs() <= window)  # (b, 1, t, t)
    return m | ~m.any(-1, keepdim=True)


@dataclass
class Layout:
    """Where one encoder call's tokens are and how attention runs on them: built once per call
    (``Encoder.forward``), read by every layer. Layers see their tokens as one flat (tokens, F)
    matrix: the B*T slots of the padded batch (``idx`` None), or only its n real tokens."""

    B: int
    T: int
    keep: torch.Tensor  # (B, 1, 1, T) or (B, 1, T, T) bool: real keys (and packed segments)
    impl: AttnImpl
    idx: torch.Tensor | None = None  # (n,) the real tokens in the flat B*T; None: every slot
    # A varlen kernel (CUDA): (B+1,) int32 offsets of each row's real tokens, the longest row.
    cu: torch.Tensor | None = None
    longest: int = 0
    # CPU: attention in length buckets, each padded to its own longest row; ``order`` puts their
    # concatenated real tokens back in the (n, H) order.
    buckets: tuple[Bucket, ...] = ()
    order: torch.Tensor | None = None
    positions: torch.Tensor | None = None  # (tokens,) each token's position (rotary)
    # Built on first use, once per call: masks per (keep, window), rotary tables per theta.
    cache: dict = dataclasses.field(default_factory=dict)

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (tokens, F) -> (B*T, F), zero padding
        if self.idx is None:
            return x
        return x.new_zeros(self.B * self.T, x.size(-1)).index_copy(0, self.idx, x)

    def mask(self, keep: torch.Tensor, window: int) -> torch.Tensor:
        if not window:
            return keep
        key = (id(keep), window)
        if key not in self.cache:
            self.cache[key] = windowed(keep, window)
        return self.cache[key]

    def rotary(self, theta: float, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (tokens, 1, D): rotary tables at every token's position."""
        if theta not in self.cache:
            assert self.positions is not None
            inv = 1.0 / theta ** (torch.arange(0, dim, 2, device=self.positions.device) / dim)
            freqs = self.positions[:, None].float() * inv  # (tokens, D/2)
            angles = torch.cat([freqs, freqs], dim=-1)[:, None]  # (tokens, 1, D)
            self.cache[theta] = angles.cos(), angles.sin()
        return self.cache[theta]

    def attend(self, qkv: torch.Tensor, heads: int, window: int, p: float) -> torch.Tensor:
        """(tokens, 3H) query, key and value projections -> (tokens, H) attention output."""
        H = qkv.size(-1) // 3
        if self.cu is not None:  # varlen kernel: no padded layout at all
            q, k, v = qkv.view(-1, 3, heads, H // heads).unbind(1)  # (n, N, D)
            a = varlen_attention(q, k, v, self.cu, self.cu, self.longest, self.longest, window)
            return a.reshape(-1, H)
        if self.buckets:  # attention per length bucket, each padded to its own longest row
            qkv = torch.cat([qkv, qkv.new_zeros(1, 3 * H)])  # (n+1, 3H): row n pads
            parts = []
            for bk in self.buckets:
                q, k, v = split_heads(qkv.index_select(0, bk.slots), bk.b, bk.t, 3, heads)
                a = attention(q, k, v, self.mask(bk.keep, window), p, self.impl)  # (b,N,t,D)
                parts.append(a.transpose(1, 2).reshape(-1, H).index_select(0, bk.real))
            return torch.cat(parts).index_select(0, self.order)  # (n, H)
        q, k, v = split_heads(self.pad(qkv), self.B, self.T, 3, heads)  # (B, N, T, D) each
        a = attention(q, k, v, self.mask(self.keep, window), p, self.impl)
        a = a.transpose(1, 2).reshape(-1, H)  # (B*T, H)
        return a if self.idx is None else a.index_select(0, self.idx)

    def attend_selected(
        self, q: torch.Tensor, kv: torch.Tensor, heads: int, window: int, p: float, sel: Selection
    ) -> torch.Tensor:
        """(M, H) queries of the selected tokens, (tokens, 2H) every token's keys and values ->
        (M, H). A windowed layer runs on the padded layout: the kernels' bottom-right alignment
        of a row's fewer queries would shift its window."""
        B, T, H = self.B, self.T, q.size(-1)
        N, D = heads, H // heads
        if self.cu is not None and not window:  # varlen: queries grouped by row
            k, v = kv.view(-1, 2, N, D).unbind(1)  # (n, N, D)
            per_row = torch.bincount(sel.rows, minlength=B)  # (B,) selected tokens per row
            cu_q = F.pad(per_row.cumsum(0), (1, 0)).to(torch.int32)
            a = varlen_attention(q.view(-1, N, D), k, v, cu_q, self.cu, sel.most, self.longest)
            return a.reshape(-1, H)
        k, v = split_heads(self.pad(kv), B, T, 2, N)  # (B, N, T, D)
        qp = q.new_zeros(B, sel.most, H)  # selected queries, left-aligned per row
        qp[sel.rows, sel.slots] = q
        qp = qp.view(B, sel.most, N, D).transpose(1, 2)  # (B, N, Q, D)
        keep = self.mask(self.keep, window).expand(B, 1, T, T)
        # Unused query slots attend to every key: no empty softmax rows (NaN), then dropped.
        q_keep = keep.new_ones(B, 1, sel.most, T)
        q_keep[sel.rows, 0, sel.slots] = keep[sel.rows, 0, sel.cols]
        a = attention(qp, k, v, q_keep, p, self.impl)  # (B, N, Q, D)
        return a.transpose(1, 2)[sel.rows, sel.slots].reshape(-1, H)  # (M, H)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions on (tokens, N, D) queries or keys (the halves layout of transformers'
    ``rotate_half``), computed in fp32."""
    half = x.float()
    x1, x2 = half.chunk(2, dim=-1)
    return (half * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


def length_buckets(lengths: list[int], rows_per_bucket: int = 8) -> list[list[int]]:
    """Row ids (sorted by length) cut into buckets of ``rows_per_bucket`` rows when that
    pads at most 3/4 of what one (B, longest) block would; else one bucket (a batch already
    grouped by length gains nothing from more, smaller attention calls)."""
    rows = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks = [rows[i : i + rows_per_bucket] for i in range(0, len(rows), rows_per_bucket)]
    slots = sum(len(c) * lengths[c[-1]] for c in chunks)
    return chunks if slots <= 0.75 * len(rows) * max(lengths) else [rows]


def bucketed(lay: Layout, lengths: list[int]) -> Layout:
    """``lay`` (unpadded) with its attention buckets: each row's real tokens left-aligned in its
    bucket's block (positions are in the embeddings or the rotary tables, not the slots; a
    window counts slots, which keep their distances: a row's real tokens are contiguous)."""
    groups = length_buckets(lengths)
    if len(groups) == 1:
        return lay  # one block: the (B, T) layout itself is as small
    assert lay.idx is not None
    device, n = lay.idx.device, len(lay.idx)
    starts = [0]
    for length in lengths[:-1]:
        starts.append(starts[-1] + length)
    buckets, reals = [], []
    for rows in groups:
        t = max(lengths[r] for r in rows)
        col = torch.arange(t, device=device)  # (t,)
        start = torch.tensor([starts[r] for r in rows], device=device)[:, None]  # (b, 1)
        valid = col[None] < torch.tensor([lengths[r] for r in rows], device=device)[:, None]
        slots = torch.where(valid, start + col[None], n).flatten()  # (b*t,)
        flat_valid = valid.flatten()
        buckets.append(Bucket(slots, valid[:, None, None, :], flat_valid.nonzero().squeeze(1),
                              len(rows), t))  # fmt: skip
        reals.append(slots[flat_valid])  # where each real slot's token sits in (n, H)
    order = torch.empty(n, dtype=torch.long, device=device)
    order[torch.cat(reals)] = torch.arange(n, device=device)
    return dataclasses.replace(lay, buckets=tuple(buckets), order=order)


def selection(
    output_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, flat: torch.Tensor
) -> Selection:
    """The ``Selection`` of ``output_mask`` (B, T) bool; ``flat`` indexes the layer input."""
    slots = output_mask.long().cumsum(1)[rows, cols] - 1  # (M,)
    most = int(output_mask.sum(1).max())  # one host sync: the query block's length
    return Selection(flat, rows, cols, slots, most)
