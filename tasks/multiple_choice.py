"""Multiple choice: a context (a question) and N candidate answers, one of them correct.

Each (context, candidate) pair is encoded as a sentence pair; the head scores each pair from its
[CLS] vector (BERT's pooler, then a linear layer to one score) and a softmax over the N scores
picks the answer, as ``BertForMultipleChoice`` does (the export). Metric: accuracy.

Columns may be nested (JSON lines): ``context_column=question.stem`` reads ``row["question"]
["stem"]``. The candidates are a list of strings, or of objects whose ``choice_text_key`` holds
the text (CommonsenseQA: ``{"label": "A", "text": "bank"}``). The gold answer is the index of the
correct candidate, or the ``choice_label_key`` value of it (CommonsenseQA's ``answerKey``
letters). Candidates are scored by position: two identical candidate texts stay two candidates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from framework.errors import UserError
from framework.registry import register_task
from framework.task import (
    Batch,
    Prediction,
    StepOutput,
    Task,
    chunk_offsets,
    is_missing,
    pad,
    require_columns,
)
from tasks.sequence import PooledHead


def field(value: Any, path: list[str]) -> Any:
    """``value[path[0]][path[1]]...``; None where a key is missing."""
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


@register_task("multiple_choice")
class MultipleChoice(Task):
    monitor = "val/acc"
    mode = "max"

    def __init__(
        self,
        context_column: str = "question",
        choices_column: str = "choices",
        label_column: str = "label",
        choice_text_key: str = "text",
        choice_label_key: str = "label",
        dropout: float = 0.1,
    ) -> None:
        self.context_column, self.choices_column = context_column, choices_column
        self.label_column = label_column
        self.choice_text_key, self.choice_label_key = choice_text_key, choice_label_key
        self.dropout = dropout
        self.num_choices: int | None = None
        self._rows: dict[str, dict[str, list]] = {}

    # -- data -----------------------------------------------------------------------------------

    def _column(self, rows: dict[str, list], path: str) -> list:
        top, *rest = path.split(".")
        return [field(v, rest) for v in rows[top]]

    def check_columns(self, columns: list[str], split: str) -> None:
        wanted = [self.context_column, self.choices_column]
        if split != "predict":
            wanted.append(self.label_column)
        hint = "task.context_column / task.choices_column / task.label_column (a.b: nested)"
        require_columns(columns, [w.split(".")[0] for w in wanted], split, hint)

    def _choices(self, value: Any, row: int) -> list[dict[str, str]]:
        """One row's candidates as [{"text", "label"}], in order."""
        if not isinstance(value, list) or not value:
            raise UserError(
                f"row {row + 1}: {self.choices_column!r} must hold a list of candidate answers"
            )
        out = []
        for i, c in enumerate(value):
            if isinstance(c, dict):
                text, label = c.get(self.choice_text_key), c.get(self.choice_label_key)
                if text is None:
                    raise UserError(
                        f"row {row + 1}: candidate {i + 1} has no {self.choice_text_key!r} "
                        "key; set task.choice_text_key"
                    )
            else:
                text, label = c, None
            out.append({"text": str(text), "label": str(label) if label is not None else str(i)})
        return out

    def setup(self, train_chunks: Iterable[dict[str, list]]) -> None:
        counts = set()
        for offset, chunk in chunk_offsets(train_chunks):
            choices = self._column(chunk, self.choices_column)
            counts.update(len(self._choices(c, offset + i)) for i, c in enumerate(choices))
        if len(counts) != 1:
            raise UserError(
                f"rows have {sorted(counts)} candidates; every row needs the same number"
            )
        self.num_choices = counts.pop()
        if self.num_choices < 2:
            raise UserError("multiple choice needs at least 2 candidates per row")

    def state_dict(self) -> dict[str, Any]:
        return {"num_choices": self.num_choices}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_choices = state["num_choices"]

    def keep_rows(self, split: str, rows: dict[str, list]) -> None:
        choices = self._column(rows, self.choices_column)
        self._rows[split] = {"choices": [self._choices(c, i) for i, c in enumerate(choices)]}

    def _gold(self, value: Any, choices: list[dict[str, str]], row: int) -> int:
        if is_missing(value):
            raise UserError(f"row {row + 1} has no answer in {self.label_column!r}")
        labels = [c["label"] for c in choices]
        if str(value) in labels:
            return labels.index(str(value))
        if str(value).isdigit() and int(value) < len(choices):
            return int(value)
        raise UserError(
            f"row {row + 1}: answer {value!r} is neither a candidate's {self.choice_label_key!r} "
            f"({', '.join(labels)}) nor an index; fix the data or task.label_column"
        )

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        contexts = self._column(rows, self.context_column)
        all_choices = self._column(rows, self.choices_column)
        labelled = self.label_column.split(".")[0] in rows
        golds = self._column(rows, self.label_column) if labelled else [None] * len(indices)
        out: dict[str, list] = {"input_ids": [], "token_type_ids": [], "lengths": [], "row": []}
        if labelled:
            out["labels"] = []
        for context, value, gold, row in zip(contexts, all_choices, golds, indices, strict=True):
            choices = self._choices(value, row)
            if len(choices) != self.num_choices:
                raise UserError(
                    f"row {row + 1} has {len(choices)} candidates; the task was set up with "
                    f"{self.num_choices}"
                )
            texts = [c["text"] for c in choices]
            enc = tokenizer(
                [str(context)] * len(texts), texts, truncation=True, max_length=max_length
            )
            # One feature per row: the pairs' tokens end to end (its length is its cost).
            out["input_ids"].append([t for ids in enc["input_ids"] for t in ids])
            types = enc.get("token_type_ids") or [[0] * len(ids) for ids in enc["input_ids"]]
            out["token_type_ids"].append([t for ids in types for t in ids])
            out["lengths"].append([len(ids) for ids in enc["input_ids"]])
            out["row"].append(row)
            if labelled:
                out["labels"].append(self._gold(gold, choices, row))
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> Batch:
        """(B x N, T) pairs: row b's candidates are rows b*N ... b*N + N - 1."""
        ids, types = [], []
        for f in features:
            start = 0
            for n in f["lengths"]:
                ids.append(f["input_ids"][start : start + n])
                types.append(f["token_type_ids"][start : start + n])
                start += n
        batch = {
            "input_ids": pad(ids, pad_id),
            "attention_mask": pad([[1] * len(s) for s in ids], 0),
            "token_type_ids": pad(types, 0),
            "row": torch.tensor([f["row"] for f in features], dtype=torch.long),
        }
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    # -- model ----------------------------------------------------------------------------------

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        return PooledHead.build(hidden_size, 1, self.dropout, pretrained)

    def output_positions(self, batch: Batch) -> torch.Tensor:
        cls = torch.zeros_like(batch["input_ids"], dtype=torch.bool)  # (B x N, T)
        cls[:, 0] = True
        return cls

    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        if hidden.dim() == 3:  # (B x N, T, H): the full output, not only the [CLS] rows
            hidden = hidden[:, 0]
        logits = head(hidden).float().view(-1, self.num_choices)  # (B, N)
        target = batch.get("labels")
        loss = F.cross_entropy(logits, target) if target is not None else None
        return StepOutput(loss, logits, logits.argmax(-1), target)

    def metrics(self, split: str) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.num_choices, average="micro")})

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        return {"row": batch["row"], "probs": out.logits.softmax(-1)}

    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        """Per row: the chosen candidate's index, label and text, and every candidate's score."""
        rows = self._rows.get("predict", {}).get("choices")
        out = {}
        for row, probs in zip(preds["row"].tolist(), preds["probs"].tolist(), strict=True):
            best = max(range(len(probs)), key=probs.__getitem__)
            record: dict[str, Any] = {"choice": best, "scores": [round(p, 6) for p in probs]}
            if rows is not None:
                record.update(label=rows[row][best]["label"], answer=rows[row][best]["text"])
            out[row] = record
        return out

    def hf_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        n = self.num_choices
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: batch[k].view(-1, n, batch[k].size(-1)) for k in keys}  # (B, N, T)

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        config = {
            **hf_encoder_config,
            "architectures": ["BertForMultipleChoice"],
            "classifier_dropout": self.dropout,
        }
        return config, head.hf_state(hf_encoder_state)

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        rng = random.Random(seed)
        good, bad = ["great", "lovely", "superb"], ["awful", "dull", "poor", "bad", "grim"]
        rows: dict[str, list] = {
            self.context_column: [],
            self.choices_column: [],
            self.label_column: [],
        }
        for _ in range(n):
            choices = rng.sample(bad, 2)
            answer = rng.randrange(3)
            choices.insert(answer, rng.choice(good))
            rows[self.context_column].append("which word is kind ?")
            rows[self.choices_column].append(choices)
            rows[self.label_column].append(answer)
        return rows

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(export_dir)
        model = transformers.AutoModelForMultipleChoice.from_pretrained(export_dir).eval()
        out = []
        for r in rows:
            choices = r[self.choices_column]
            enc = tok([r[self.context_column]] * len(choices), choices, return_tensors="pt",
                      padding=True)  # fmt: skip
            with torch.no_grad():
                out.append(int(model(**{k: v[None] for k, v in enc.items()}).logits[0].argmax()))
        return out

    def record_value(self, record: dict[str, Any]) -> Any:
        return record["choice"]
