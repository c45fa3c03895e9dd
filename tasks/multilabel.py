"""Multi-label classification: one sentence or a pair -> any number of labels (GoEmotions).

The label column holds a list per row: a JSON list, or a string of labels separated by
``separator`` (e.g. ``"3,14"``). Loss: binary cross-entropy per label. A label is predicted when
its probability reaches ``threshold``. Metrics: micro and macro F1 and per-label F1 (``f1/NAME``).
Text columns, head and export as in ``tasks/sequence.py``; the export is a
``BertForSequenceClassification`` with ``problem_type=multi_label_classification``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import ClasswiseWrapper, MetricCollection
from torchmetrics.classification import MultilabelF1Score

from framework.errors import UserError
from framework.registry import register_task
from framework.task import Batch, Prediction, StepOutput, chunk_offsets, is_missing
from tasks.classification import check_label_spellings
from tasks.sequence import SequenceTask


@register_task("multilabel")
class MultiLabel(SequenceTask):
    """``labels``: the label values in id order (None: sorted values of the train split);
    ``label_names``: their display names (e.g. GoEmotions' emotions for ids 0-27)."""

    monitor = "val/f1_macro"
    mode = "max"

    problem_type = "multi_label_classification"

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "labels",
        labels: list[str] | None = None,
        label_names: list[str] | None = None,
        separator: str = ",",
        threshold: float = 0.5,
        dropout: float = 0.1,
        pooling: str = "cls",
    ) -> None:
        super().__init__(text_column, text_pair_column, label_column, dropout, pooling)
        if not 0.0 < threshold < 1.0:
            raise UserError(f"task.threshold must be in (0, 1), got {threshold}")
        if not separator:
            raise UserError("task.separator must not be empty (e.g. ',')")
        self.labels = [str(x) for x in labels] if labels is not None else None
        self.label_names = list(label_names) if label_names is not None else None
        self.separator, self.threshold = separator, threshold
        self._check()

    def _check(self) -> None:
        if self.labels is None:
            return
        dup = sorted({x for x in self.labels if self.labels.count(x) > 1})
        if dup:
            raise UserError(f"task.labels lists {', '.join(map(repr, dup))} more than once")
        if self.label_names is not None and len(self.label_names) != len(self.labels):
            raise UserError(
                f"task.label_names has {len(self.label_names)} names for {len(self.labels)} "
                "labels; give one name per value of task.labels"
            )

    @property
    def num_outputs(self) -> int:
        assert self.labels is not None, "call setup() first"
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return self.label_names or self.labels

    def column_types(self, split: str) -> dict[str, str]:
        return super().column_types(split) | {self.label_column: "text_or_list"}

    def _split(self, value: Any, row: int) -> list[str]:
        if isinstance(value, list):
            return [str(v).strip() for v in value]
        if is_missing(value):
            raise UserError(
                f"row {row + 1} has no value in column {self.label_column!r}; a row with no "
                "label needs an explicit one (e.g. neutral) or must be dropped"
            )
        return [v.strip() for v in str(value).split(self.separator) if v.strip()]

    def setup(self, train_chunks: Iterable[dict[str, list]]) -> None:
        if self.labels is None:
            seen = set()
            for offset, chunk in chunk_offsets(train_chunks):
                values = chunk[self.label_column]
                seen.update(x for i, v in enumerate(values) for x in self._split(v, offset + i))
            self.labels = sorted(seen)
            check_label_spellings(self.labels, self.label_column)
            self._check()
        if len(self.labels) < 2:
            raise UserError(
                f"multi-label classification needs at least 2 labels, found {self.labels}; "
                f"check task.label_column ({self.label_column!r}) or set task.labels"
            )
        self._label_to_id = {v: i for i, v in enumerate(self.labels)}

    def state_dict(self) -> dict[str, Any]:
        return {"labels": self.labels}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.labels = state["labels"]
        self._check()
        self._label_to_id = {v: i for i, v in enumerate(self.labels)}

    def encode_target(self, values: list[Any], indices: list[int]) -> list[list[int]]:
        out = []
        for value, row in zip(values, indices, strict=True):
            ids = []
            for label in self._split(value, row):
                if label not in self._label_to_id:
                    raise UserError(
                        f"row {row + 1}: label {label!r} is not in the label set; fix the data "
                        "or set task.labels"
                    )
                ids.append(self._label_to_id[label])
            out.append(ids)
        return out

    def collate_target(self, values: list) -> torch.Tensor:
        target = torch.zeros(len(values), self.num_outputs, dtype=torch.long)
        for i, ids in enumerate(values):
            target[i, ids] = 1
        return target  # (B, L) multi-hot

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        logits = self.logits(head, hidden, batch)  # (B, L)
        target = batch.get("labels")
        loss = None
        if target is not None:
            loss = F.binary_cross_entropy_with_logits(logits, target.float())
        return StepOutput(loss, logits, logits.sigmoid(), target)

    def metrics(self, split: str) -> MetricCollection:
        n, t = self.num_outputs, self.threshold
        return MetricCollection(
            {
                "f1_micro": MultilabelF1Score(n, threshold=t, average="micro"),
                "f1_macro": MultilabelF1Score(n, threshold=t, average="macro"),
                "f1": ClasswiseWrapper(
                    MultilabelF1Score(n, threshold=t, average="none"),
                    labels=list(self.names),
                    prefix="f1/",
                ),
            }
        )

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        return {"row": batch["row"], "probs": out.preds}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        out = {}
        for row, probs in zip(preds["row"].tolist(), preds["probs"].tolist(), strict=True):
            labels = [n for n, p in zip(self.names, probs, strict=True) if p >= self.threshold]
            scores = {n: round(p, 6) for n, p in zip(self.names, probs, strict=True)}
            out[row] = {"labels": labels, "scores": scores}
        return out

    def export_config(self) -> dict[str, Any]:
        names = self.names
        return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rows, kinds = self.synthetic_texts(n, seed)
        rows[self.label_column] = ["a,c" if y else "b" for y in kinds]  # one and two labels
        return rows

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        return [logits.sigmoid().tolist() for logits in self.hf_logits(export_dir, rows)]

    def record_value(self, record: dict[str, Any]) -> Any:
        return list(record["scores"].values())
