"""Sequence classification: one sentence (``text``) or a sentence pair (``text`` + ``text_pair``).

Head: BERT's pooler (dense + tanh on the [CLS] vector) then a linear classifier, so the export is a
``BertForSequenceClassification``. The head reads the [CLS] position only (``output_positions``):
the encoder's last layer computes that one query per row. Metrics: accuracy, macro-F1 and
Matthews correlation.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassMatthewsCorrCoef,
)

from framework.errors import UserError
from framework.registry import register_task
from framework.task import pad_tokens


class ClassificationHead(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_labels)
        for lin in (self.pooler, self.classifier):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, cls: torch.Tensor) -> torch.Tensor:  # (B, H) [CLS] vectors -> (B, C)
        pooled = torch.tanh(self.pooler(cls))  # (B, H)
        return self.classifier(self.dropout(pooled))


def _is_missing(value: Any) -> bool:
    """No label: JSON null or NaN, an empty field."""
    return (
        value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()
    )


@register_task("classification")
class Classification:
    """Labels are read as strings; ``labels`` fixes their set and order (inferred when None)."""

    def __init__(
        self,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        labels: list[str] | None = None,
        label_names: list[str] | None = None,
        dropout: float = 0.1,
    ) -> None:
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.labels = [str(x) for x in labels] if labels is not None else None
        self.label_names = list(label_names) if label_names is not None else None
        self.dropout = dropout
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
    def num_labels(self) -> int:
        assert self.labels is not None, "call setup() first"
        return len(self.labels)

    def setup(self, train_rows: dict[str, list]) -> None:
        if self.labels is None:
            values = train_rows[self.label_column]
            missing = [i for i, v in enumerate(values) if _is_missing(v)]
            if missing:
                raise UserError(
                    f"{len(missing)} train rows have no value in column {self.label_column!r} "
                    f"(first: row {missing[0] + 1}); fill them in or drop those rows"
                )
            self.labels = sorted({str(v) for v in values})
            self._check_labels()
            self._check_label_names()
        if len(self.labels) < 2:
            raise UserError(
                f"classification needs at least 2 labels, found {self.labels}; check "
                f"task.label_column ({self.label_column!r}) or set task.labels"
            )
        self._label_to_id = {v: i for i, v in enumerate(self.labels)}

    def check_columns(self, columns: list[str], split: str) -> None:
        wanted = [self.text_column, self.text_pair_column, self.label_column]
        for col in filter(None, wanted):
            if col not in columns:
                raise UserError(
                    f"column {col!r} not found in the {split} split (columns: "
                    f"{', '.join(columns)}); set task.text_column / task.text_pair_column / "
                    "task.label_column"
                )

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        texts = [str(t) for t in rows[self.text_column]]
        pairs = [str(t) for t in rows[self.text_pair_column]] if self.text_pair_column else None
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
        labels = []
        for v in rows[self.label_column]:
            if str(v) not in self._label_to_id:
                raise UserError(
                    f"label {v!r} is not in the label set {self.labels}; fix the data or "
                    "set task.labels"
                )
            labels.append(self._label_to_id[str(v)])
        out = {"input_ids": enc["input_ids"], "labels": labels}
        if "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        batch = pad_tokens(features, pad_id)
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        head = ClassificationHead(hidden_size, self.num_labels, self.dropout)
        if "pooler.dense.weight" in pretrained:  # BERT checkpoints ship a trained pooler
            head.pooler.weight.data.copy_(pretrained["pooler.dense.weight"])
            head.pooler.bias.data.copy_(pretrained["pooler.dense.bias"])
        return head

    def output_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The [CLS] position of every row: the encoder's last layer computes only these."""
        cls = torch.zeros_like(batch["input_ids"], dtype=torch.bool)  # (B, T)
        cls[:, 0] = True
        return cls

    def step(
        self, head: nn.Module, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        if hidden.dim() == 3:  # (B, T, H): the full output, not only the [CLS] rows
            hidden = hidden[:, 0]
        logits = head(hidden).float()  # (B, C)
        target = batch["labels"]  # (B,)
        return {
            "loss": F.cross_entropy(logits, target),
            "logits": logits,
            "preds": logits.argmax(-1),
            "target": target,
        }

    def metrics(self) -> MetricCollection:
        c = self.num_labels
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(c, average="micro"),
                "f1": MulticlassF1Score(c, average="macro"),
                "mcc": MulticlassMatthewsCorrCoef(c),
            }
        )

    def decode(self, preds: torch.Tensor) -> list[str]:
        names = self.label_names or self.labels
        return [names[i] for i in preds.tolist()]

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        names = self.label_names or self.labels
        config = {
            **hf_encoder_config,
            "architectures": ["BertForSequenceClassification"],
            "id2label": dict(enumerate(names)),
            "label2id": {n: i for i, n in enumerate(names)},
            "problem_type": "single_label_classification",
            "classifier_dropout": self.dropout,
        }
        state = {f"bert.{k}": v for k, v in hf_encoder_state.items()}
        state["bert.pooler.dense.weight"] = head.pooler.weight
        state["bert.pooler.dense.bias"] = head.pooler.bias
        state["classifier.weight"] = head.classifier.weight
        state["classifier.bias"] = head.classifier.bias
        return config, state

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        good, bad = ["great", "lovely", "superb", "fine"], ["awful", "dull", "poor", "bad"]
        rows: dict[str, list] = {self.text_column: [], self.label_column: []}
        if self.text_pair_column:
            rows[self.text_pair_column] = []
        labels = self.labels or ["0", "1"]
        for i in range(n):
            y = i % 2
            words = rng.choices(good if y else bad, k=rng.randint(2, 6))
            rows[self.text_column].append("the movie was " + " ".join(words))
            rows[self.label_column].append(labels[y % len(labels)])
            if self.text_pair_column:
                rows[self.text_pair_column].append("was it any good ?")
        return rows
