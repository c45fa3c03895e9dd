"""Part-of-speech tagging: NER's token classification (CoNLL column files, sub-token alignment,
windows for long sentences, the same export), with word accuracy instead of entity F1.

Tags are plain labels (``NN``, ``VBZ``, ``(``...): no tag scheme, no entity spans. CoNLL-2003's
POS tags are its second column (``task.tag_field=1``, the default here).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import torch
from torchmetrics import MetricCollection

from framework.errors import UserError
from framework.registry import register_task
from framework.task import Prediction
from tasks.entities import EntityF1, _cat, _stitch
from tasks.ner import NER


@register_task("pos")
class POS(NER):
    """Word-level tags, scored by word accuracy (each word's first sub-token, as NER)."""

    monitor = "val/acc"
    mode = "max"

    def __init__(
        self,
        tokens_column: str = "tokens",
        tags_column: str = "tags",
        token_field: int = 0,
        tag_field: int = 1,
        labels: list[str] | None = None,
        label_all_tokens: bool = False,
        stride: int = 32,
        unknown_tag: str = "error",
        dropout: float = 0.1,
    ) -> None:
        super().__init__(tokens_column, tags_column, token_field, tag_field, "IOB2", labels,
                         label_all_tokens, stride, unknown_tag, dropout)  # fmt: skip
        self.scheme = "none"  # tags are labels, not entity spans

    def setup(self, train_chunks: Iterable[dict[str, list]]) -> None:
        if self.labels is None:  # the tags of the train split, sorted
            self.labels = sorted(
                {str(t) for chunk in train_chunks for seq in chunk[self.tags_column] for t in seq}
            )
        if not self.labels:
            raise UserError("the train split has no tags; check task.tags_column / tag_field")
        self._label_to_id = {t: i for i, t in enumerate(self.labels)}

    def _tag_ids(self, tags: list[str]) -> list[int]:
        out = []
        for t in map(str, tags):
            if t not in self._label_to_id:
                if self.unknown_tag == "error" or "O" not in self._label_to_id:
                    raise UserError(
                        f"tag {t!r} is not in the label set ({len(self.labels)} tags of the "
                        "train split); fix the data or add it to task.labels"
                    )
                t = "O"
            out.append(self._label_to_id[t])
        return out

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"acc": WordAccuracy()})

    def figures(self) -> dict[str, Any]:
        return {}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        words = _stitch(preds["packed"]).items()
        return {r: {"tags": [self.labels[p] for p, _ in w]} for r, w in words}

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        nouns, verbs = ["cat", "dog", "bird"], ["sat", "ran", "sang"]
        tokens = [["the", rng.choice(nouns), rng.choice(verbs), "today"] for _ in range(n)]
        return {self.tokens_column: tokens, self.tags_column: [["DT", "NN", "VBD", "NN"]] * n}


class WordAccuracy(EntityF1):
    """The fraction of words tagged right, from NER's packed per-sub-token predictions: a word
    seen in several windows counts once (its most central copy, ``_stitch``). EntityF1's state,
    updates and gather; only the score differs."""

    def __init__(self) -> None:
        super().__init__(labels=[])

    def compute(self) -> torch.Tensor:
        rows = _stitch(_cat(self.preds).view(-1, 4).cpu(), _cat(self.target).view(-1).cpu())
        pairs = [pg for words in rows.values() for pg in words]
        return torch.tensor(sum(p == g for p, g in pairs) / len(pairs) if pairs else 0.0)
