"""A sentence classifier over the mean of the token vectors (not BERT's [CLS] pooler): a complete
tasklight task in one file, outside tasklight's tree (docs/tasks.md, "Adding a task")."""

from __future__ import annotations

import random
from typing import Any

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from framework.task import Batch, StepOutput, Task, pad_tokens


class MeanPoolClassifier(Task):
    monitor, mode = "val/acc", "max"  # the metric that picks the best checkpoint

    def __init__(self, text_column: str = "text", label_column: str = "label",
                 labels: tuple[str, ...] = ("negative", "positive")) -> None:  # fmt: skip
        self.text_column, self.label_column, self.labels = text_column, label_column, labels

    def encode(self, rows: dict[str, list], indices: list[int], tokenizer: Any,
               max_length: int) -> dict[str, list]:  # fmt: skip
        enc = tokenizer(rows[self.text_column], truncation=True, max_length=max_length)
        out = {"input_ids": enc["input_ids"], "row": list(indices)}
        if self.label_column in rows:  # rows to predict have no label
            out["labels"] = [self.labels.index(str(y)) for y in rows[self.label_column]]
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> Batch:
        batch = pad_tokens(features, pad_id)  # input_ids, attention_mask, row
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features])
        return batch

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        return nn.Linear(hidden_size, len(self.labels))

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        logits = head((hidden * mask).sum(1) / mask.sum(1)).float()  # (B, H) mean -> (B, C)
        target = batch.get("labels")  # None when predicting
        loss = None if target is None else nn.functional.cross_entropy(logits, target)
        return StepOutput(loss, logits, preds=logits.argmax(-1), target=target)

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(len(self.labels), average="micro")})

    def decode(self, preds: dict[str, torch.Tensor]) -> dict[int, dict[str, Any]]:
        pairs = zip(preds["row"].tolist(), preds["preds"].tolist(), strict=True)
        return {row: {"label": self.labels[p]} for row, p in pairs}

    def text_row(self, text: str) -> dict[str, Any]:  # predict input=- reads lines of text
        return {self.text_column: text}

    # -- what the tests ask of the task (pytest ... --task my_tasks.mean_pool:MeanPoolClassifier)

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng, words = random.Random(seed), (["awful", "dull", "bad"], ["great", "fine", "superb"])
        ys = [i % 2 for i in range(n)]
        texts = [" ".join(["it was", *rng.choices(words[y], k=rng.randint(1, 4))]) for y in ys]
        return {self.text_column: texts, self.label_column: [self.labels[y] for y in ys]}

    def text_line(self, row: dict[str, Any]) -> str | None:
        return row[self.text_column]
