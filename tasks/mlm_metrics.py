"""The metrics of masked-LM pretraining (``tasks/mlm.py``): perplexity at the masked positions,
the unigram baseline (always predicting the most frequent token) and the spread of the encoder's
outputs, which falls to 0 when the encoder has collapsed."""

from __future__ import annotations

import torch
from torchmetrics import Metric
from torchmetrics.text import Perplexity


class MostFrequentAccuracy(Metric):
    """The accuracy of always predicting the most frequent target token: the unigram baseline.

    A masked-token accuracy no higher than this means the model predicts token frequencies
    only; its outputs are then about the same vector for every input (measured: BENCHMARKS.md),
    and fine-tuning from it does worse than from random weights."""

    full_state_update = False

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.add_state("counts", torch.zeros(vocab_size, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.counts += torch.bincount(target, minlength=self.counts.numel())

    def compute(self) -> torch.Tensor:
        return self.counts.max().float() / self.counts.sum().clamp(min=1)


class OutputSpread(Metric):
    """How much the encoder's outputs differ between tokens: the variance of the output vectors
    at the masked positions around their batch mean, over their mean square (0: every token gets
    the same vector, the collapse that keeps masked-token accuracy at the unigram baseline; a
    randomly initialised encoder gives about 1). Below ``COLLAPSED``, a warning says so."""

    full_state_update = False
    COLLAPSED = 0.05

    def __init__(self) -> None:
        super().__init__()
        self.add_state("deviation", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("square", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self, preds: torch.Tensor, target: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> None:
        if hidden is None:  # called without the encoder's outputs: nothing to measure
            return
        h = hidden.detach().double()  # (M, H)
        self.deviation += (h - h.mean(0)).pow(2).sum()
        self.square += h.pow(2).sum()

    def compute(self) -> torch.Tensor:
        spread = (self.deviation / self.square.clamp(min=1e-12)).float()
        if self.square > 0 and spread < self.COLLAPSED:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"the encoder's outputs have collapsed (output spread {spread:.3f}: about the same "
                "vector for every token); fine-tuning from it does worse than from random "
                "weights. Lower optim.lr, raise the warm-up, or train longer"
            )
        return spread


class MaskedPerplexity(Perplexity):
    """Perplexity of (M, V) logits at masked positions and their (M,) targets."""

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update(preds.unsqueeze(0).float(), target.unsqueeze(0))
