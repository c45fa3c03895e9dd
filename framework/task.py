"""The contract every task implements, and small helpers tasks share.

A task is a plain object, not a LightningModule: it turns raw rows into features, collates them,
builds its head, computes loss and predictions from the encoder's output, declares its metrics,
decodes predictions and lays its weights out for a Hugging Face export. The generic
``framework.module.TaskModule`` does everything else (optimisation, logging, precision, DDP).

``Task`` declares every hook ``framework/`` calls. Six are abstract, the small core every task
writes: ``encode``, ``collate``, ``build_head``, ``step``, ``metrics`` and ``decode`` (what a
prediction is). Every other hook has a default that does nothing special (no column check, no
setup, no ``transformers`` export class...). ``framework/`` calls only these, so a reader of this
file knows everything a task can be asked. The class also declares its monitored metric and the
direction (``monitor``, ``mode``); its constructor's defaults are its options, so a task needs
no YAML (``conf/task/NAME.yaml`` documents the shipped ones and may set what differs).

Rows are column-major ``dict[str, list]`` (what ``datasets.Dataset.map(batched=True)`` passes).
Every feature carries ``row``, the id of the row it came from in its split (one row may give
several features: windows of a long sentence or context); ``pad_tokens`` collates it.
Splits: ``train``, ``val``, ``test`` and ``predict`` (inputs without labels).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection

from framework.errors import UserError
from framework.heads import BERT_HEADS, HeadStyle

Batch = dict[str, torch.Tensor]
Prediction = dict[str, torch.Tensor]  # tensors with one leading entry per feature (or per item)


@dataclass
class StepOutput:
    """What ``Task.step`` returns: the fields the framework reads, the same for every task."""

    loss: torch.Tensor | None  # scalar; None for a batch without labels (predict)
    logits: torch.Tensor  # compared with the exported ``transformers`` model's (``hf_outputs``)
    preds: Any  # what ``update_metrics`` and ``prediction`` read (a tensor, or a dict of them)
    target: Any = None  # the gold values ``update_metrics`` compares with; None without labels
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # a task's own (MLM: hidden)


class Task(ABC):
    name: ClassVar[str]  # set by ``register_task`` (or the import path a run names it by)
    # The metric that selects the best checkpoint, and whether higher (max) or lower is better;
    # ``task.monitor`` / ``task.mode`` override them.
    monitor: ClassVar[str] = "val/loss"
    mode: ClassVar[str] = "min"

    # -- declarations (class attributes) ---------------------------------------------------------

    # A file format of the task's own (``data.format=NAME``), beside the tables (CSV, TSV, JSON
    # lines) the data module reads for every task, and the suffixes that name it.
    file_format: ClassVar[str | None] = None
    file_suffixes: ClassVar[tuple[str, ...]] = ()
    # Features are packed rows of several pieces (``segment_ids``): the data module logs how full.
    packs_rows: ClassVar[bool] = False
    # What the encoder's family puts before an output layer (BERT's tanh pooler, ModernBERT's
    # dense + act + norm): set by ``framework.module.assemble`` before ``build_head``.
    head_style: HeadStyle = BERT_HEADS

    # -- data -----------------------------------------------------------------------------------

    def check_columns(self, columns: list[str], split: str) -> None:
        """Raise ``UserError`` if a split lacks a column the task reads (``predict``: the input
        columns only); ``require_columns`` helps. By default ``encode`` meets the gap."""
        return None  # optional hook: no check by default

    def column_types(self, split: str) -> dict[str, str]:
        """Column -> the values the task reads from it: ``"text"`` (one text, number or bool
        per row, read as its text), ``"list"`` (a list of those per row: NER's words) or
        ``"text_or_list"``. Checked against each split's Arrow schema before encoding, so a
        column of another shape (a list where a text is read, a struct) is one error line
        naming the file and column. Default: nothing checked."""
        return {}

    def setup(self, train_chunks: Iterable[dict[str, list]]) -> None:
        """See the training rows once before encoding (e.g. to infer the label set), as an
        iterator of column-major chunks (``framework.readers.CHUNK_ROWS`` rows each, the last
        shorter), in file order: a split of any size is never in memory whole. Iterate it once;
        ``chunk_offsets`` numbers the rows for error messages."""
        return None  # optional hook: nothing to learn by default

    def state_dict(self) -> dict[str, Any]:
        """What ``setup`` learned (label set, tag scheme), saved with checkpoints: ``predict`` and
        ``evaluate`` restore it instead of reading the training data."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (instead of ``setup``)."""
        return None  # optional hook: nothing to do by default

    def use_tokenizer(self, tokenizer: Any) -> None:
        """See the tokenizer once before encoding (special token ids, vocabulary size)."""
        return None  # optional hook: nothing to do by default

    def keep_rows(self, split: str, rows: dict[str, list]) -> None:
        """The raw rows of ``split`` (after subsetting), in row-id order: a task whose ``decode``
        or metrics need raw fields (a QA context's text, the gold answers) keeps them here."""
        return None  # optional hook: nothing to do by default

    @abstractmethod
    def encode(
        self, rows: dict[str, list], indices: list[int], tokenizer: Any, max_length: int
    ) -> dict[str, list]:
        """Raw rows (and their row ids in the split) -> features, each with ``row`` (its row id)
        and ``input_ids``. Rows without the label columns (``predict``) give features without
        labels."""

    @abstractmethod
    def collate(self, features: list[dict[str, Any]], pad_id: int) -> Batch:
        """Features -> a padded batch with ``input_ids``, ``attention_mask`` (B, T) and ``row``."""

    def read_chunks(self, path: Path) -> Iterator[dict[str, list]]:
        """Rows of ``path`` in ``file_format`` (only called for a task that declares one), as
        column-major chunks read incrementally (``framework.readers.read_lines`` gives the
        lines with UTF-8 and NUL errors that name the line). Default: ``read_file``'s rows as
        one chunk, for a format that is only read whole (SQuAD's one JSON document)."""
        if type(self).read_file is Task.read_file:
            raise UserError(f"task {self.name!r} reads no file format of its own")
        yield self.read_file(path)

    def read_file(self, path: Path) -> dict[str, list]:
        """All rows of ``path`` in ``file_format`` in one dict: a task implements this or
        ``read_chunks`` (this default gathers ``read_chunks``)."""
        from framework.readers import gather

        if type(self).read_chunks is Task.read_chunks:
            raise UserError(f"task {self.name!r} reads no file format of its own")
        return gather(self.read_chunks(path), path)

    def text_row(self, text: str) -> dict[str, Any]:
        """One raw row from a line of plain text (``framework.predict input=-``)."""
        raise UserError(
            f"task {self.name!r} needs structured input: give JSON lines (one object per line)"
        )

    def tokenizer_texts(self, rows: dict[str, list]) -> list[str]:
        """The texts a tokenizer is trained on (``model.train_tokenizer``)."""
        raise UserError(f"task {self.name!r} has no text to train a tokenizer on")

    # -- model ----------------------------------------------------------------------------------

    @abstractmethod
    def build_head(self, hidden_size: int, pretrained: dict[str, torch.Tensor]) -> nn.Module:
        """The task head; ``pretrained`` holds the checkpoint's non-encoder tensors (pooler...)."""

    def tie_weights(self, head: nn.Module, encoder: nn.Module) -> None:
        """Share weights between head and encoder (an MLM decoder uses the input embeddings)."""
        return None  # optional hook: nothing to do by default

    def prepare_batch(self, batch: Batch, stage: str) -> Batch:
        """The batch the encoder sees (``stage``: train, val, test or predict); masked LM masks
        tokens here."""
        return batch

    def output_positions(self, batch: Batch) -> torch.Tensor | None:
        """(B, T) bool: the only positions ``step`` reads; it then gets ``hidden[mask]`` (M, H)
        and the encoder's last layer computes those rows only. None: all positions."""
        return None

    @abstractmethod
    def step(self, head: nn.Module, hidden: torch.Tensor, batch: Batch) -> StepOutput:
        """hidden (B, T, H) or (M, H) -> loss, logits, predictions and targets (``loss`` and
        ``target`` are None for a batch without labels: predict)."""

    # -- metrics and outputs ------------------------------------------------------------------

    @abstractmethod
    def metrics(self, split: str) -> MetricCollection:
        """Fresh torchmetrics objects for ``split`` (val or test), fed by ``update_metrics``."""

    def update_metrics(self, metrics: MetricCollection, out: StepOutput, batch: Batch) -> None:
        """Feed one evaluation batch's ``step`` output to ``metrics``."""
        metrics.update(out.preds, out.target)

    def figures(self) -> dict[str, Metric]:
        """Metrics whose ``plot()`` draws a figure of the final evaluation (a confusion matrix),
        fed like ``metrics``; each is written as ``NAME.png`` in the run directory."""
        return {}

    def prediction(self, out: StepOutput, batch: Batch) -> Prediction:
        """What a predict run keeps of one batch (tensors, concatenated over batches): by
        default each feature's row id and ``preds``."""
        return {"row": batch["row"], "preds": out.preds}

    @abstractmethod
    def decode(self, preds: Prediction) -> dict[int, dict[str, Any]]:
        """A whole predict run's ``prediction``s -> row id: a JSON-ready record (label, scores,
        tags, answer...)."""

    def hf_inputs(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The exported ``transformers`` model's inputs for a (prepared) batch."""
        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {k: batch[k] for k in keys if k in batch}

    def hf_outputs(self, output: Any, batch: Batch) -> torch.Tensor:
        """The exported ``transformers`` model's output in the layout of ``step``'s logits."""
        return output.logits

    def hf_export(
        self, hf_encoder_config: dict, hf_encoder_state: dict[str, torch.Tensor], head: nn.Module
    ) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """(config.json dict, state dict) of the matching ``transformers`` AutoModelFor... class.
        None (the default): no such class; the export holds the encoder alone (``AutoModel``)
        and the tokenizer, and the head stays in the checkpoints."""
        return None

    def export_files(self, hf_config: dict) -> dict[str, str]:
        """More files of the export (relative path: text), beside ``config.json`` (whose dict
        ``hf_config`` is): a sentence-transformers model's ``modules.json``... None by default."""
        return {}

    # -- what the tests ask of a task (optional: a test a task declares nothing for is skipped) --

    def synthetic_rows(self, n: int, seed: int) -> dict[str, list]:
        """``n`` small valid raw rows; the contract tests run every task that declares them."""
        raise NotImplementedError

    def predict_rows(self, n: int, seed: int) -> dict[str, list]:
        """Raw rows to predict in the tests (default: ``synthetic_rows``); rows of different
        lengths show that predictions come back in input order."""
        return self.synthetic_rows(n, seed)

    def hf_predictions(self, export_dir: Path, rows: list[dict[str, Any]]) -> list:
        """What the exported ``transformers`` model predicts for each raw row, in the terms of
        ``record_value``: the tests compare it with ``framework.predict``'s records."""
        raise NotImplementedError

    def record_value(self, record: dict[str, Any]) -> Any:
        """The field of a ``decode`` record that ``hf_predictions`` is compared with; a float
        or a list of floats is compared within 1e-4, anything else exactly."""
        raise NotImplementedError

    def text_line(self, row: dict[str, Any]) -> str | None:
        """A raw row as a line of plain text that ``text_row`` reads back, or None (the row
        goes to ``framework.predict input=-`` as a JSON line)."""
        return None


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad integer sequences to the longest: (B, T) long."""
    out = torch.full((len(seqs), max(map(len, seqs))), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


def pad_tokens(features: list[dict[str, Any]], pad_id: int) -> Batch:
    """``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T) and ``row`` (B,) of a batch."""
    ids = [f["input_ids"] for f in features]
    batch = {
        "input_ids": pad(ids, pad_id),
        "attention_mask": pad([[1] * len(s) for s in ids], 0),
        "row": torch.tensor([f["row"] for f in features], dtype=torch.long),
    }
    if "token_type_ids" in features[0]:
        batch["token_type_ids"] = pad([f["token_type_ids"] for f in features], 0)
    return batch


def chunk_offsets(chunks: Iterable[dict[str, list]]) -> Iterator[tuple[int, dict[str, list]]]:
    """(row id of the chunk's first row, chunk) of each chunk ``Task.setup`` gets."""
    offset = 0
    for chunk in chunks:
        yield offset, chunk
        offset += len(next(iter(chunk.values()), []))


def require_columns(columns: list[str], wanted: list[str | None], split: str, hint: str) -> None:
    """``UserError`` naming the first of ``wanted`` missing from ``columns`` and the override."""
    for col in filter(None, wanted):
        if col not in columns:
            raise UserError(
                f"column {col!r} not found in the {split} split (columns: "
                f"{', '.join(columns)}); set {hint}"
            )


def is_missing(value: Any) -> bool:
    """No value: JSON null, NaN, an empty field."""
    import math

    return (
        value is None or (isinstance(value, float) and math.isnan(value)) or not str(value).strip()
    )
