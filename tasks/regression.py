"""Regression: one sentence or a sentence pair -> one real number (STS-B similarity).

Loss: mean squared error. Metrics: Pearson and Spearman correlation, and MSE; the final evaluation
draws predicted vs gold. Text columns, head and export as in ``tasks/sequence.py``; the export is
a ``BertForSequenceClassification`` with ``num_labels=1`` and ``problem_type=regression``.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.regression import MeanSquaredError, PearsonCorrCoef, SpearmanCorrCoef

from framework.errors import UserError
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, is_missing
from tasks.sequence import SequenceTask


class Scatter(Metric):
    """Keeps (prediction, gold) pairs; ``plot()`` draws them against the diagonal."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().float())
        self.target.append(target.detach().float())

    def compute(self) -> torch.Tensor:
        preds = _cat(self.preds)
        return torch.stack([preds, _cat(self.target)])  # (2, N)

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        preds, target = (val if val is not None else self.compute()).tolist()
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5, 5))
        ax.scatter(target, preds, s=6, alpha=0.4)
        lo, hi = min(preds + target), max(preds + target)
        ax.plot([lo, hi], [lo, hi], color="grey", linewidth=1, label="prediction = gold")
        ax.set_xlabel("gold")
        ax.set_ylabel("predicted")
        ax.set_title(f"{len(preds)} examples")
        ax.legend()
        return fig, ax


def _cat(x: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.cat(x) if x else torch.zeros(0)


@register_task("regression")
class Regression(SequenceTask):
    """The label column holds numbers (strings in CSV/TSV are parsed)."""

    monitor = "val/pearson"
    mode = "max"

    problem_type = "regression"

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        dropout: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__(text_column, text_pair_column, label_column, dropout, pooling)

    num_outputs = 1

    def encode_target(self, values: list[Any], indices: list[int]) -> list[float]:
        out = []
        for value, row in zip(values, indices, strict=True):
            if is_missing(value):
                raise UserError(
                    f"row {row + 1} has no value in column {self.label_column!r}; fill it in or "
                    "drop the row"
                )
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = math.nan
            if not math.isfinite(number):
                raise UserError(
                    f"row {row + 1}: {self.label_column!r} is {value!r}, not a finite number; "
                    "regression needs numeric targets (check task.label_column)"
                )
            out.append(number)
        return out

    def collate_target(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float)

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        logits = self.logits(head, hidden, batch)  # (B, 1)
        preds = logits[:, 0]
        target = batch.get("labels")
        loss = F.mse_loss(preds, target) if target is not None else None
        return StepOutput(loss, logits, preds, target)

    def metrics(self, split: str) -> MetricCollection:
        with warnings.catch_warnings():  # it keeps every prediction: known, evaluation sets
            warnings.filterwarnings(
                "ignore", message=".*will save all targets", category=UserWarning
            )
            spearman = SpearmanCorrCoef()
        return MetricCollection(
            {"pearson": PearsonCorrCoef(), "spearman": spearman, "mse": MeanSquaredError()}
        )

    def figures(self) -> dict[str, Metric]:
        return {"predicted_vs_gold": Scatter()}

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        return {"row": batch["row"], "value": out.preds}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        rows, values = preds["row"].tolist(), preds["value"].tolist()
        return {r: {"value": round(v, 6)} for r, v in zip(rows, values, strict=True)}

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rows, kinds = self.synthetic_texts(n, seed)
        rows[self.label_column] = [4.0 * y + 0.5 for y in kinds]
        return rows

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        return [float(logits[0]) for logits in self.hf_logits(export_dir, rows)]

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["value"]
