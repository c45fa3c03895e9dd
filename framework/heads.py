"""What an encoder family puts between the encoder and a task's output layer, so a head built
by a task fits the family it runs on (and exports into the family's own ``...For*`` class).

BERT and the families shaped like it pool a sequence with BERT's pooler (dense + tanh on the
[CLS] vector) and put nothing before token-level outputs. ModernBERT puts its prediction head
(dense, activation, norm; no biases by default) before every output layer: pooled sequence,
tokens and the masked-LM decoder alike. ``framework.families`` declares each family's style;
``framework.module.assemble`` hands it to the task (``Task.head_style``) before ``build_head``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from framework.encoder import ACTIVATIONS


@dataclass(frozen=True)
class HeadStyle:
    # ``tanh``: BERT's pooler; ``transform``: the family's prediction head (``Transform``)
    pooler: str = "tanh"
    token_transform: bool = False  # a ``Transform`` before token-level output layers
    act: str = "gelu"
    norm_eps: float = 1e-12
    norm_bias: bool = True
    dense_bias: bool = True


BERT_HEADS = HeadStyle()


class Transform(nn.Module):
    """dense -> activation -> norm (BERT's masked-LM transform; ModernBERT's prediction head)."""

    def __init__(self, hidden_size: int, style: HeadStyle) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size, bias=style.dense_bias)
        self.norm = nn.LayerNorm(hidden_size, eps=style.norm_eps, bias=style.norm_bias)
        self.act = ACTIVATIONS[style.act]
        nn.init.normal_(self.dense.weight, std=0.02)
        if self.dense.bias is not None:
            nn.init.zeros_(self.dense.bias)

    def forward(self, x):
        return self.norm(self.act(self.dense(x)))
