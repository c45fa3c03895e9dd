"""Sequence classification: one sentence (``text``) or a sentence pair (``text`` + ``text_pair``),
one label per row (text columns, head and export: ``tasks/sequence.py``). Metrics: accuracy,
macro-F1 and Matthews correlation, plus the F1 of one class (``positive_label``, as GLUE reports
MRPC and QQP); the final evaluation draws a confusion matrix.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)

from framework.errors import UserError
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, chunk_offsets, is_missing
from tasks.sequence import SequenceTask


class PositiveClassF1(BinaryF1Score):
    """F1 of one class against the others (GLUE's MRPC/QQP F1), from class-id predictions."""

    def __init__(self, positive: int) -> None:
        super().__init__()
        self.positive = positive

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        super().update((preds == self.positive).long(), (target == self.positive).long())


@register_task("classification")
class Classification(SequenceTask):
    """Labels are read as strings; ``labels`` fixes their set and order (inferred when None)."""

    monitor = "val/acc"
    mode = "max"

    problem_type = "single_label_classification"

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        labels: list[str] | None = None,
        label_names: list[str] | None = None,
        positive_label: str | None = None,
        dropout: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__(text_column, text_pair_column, label_column, dropout, pooling)
        self.labels = [str(x) for x in labels] if labels is not None else None
        self.label_names = list(label_names) if label_names is not None else None
        self.positive_label = str(positive_label) if positive_label is not None else None
        if self.labels is not None:
            self._check_labels()
        self._check_label_names()

    def _check_labels(self) -> None:
        dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
        if dup:
            raise UserError(
                f"task.labels lists {', '.join(map(repr, dup))} more than once; give each "
                "label once"
            )
        if "" in self.labels:
            raise UserError("task.labels holds an empty label ''; remove it")

    def _check_label_names(self) -> None:
        if self.labels is not None and self.label_names is not None:
            if len(self.label_names) != len(self.labels):
                raise UserError(
                    f"task.label_names has {len(self.label_names)} names for "
                    f"{len(self.labels)} labels; give one name per value of task.labels"
                )

    @property
    def num_outputs(self) -> int:
        assert self.labels is not None, "call setup() first"
        return len(self.labels)

    def setup(self, train_chunks: Iterable[dict[str, list]]) -> None:
        if self.labels is None:
            seen, missing = set(), []
            for offset, chunk in chunk_offsets(train_chunks):
                values = chunk[self.label_column]
                missing += [offset + i for i, v in enumerate(values) if is_missing(v)]
                seen.update(str(v) for v in values)
            if missing:
                raise UserError(
                    f"{len(missing)} train rows have no value in column {self.label_column!r} "
                    f"(first: row {missing[0] + 1}); fill them in or drop those rows"
                )
            self.labels = sorted(seen)
            check_label_spellings(self.labels, self.label_column)
            self._check_labels()
            self._check_label_names()
        if len(self.labels) < 2:
            raise UserError(
                f"classification needs at least 2 labels, found {self.labels}; check "
                f"task.label_column ({self.label_column!r}) or set task.labels"
            )
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise UserError(
                f"task.positive_label={self.positive_label!r} is not a label ({self.labels})"
            )
        self._label_to_id = {v: i for i, v in enumerate(self.labels)}

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = state["labels"]
        self._check_label_names()
        self._label_to_id = {v: i for i, v in enumerate(self.labels)}

    def encode_target(self, values: list[Any], indices: list[int]) -> list[int]:
        labels = []
        for v in values:
            if str(v) not in self._label_to_id:
                raise UserError(
                    f"label {v!r} is not in the label set {self.labels}; fix the data or "
                    "set task.labels"
                )
            labels.append(self._label_to_id[str(v)])
        return labels

    def collate_target(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        logits = self.logits(head, hidden, batch)  # (B, C)
        target = batch.get("labels")  # (B,)
        loss = F.cross_entropy(logits, target) if target is not None else None
        return StepOutput(loss, logits, logits.argmax(-1), target)

    def metrics(self, split: str) -> MetricCollection:
        c = self.num_outputs
        metrics: dict[str, Metric] = {
            "acc": MulticlassAccuracy(c, average="micro"),
            "f1": MulticlassF1Score(c, average="macro"),
            "mcc": MulticlassMatthewsCorrCoef(c),
        }
        if self.positive_label is not None:
            metrics["f1_positive"] = PositiveClassF1(self.labels.index(self.positive_label))
        return MetricCollection(metrics)

    def figures(self) -> dict[str, Metric]:
        """The confusion matrix, up to ``MAX_DRAWN`` classes: beyond, its cells cannot be read
        and drawing them costs minutes (320 classes) to hours and gigabytes (10,000)."""
        if len(self.labels) > MAX_DRAWN:
            return {}
        return {"confusion_matrix": NamedConfusionMatrix(self.label_names or self.labels)}

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        return {"row": batch["row"], "probs": out.logits.softmax(-1)}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        names = self.label_names or self.labels
        out = {}
        for row, probs in zip(preds["row"].tolist(), preds["probs"].tolist(), strict=True):
            best = max(range(len(probs)), key=probs.__getitem__)
            scores = {n: round(p, 6) for n, p in zip(names, probs, strict=True)}
            out[row] = {"label": names[best], "scores": scores}
        return out

    def export_config(self) -> dict[str, Any]:
        names = self.label_names or self.labels
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rows, kinds = self.synthetic_texts(n, seed)
        labels = self.labels or ["0", "1"]
        rows[self.label_column] = [labels[y % len(labels)] for y in kinds]
        return rows

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        import transformers

        names = transformers.AutoConfig.from_pretrained(export_dir).id2label
        return [names[int(logits.argmax())] for logits in self.hf_logits(export_dir, rows)]

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["label"]


def check_label_spellings(labels: list[str], column: str) -> None:
    """A ``UserError`` for two labels that differ only by case or surrounding spaces (``Pos``,
    ``pos ``): read from the data, they would silently become two classes."""
    seen: dict[str, str] = {}
    for label in labels:
        key = label.strip().casefold()
        if key in seen:
            raise UserError(
                f"labels {seen[key]!r} and {label!r} in column {column!r} differ only by case or "
                "surrounding spaces, so they would be two classes; spell them one way in the "
                "data, or list both in task.labels to keep them apart"
            )
        seen[key] = label


# The most classes a confusion matrix is drawn for (docs/tasks.md).
MAX_DRAWN = 50


class NamedConfusionMatrix(MulticlassConfusionMatrix):
    """The confusion matrix, drawn with the label names (rows: gold, columns: predicted)."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(len(names))
        self.names = names

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        return super().plot(val, ax, labels=self.names)
