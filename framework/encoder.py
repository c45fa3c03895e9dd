"""A BERT-compatible transformer encoder in plain torch: the spec of the model, top to bottom.

Depends on torch only. ``EncoderConfig``'s switches cover the encoder families tasklight loads
(``framework.families``): BERT's post-norm block with absolute positions (and RoBERTa's offset,
DistilBERT's missing segments, ELECTRA-small's projected embeddings), pre-norm (ModernBERT),
gated MLPs (GeGLU, SwiGLU), linears and norms without biases, rotary positions with a theta per
layer, a sliding attention window on some layers, and a final norm. Each layer's query, key and
value projections are one fused ``qkv`` Linear; a gated MLP's two input projections are one
``mlp_in`` (the activated half first).

Attention goes through ``framework.attention``: ``sdpa`` (fused) or ``math`` (the reference).
The unpadded path (``unpad=True``) runs everything but attention on the real tokens only; its
attention is a variable-length kernel on CUDA (half precision, no attention dropout), else SDPA
per length bucket of the batch's rows on CPU. Every layer has one forward over the call's
``Layout``, so a switch lands once for every path.

Shapes: B batch, T padded length, H hidden size, N heads, D head size (H = N * D).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from framework.attention import AttnImpl, Layout, Selection, bucketed, rotate, selection, use_varlen

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2  # 0: no segment embeddings
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
    # -- the switches of the post-2019 families ------------------------------------------------
    pre_norm: bool = False  # norm before attention and MLP (layer 0 reads the embeddings' norm)
    gated_mlp: bool = False  # act(x W1) * (x W2), then the output projection
    attention_bias: bool = True  # biases of qkv and the attention output
    mlp_in_bias: bool = True
    mlp_out_bias: bool = True
    norm_bias: bool = True
    rotary: bool = False  # rotary positions instead of a learned position table
    rope_theta: float = 10000.0
    local_rope_theta: float | None = None  # the theta of sliding-window layers (None: rope_theta)
    # Sliding-window layers: a token sees keys at most ``sliding_window`` tokens away (0: none).
    # Layer i attends globally when i % global_every == 0, else in the window.
    sliding_window: int = 0
    global_every: int = 1
    final_norm: bool = False  # a norm after the last layer
    # The family whose layout the weights came in and export in (``framework.families``).
    family: str = "bert"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {sorted(ACTIVATIONS)}")
        if self.global_every < 1 or self.sliding_window < 0:
            raise ValueError("global_every must be >= 1 and sliding_window >= 0")

    def window(self, layer: int) -> int:
        """Layer ``layer``'s attention window (0: global)."""
        return 0 if layer % self.global_every == 0 else self.sliding_window

    def theta(self, layer: int) -> float | None:
        """Layer ``layer``'s rotary theta (None: absolute positions)."""
        if not self.rotary:
            return None
        if self.window(layer) and self.local_rope_theta is not None:
            return self.local_rope_theta
        return self.rope_theta


def _norm(cfg: EncoderConfig, size: int | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(size or cfg.hidden_size, eps=cfg.layer_norm_eps, bias=cfg.norm_bias)


class Embeddings(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        e = cfg.embedding_size or cfg.hidden_size
        self.position_offset = cfg.position_offset
        self.word_embeddings = nn.Embedding(cfg.vocab_size, e, cfg.pad_token_id)
        self.position_embeddings = (
            None if cfg.rotary else nn.Embedding(cfg.max_position_embeddings, e)
        )
        self.token_type_embeddings = (
            nn.Embedding(cfg.type_vocab_size, e) if cfg.type_vocab_size else None
        )
        self.norm = _norm(cfg, e)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.project = nn.Linear(e, cfg.hidden_size) if e != cfg.hidden_size else None

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor,  # (B, T)
        position_ids: torch.Tensor,  # (B, T)
    ) -> torch.Tensor:  # (B, T, H)
        x = self.word_embeddings(input_ids)  # (B, T, E)
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(position_ids + self.position_offset)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings(token_type_ids)
        x = self.dropout(self.norm(x))
        return self.project(x) if self.project is not None else x


class Layer(nn.Module):
    """One block: self-attention then MLP, each with a residual, norms after (BERT) or before
    (``pre_norm``). Runs on the flat (tokens, H) matrix of a ``Layout``, whatever it is."""

    def __init__(self, cfg: EncoderConfig, index: int) -> None:
        super().__init__()
        h, inner = cfg.hidden_size, cfg.intermediate_size
        self.num_heads = cfg.num_heads
        self.attention_dropout = cfg.attention_dropout
        self.window, self.theta = cfg.window(index), cfg.theta(index)
        self.pre_norm = cfg.pre_norm
        self.qkv = nn.Linear(h, 3 * h, bias=cfg.attention_bias)
        self.attn_out = nn.Linear(h, h, bias=cfg.attention_bias)
        # Pre-norm layer 0 reads the embeddings' norm (ModernBERT has no norm of its own there).
        self.attn_norm = None if cfg.pre_norm and index == 0 else _norm(cfg)
        self.gated = cfg.gated_mlp
        self.mlp_in = nn.Linear(h, inner * (2 if cfg.gated_mlp else 1), bias=cfg.mlp_in_bias)
        self.mlp_out = nn.Linear(inner, h, bias=cfg.mlp_out_bias)
        self.mlp_norm = _norm(cfg)
        self.act = ACTIVATIONS[cfg.hidden_act]
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return self.mlp_out(self.act(self.mlp_in(x)))
        u, gate = self.mlp_in(x).chunk(2, dim=-1)
        return self.mlp_out(self.act(u) * gate)

    def _rope(self, x: torch.Tensor, lay: Layout, rows: torch.Tensor | None) -> torch.Tensor:
        """Rotary positions on (tokens, k*H) projections whose first k-1 heads-blocks are
        queries or keys (values last); ``rows`` picks the tokens' positions (selected rows)."""
        if self.theta is None:
            return x
        k = x.size(-1) // self.attn_out.in_features
        t = x.view(x.size(0), k, self.num_heads, -1)  # (tokens, k, N, D)
        cos, sin = lay.rotary(self.theta, t.size(-1))  # (all tokens, 1, D)
        if rows is not None:
            cos, sin = cos.index_select(0, rows), sin.index_select(0, rows)
        parts = [rotate(t[:, i], cos, sin) for i in range(max(k - 1, 1))]
        if k > 1:
            parts.append(t[:, k - 1])
        return torch.stack(parts, 1).view(x.shape)

    def forward(
        self,
        x: torch.Tensor,  # (tokens, H): B*T slots, or the n real tokens
        lay: Layout,
        sel: Selection | None = None,  # outputs at these M tokens only
    ) -> torch.Tensor:  # (tokens, H), or (M, H) with ``sel``
        """With ``sel``: every token is a key and a value, the M selected are the only queries,
        and the rest of the block runs on those M alone (masked LM reads 15% of the tokens)."""
        p = self.attention_dropout if self.training else 0.0
        h = self.attn_norm(x) if self.pre_norm and self.attn_norm is not None else x
        if sel is None:
            a = lay.attend(self._rope(self.qkv(h), lay, None), self.num_heads, self.window, p)
            residual = x
        else:
            H, w, b = x.size(-1), self.qkv.weight, self.qkv.bias
            kv = self._rope(F.linear(h, w[H:], None if b is None else b[H:]), lay, None)
            hq = h.index_select(0, sel.flat)  # (M, H)
            q = self._rope(F.linear(hq, w[:H], None if b is None else b[:H]), lay, sel.flat)
            a = lay.attend_selected(q, kv, self.num_heads, self.window, p, sel)
            residual = x.index_select(0, sel.flat)
        x = residual + self.dropout(self.attn_out(a))
        if self.pre_norm:
            return x + self.dropout(self._mlp(self.mlp_norm(x)))
        x = self.attn_norm(x)
        return self.mlp_norm(x + self.dropout(self._mlp(x)))


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
        # Padded batches run their token-wise work on the real tokens only (``_layout``).
        self.unpad = unpad
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = _norm(cfg) if cfg.final_norm else None
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
            if module.bias is not None:
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
        of the positions: ~85% of the last layer's work saved). A row's real tokens are
        contiguous (right or left padding): a sliding window counts tokens, as transformers'."""
        B, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if position_ids is None and self.cfg.position_offset:
            # RoBERTa counts positions over the real tokens only (left padding included).
            position_ids = (attention_mask.long().cumsum(1) - 1).clamp(min=0)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        if segment_ids is not None:
            same = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]  # (B, 1, T, T)
            keep = keep & same
        lay = self._layout(attention_mask, keep)
        ids = (input_ids, token_type_ids, position_ids)
        if lay.idx is None:  # padded: every slot, pads included, goes through every sub-layer
            x = self.embeddings(*ids).reshape(B * T, -1)  # (B*T, H)
            lay.positions = position_ids.flatten()
        else:  # the pad tokens are removed once, before the embeddings
            flat = [t.flatten().index_select(0, lay.idx)[None] for t in ids]  # (1, n) each
            x = self.embeddings(*flat)[0]  # (n, H)
            lay.positions = flat[2][0]
        last = len(self.layers) - 1 if output_mask is not None else len(self.layers)
        for layer in self.layers[:last]:
            x = layer(x, lay)
        if output_mask is None:
            return self._final(lay.pad(x)).view(B, T, -1)
        rows, cols = output_mask.nonzero(as_tuple=True)
        at = rows * T + cols  # each selected token's row in the (B*T, H) layout
        if lay.idx is not None:  # in the (n, H) layout: real tokens counted so far
            at = attention_mask.flatten().long().cumsum(0)[at] - 1  # (M,)
        if last < 0 or rows.numel() == 0:
            return self._final(x.index_select(0, at))
        sel = selection(output_mask, rows, cols, at)
        return self._final(self.layers[last](x, lay, sel))

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm(x) if self.final_norm is not None else x

    def _use_varlen(self, device: torch.device, keep: torch.Tensor) -> bool:
        """Whether the unpadded path runs the varlen kernel: CUDA, fused attention (``sdpa``)
        and no packed segments, then ``use_varlen``'s checks (which warn when it falls back)."""
        if device.type != "cuda" or self.attn_impl != "sdpa" or keep.size(2) != 1:
            return False
        dropout = self.cfg.attention_dropout if self.training else 0.0
        return use_varlen(device, self.embeddings.word_embeddings.weight.dtype, dropout)

    def _layout(self, attention_mask: torch.Tensor, keep: torch.Tensor) -> Layout:
        """Padded (every slot), or the real tokens only (``unpad`` and some padding): attention
        by the varlen kernel on CUDA; on CPU, SDPA over length buckets of the rows, each padded
        to its own longest row."""
        B, T = attention_mask.shape
        lay = Layout(B, T, keep, self.attn_impl)
        if not self.unpad or bool(attention_mask.all()):
            return lay
        lay.idx = attention_mask.flatten().nonzero().squeeze(1)  # (n,)
        lengths = attention_mask.sum(1)  # (B,) real tokens per row, in ``idx`` order
        if self._use_varlen(attention_mask.device, keep):
            lay.cu = F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
            lay.longest = int(lengths.max())
        elif attention_mask.device.type == "cpu" and keep.size(2) == 1:  # no packed segments
            lay = bucketed(lay, lengths.tolist())
        return lay


def fsdp_units() -> set[type[nn.Module]]:
    """The modules FSDP wraps as units (``trainer=fsdp``): one per encoder layer."""
    return {Layer}
