"""Attention back-ends and the unpadded layout the encoder runs on (``framework.encoder``).

``attention``: SDPA (fused) or the written-out reference, on a padded (B, N, T, D) block.
``varlen_attention``: a variable-length FlashAttention kernel on the real tokens only (CUDA):
torch's own (torch >= 2.10), else the ``flash-attn`` package's. ``Unpadded`` records where the
real tokens of a padded batch are; on CPU their attention runs per length bucket (``Bucket``,
``length_buckets``). ``Selection`` names the few tokens whose outputs a head reads.

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
) -> torch.Tensor:  # (Mq, N, D)
    assert VARLEN is not None
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
class Unpadded:
    """Where the n real tokens of a padded (B, T) batch are: ``idx`` (n,) into the flat B*T."""

    idx: torch.Tensor
    B: int
    T: int
    # With a varlen kernel (CUDA): (B+1,) int32 offsets of each row's real tokens in the (n, H)
    # layout, and the longest row; attention then never sees the padded layout.
    cu: torch.Tensor | None = None
    longest: int = 0
    # Without one (CPU): attention in length buckets (``Bucket``), each padded to its own longest
    # row, and ``order`` puts their concatenated real tokens back in the (n, H) order.
    buckets: tuple[Bucket, ...] = ()
    order: torch.Tensor | None = None

    def pad(self, x: torch.Tensor) -> torch.Tensor:  # (n, F) -> (B*T, F), zeros at the padding
        return x.new_zeros(self.B * self.T, x.size(-1)).index_copy(0, self.idx, x)


@dataclass(frozen=True)
class Bucket:
    """Rows of similar length whose attention runs as one padded (b, t) block."""

    slots: torch.Tensor  # (b*t,) each slot's row in the (n+1, F) layout; row n is all zeros
    keep: torch.Tensor  # (b, 1, 1, t) bool: real keys
    real: torch.Tensor  # (m,) the slots that hold real tokens, in the (n, H) order
    b: int
    t: int


def length_buckets(lengths: list[int], rows_per_bucket: int = 8) -> list[list[int]]:
    """Row ids (sorted by length) cut into buckets of ``rows_per_bucket`` rows when that
    pads at most 3/4 of what one (B, longest) block would; else one bucket (a batch already
    grouped by length gains nothing from more, smaller attention calls)."""
    rows = sorted(range(len(lengths)), key=lengths.__getitem__)
    chunks = [rows[i : i + rows_per_bucket] for i in range(0, len(rows), rows_per_bucket)]
    slots = sum(len(c) * lengths[c[-1]] for c in chunks)
    return chunks if slots <= 0.75 * len(rows) * max(lengths) else [rows]


def bucketed(real: Unpadded, lengths: list[int]) -> Unpadded:
    """``real`` with its attention buckets: each row's real tokens left-aligned in its bucket's
    block (attention does not depend on where in the block a token sits: positions are in the
    embeddings)."""
    groups = length_buckets(lengths)
    if len(groups) == 1:
        return real  # one block: the (B, T) layout itself is as small
    device, n = real.idx.device, len(real.idx)
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
    return dataclasses.replace(real, buckets=tuple(buckets), order=order)


def selection(
    output_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, flat: torch.Tensor
) -> Selection:
    """The ``Selection`` of ``output_mask`` (B, T) bool; ``flat`` indexes the layer input."""
    slots = output_mask.long().cumsum(1)[rows, cols] - 1  # (M,)
    most = int(output_mask.sum(1).max())  # one host sync: the query block's length
    return Selection(flat, rows, cols, slots, most)
