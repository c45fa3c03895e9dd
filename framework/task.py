"""The narrow contract every task implements, and small helpers tasks share.

A task is a plain object, not a LightningModule: it turns raw rows into features, collates them,
builds its head, computes loss and predictions from the encoder's output, declares its metrics,
decodes predictions and lays its weights out for a Hugging Face export. The generic
``framework.module.TaskModule`` does everything else (optimisation, logging, precision, DDP).

Rows are column-major ``dict[str, list]`` (what ``datasets.Dataset.map(batched=True)`` passes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torchmetrics import MetricCollection


class Task(Protocol):
    name: ClassVar[str]

    def setup(self, train_rows: dict[str, list]) -> None:
        """See the training rows once before encoding (e.g. to infer the label set)."""

    def check_columns(self, columns: list[str], split: str) -> None:
        """Raise ``UserError`` if a split lacks a column the task reads."""

    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        """Raw rows (and their row ids in the split) -> features (token ids, labels...).

        One row may give several features (windows of a long sentence)."""

    def collate(self, features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
        """Features -> a padded batch with ``input_ids`` and ``attention_mask`` (B, T)."""

    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        """The task head; ``pretrained`` holds the checkpoint's non-encoder tensors (pooler...)."""

    def step(
        self, head: nn.Module, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """hidden (B, T, H) -> {"loss": (), "logits": ..., "preds": ..., "target": ...}."""

    def metrics(self) -> MetricCollection:
        """Fresh torchmetrics objects, updated with ``(preds, target)``."""

    def decode(self, preds: torch.Tensor) -> list:
        """Predictions -> human-readable labels."""

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config.json dict, state dict) of the matching ``transformers`` AutoModelFor... class."""

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        """``n`` small valid raw rows; the registry contract tests run every task on them."""


class ReadsFewPositions(Protocol):
    """Optional: a task whose head reads the encoder's output at a few positions only."""

    def output_positions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T) bool: the positions ``step`` reads; it then gets ``hidden[mask]`` (M, H)."""


class DecodesAcrossBatches(Protocol):
    """Optional: a task whose example may span batches (NER windows of a long sentence).
    ``decode`` then gets the predictions of a whole predict run at once (rows keyed by row id)."""

    decodes_across_batches: ClassVar[bool]


class ReadsFiles(Protocol):
    """Optional: a task that reads a file format of its own (CoNLL columns, raw text), beside the
    tables (CSV, TSV, JSON lines) the data module reads for every task."""

    file_format: ClassVar[str]  # its name for data.format, e.g. "conll"
    file_suffixes: ClassVar[tuple[str, ...]]  # files read in it when data.format is null

    def read_file(self, path: Path) -> dict[str, list]:
        """Rows of ``path`` (column-major)."""


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest: (B, T) long."""
    out = torch.full((len(seqs), max(map(len, seqs))), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_tokens(features: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` (B, T) of a batch of features."""
    ids = [f["input_ids"] for f in features]
    batch = {
        "input_ids": pad(ids, pad_id),
        "attention_mask": pad([[1] * len(s) for s in ids], 0),
    }
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = pad([f["token_type_ids"] for f in features], 0)
    return batch
