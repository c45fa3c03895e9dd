"""What the sequence-level tasks share (classification, regression, multi-label): one sentence
(``text``) or a sentence pair (``text`` + ``text_pair``) in, one vector of scores per row out.

Head: the family's pooler (``framework.heads``: BERT's dense + tanh; ModernBERT's dense, GELU and
norm) on the [CLS] vector, or (``pooling=mean``) on the mean of the real tokens' outputs, then a
linear layer; the export is a ``BertForSequenceClassification`` (its ``problem_type`` tells
transformers which loss), renamed into the family's own class where it has one. A [CLS] head
reads that position only (``output_positions``): the encoder's last layer computes that one
query per row.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from framework.errors import UserError
from framework.heads import BERT_HEADS, HeadStyle, Transform
from framework.task import Batch, Task, pad_tokens, require_columns


class PooledHead(nn.Module):
    """The family's pooler (BERT's tanh, or a ``Transform``), dropout, a linear layer."""

    def __init__(
        self, hidden_size: int, num_outputs: int, dropout: float, style: HeadStyle = BERT_HEADS
    ) -> None:
        super().__init__()
        self.tanh = style.pooler == "tanh"
        self.pooler = (
            nn.Linear(hidden_size, hidden_size) if self.tanh else Transform(hidden_size, style)
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)
        for lin in (self.pooler, self.classifier):
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, std=0.02)
                nn.init.zeros_(lin.bias)

    @classmethod
    def build(
        cls,
        hidden_size: int,
        num_outputs: int,
        dropout: float,
        pretrained: dict[str, torch.Tensor],
        style: HeadStyle = BERT_HEADS,
    ) -> PooledHead:
        """A head whose pooler is the checkpoint's trained one when it ships one (BERT)."""
        head = cls(hidden_size, num_outputs, dropout, style)
        if head.tanh and "pooler.dense.weight" in pretrained:
            head.pooler.weight.data.copy_(pretrained["pooler.dense.weight"])
            head.pooler.bias.data.copy_(pretrained["pooler.dense.bias"])
        return head

    def hf_state(self, hf_encoder_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ``BertFor...`` state dict: the encoder under ``bert.``, pooler (a ``Transform``:
        ``head.``, ModernBERT's name) and classifier."""
        state = {f"bert.{k}": v for k, v in hf_encoder_state.items()}
        if self.tanh:
            state["bert.pooler.dense.weight"] = self.pooler.weight
            state["bert.pooler.dense.bias"] = self.pooler.bias
        else:
            state |= {f"head.{k}": v for k, v in self.pooler.state_dict(keep_vars=True).items()}
        state["classifier.weight"] = self.classifier.weight
        state["classifier.bias"] = self.classifier.bias
        return state

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (B, H) row vectors -> (B, C)
        x = self.pooler(pooled)
        return self.classifier(self.dropout(torch.tanh(x) if self.tanh else x))


class SequenceTask(Task):
    """Text columns, encoding, head and export; subclasses add the target (the three abstract
    hooks below), the loss (``step``), the metrics and ``decode``."""

    problem_type: str  # BertForSequenceClassification's config.problem_type

    def __init__(
        self,
        text_column: str,
        text_pair_column: str | None,
        label_column: str,
        dropout: float,
        pooling: str = "cls",
    ) -> None:
        if pooling not in ("cls", "mean"):
            raise UserError(f"task.pooling must be cls or mean, not {pooling!r}")
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.dropout = dropout
        self.pooling = pooling

    # -- what a subclass declares (beside Task's step, metrics and decode) ----------------------

    @property
    @abstractmethod
    def num_outputs(self) -> int:
        """The width of the head's output (classes, regression targets, labels)."""

    @abstractmethod
    def encode_target(self, values: list[Any], indices: list[int]) -> list:
        """The label column's values -> what ``collate_target`` batches."""

    @abstractmethod
    def collate_target(self, values: list) -> torch.Tensor:
        """A batch's ``encode_target`` values -> the target tensor ``step`` compares with."""

    def export_config(self) -> dict[str, Any]:
        """Label names etc. for config.json."""
        return {}

    # -- data -----------------------------------------------------------------------------------

    def check_columns(self, columns: list[str], split: str) -> None:
        wanted = [self.text_column, self.text_pair_column]
        if split != "predict":
            wanted.append(self.label_column)
        hint = "task.text_column / task.text_pair_column / task.label_column"
        require_columns(columns, wanted, split, hint)

    def column_types(self, split: str) -> dict[str, str]:
        columns = {self.text_column: "text", self.label_column: "text"}
        return columns | ({self.text_pair_column: "text"} if self.text_pair_column else {})

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        texts = [_text(t) for t in rows[self.text_column]]
        pairs = [_text(t) for t in rows[self.text_pair_column]] if self.text_pair_column else None
        # No attention mask (collate builds it), and token types only for pairs (one text: all
        # zeros, what the encoder uses without them): less to build and store per token.
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length,
                        return_attention_mask=False,
                        return_token_type_ids=None if pairs is not None else False)  # fmt: skip
        out = {"input_ids": enc["input_ids"], "row": list(indices)}
        if self.label_column in rows:
            out["labels"] = self.encode_target(rows[self.label_column], indices)
        if "token_type_ids" in enc:
            out["token_type_ids"] = enc["token_type_ids"]
        return out

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> Batch:
        batch = pad_tokens(features, pad_id)
        if "labels" in features[0]:
            batch["labels"] = self.collate_target([f["labels"] for f in features])
        return batch

    def text_row(self, text: str) -> dict[str, Any]:
        if self.text_pair_column:  # a pair on one line: the two texts separated by a tab
            first, _, second = text.partition("\t")
            return {self.text_column: first, self.text_pair_column: second}
        return {self.text_column: text}

    def tokenizer_texts(self, rows: dict[str, list]) -> list[str]:
        columns = [self.text_column, self.text_pair_column]
        return [_text(t) for c in columns if c for t in rows[c]]

    # -- model ----------------------------------------------------------------------------------

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        style = self.head_style
        return PooledHead.build(hidden_size, self.num_outputs, self.dropout, pretrained, style)

    def output_positions(self, batch: Batch) -> torch.Tensor | None:
        """The [CLS] position of every row: the encoder's last layer computes only these (mean
        pooling: every output, None)."""
        if self.pooling == "mean":
            return None
        cls = torch.zeros_like(batch["input_ids"], dtype=torch.bool)  # (B, T)
        cls[:, 0] = True
        return cls

    def logits(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
        if hidden.dim() == 3 and self.pooling == "mean":  # (B, T, H) -> mean of the real tokens
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            hidden = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        elif hidden.dim() == 3:  # (B, T, H): the full output, not only the [CLS] rows
            hidden = hidden[:, 0]
        return head(hidden).float()  # (B, C)

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]] | None:
        style = self.head_style
        if self.pooling == "mean" and style.pooler == "tanh":
            return None  # BertForSequenceClassification pools the [CLS] vector only
        config = {
            **hf_encoder_config,
            "architectures": ["BertForSequenceClassification"],
            "num_labels": self.num_outputs,
            "problem_type": self.problem_type,
            "classifier_dropout": self.dropout,
            **self.export_config(),
        }
        if style.pooler != "tanh":  # ModernBERT's keys for its head
            config |= {"classifier_pooling": self.pooling, "classifier_activation": style.act,
                       "classifier_bias": style.dense_bias}  # fmt: skip
        return config, head.hf_state(hf_encoder_state)

    def synthetic_texts(self, n: int, seed: int) -> tuple[dict[str, list], list[int]]:
        """``n`` rows of text (two kinds, alternating) and each row's kind (0 or 1)."""
        rng = random.Random(seed)
        good, bad = ["great", "lovely", "superb", "fine"], ["awful", "dull", "poor", "bad"]
        rows: dict[str, list] = {self.text_column: []}
        if self.text_pair_column:
            rows[self.text_pair_column] = []
        kinds = [i % 2 for i in range(n)]
        for y in kinds:
            words = rng.choices(good if y else bad, k=rng.randint(2, 6))
            rows[self.text_column].append("the movie was " + " ".join(words))
            if self.text_pair_column:
                rows[self.text_pair_column].append("was it any good ?")
        return rows, kinds

    def hf_logits(self, export_dir: Path, rows: list[dict[str, Any]]) -> list[torch.Tensor]:
        """The exported ``BertForSequenceClassification``'s logits (C,) for each raw row."""
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(export_dir)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(export_dir)
        pair = self.text_pair_column
        with torch.no_grad():
            return [
                model.eval()(
                    **tok(r[self.text_column], r[pair] if pair else None, return_tensors="pt")
                ).logits[0]
                for r in rows
            ]

    def text_line(self, row: dict[str, Any]) -> str | None:
        pair = self.text_pair_column
        return f"{row[self.text_column]}\t{row[pair]}" if pair else row[self.text_column]


def _text(value: Any) -> str:
    """A text field as the tokenizer reads it: a missing one (JSON null) is empty, not "None"
    (the data module warns about empty texts, with their count)."""
    return "" if value is None else str(value)
