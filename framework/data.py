"""The data module: read the splits (local files through ``framework.readers``, or a Hugging
Face ``datasets`` hub id), let the task encode the rows, cache the encoded splits (``datasets``'
``Dataset.map``), and serve dynamically padded batches in the order ``framework.sampling`` deals.
It owns the position inside the training epoch that checkpoints save (resume).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
from datasets import Dataset
from torch.utils.data import DataLoader

from framework.cache_keys import encoding_inputs, fingerprint
from framework.checks import check_data_args
from framework.errors import UserError
from framework.loaders import make_loader
from framework.prepared import (
    FORMAT_VERSION,
    Staging,
    encode_split,
    feature_lengths,
    locked,
    open_split,
    prepared_dir,
    process_ranks,
    read_manifest,
    wait_for,
)
from framework.readers import CHUNK_ROWS
from framework.sampling import (
    EpochPosition,
    batches_per_rank,
    token_budget_batches,
)
from framework.sources import Sources, check_column_types, warn_empty_texts
from framework.task import Task

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@contextmanager
def reads_columns(split: str, columns: list[str]) -> Iterator[None]:
    """Turn a ``KeyError`` for a column the split does not have, raised by the task (a plug-in
    without ``check_columns`` reading ``rows["review"]``), into one line naming the columns."""
    try:
        yield
    except KeyError as e:
        key = e.args[0] if e.args else None
        if not isinstance(key, str) or key in columns:
            raise
        raise UserError(
            f"the task reads a column {key!r}, which the {split} split does not have (its "
            f"columns: {', '.join(columns)}); set the task's column option (task.*_column)"
        ) from None


def check_no_gaps(task: Task, rows: dict[str, list]) -> None:
    """A ``UserError`` naming the first input row that lacks a column the task needs to
    predict (a JSON line without the key, or ``null``): it would be predicted as an empty text,
    or as the text "None". The needed columns are those ``task.check_columns`` requires."""
    for column, values in rows.items():
        others = [c for c in rows if c != column]
        try:
            task.check_columns(others, "predict")
            continue  # not needed
        except UserError:
            pass
        missing = next((i for i, v in enumerate(values) if v is None), None)
        if missing is not None:
            raise UserError(
                f"input row {missing + 1} has no {column!r} (a missing key or null), which the "
                "task needs to predict; give every row one"
            )


class DataModule(L.LightningDataModule):
    """Encoded train/val/test splits of one data source, served as padded batches.

    Local files: ``path`` is a directory and ``train_file``/``val_file``/``test_file`` name files in
    it (``test_file=None``: no test split), read as ``format`` (None: from each file's suffix;
    the task may add formats of its own, e.g. CoNLL columns). Hub: ``hub_id`` (+ ``hub_config``)
    and ``hub_splits`` mapping train/val/test to the data set's split names; ``hub_data_files``:
    files (paths or fsspec URLs) for a ``datasets`` builder (``hub_id=parquet``, ``json``...).
    """

    def __init__(
        self,
        task: Task,
        tokenizer: Any,
        path: str | None = None,
        train_file: str | None = "train.csv",
        val_file: str | None = "dev.csv",
        test_file: str | None = None,
        format: str | None = None,
        columns: list[str] | None = None,
        quoting: bool | None = None,
        hub_id: str | None = None,
        hub_config: str | None = None,
        hub_splits: dict[str, str | None] | None = None,
        hub_data_files: dict[str, Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_length: int = 128,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
        length_grouping: bool = False,
        max_tokens: int | None = None,
        num_proc: int = 1,
        prepare_per_node: bool = False,
        prepare_timeout: float = 4 * 3600,
    ) -> None:
        super().__init__()
        check_data_args(path, hub_id, batch_size, eval_batch_size, num_workers, max_length,
                        max_tokens, num_proc)  # fmt: skip
        self.task, self.tokenizer = task, tokenizer
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "tasklight")
        self.format = format
        self.columns = list(columns) if columns is not None else None
        self.quoting = quoting
        files = {"train": train_file, "val": val_file, "test": test_file}
        hub_splits = dict(hub_splits or {"train": "train", "val": "validation"})
        self.sources = Sources(task, path, files, format, self.columns, quoting, hub_id,
                               hub_config, hub_splits, self.cache_dir, hub_data_files)  # fmt: skip
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.max_length = max_length
        self.limits = {
            "train": max_train_samples,
            "val": max_eval_samples,
            "test": max_eval_samples,
        }
        self.seed, self.num_workers = seed, num_workers
        self.length_grouping = length_grouping
        self.max_tokens = max_tokens
        self.num_proc, self.prepare_per_node = num_proc, prepare_per_node
        self.prepare_timeout = prepare_timeout
        self.prepared_here = False  # whether this process tokenized the data (else mapped it)
        # split -> encoded features: a ``Dataset`` memory-mapped from its Arrow cache file (the
        # pages are the operating system's, shared by loader workers and processes), or a list of
        # feature dicts (predict's input rows)
        self.splits: dict[str, Dataset | list[dict[str, Any]]] = {}
        self._lengths: dict[str, np.ndarray] = {}  # split -> tokens per encoded example
        self.packing_efficiency: dict[str, float] = {}
        # The position inside the training epoch has one owner: this module. It saves the
        # sampler's progress in checkpoints (``state_dict``, Lightning's public datamodule hook)
        # and hands a restored one to the next training loader's sampler (``load_state_dict``).
        self.position = EpochPosition()
        # Raw splits (memory-mapped) read by ``raw_chunks`` (tokenizer training) before
        # ``setup_data``: read once.
        self._raw: dict[str, Dataset] | None = None

    # -- reading ---------------------------------------------------------------------------------

    def _read(self, splits: Iterable[str]) -> dict[str, Dataset]:
        """The raw rows of ``splits`` (those the source has), each read once (memory-mapped)."""
        self._raw = self._raw or {}
        self._raw.update(self.sources.read([s for s in splits if s not in self._raw]))
        return {s: self._raw[s] for s in splits if s in self._raw}

    def _drop_raw(self) -> None:
        """Forget the raw splits and remove their Arrow files (the prepared ones stay)."""
        self._raw = None
        self.sources.drop()

    def raw_chunks(self, split: str) -> Iterator[dict[str, list]]:
        """The rows of ``split`` as read, before any encoding: column-major chunks of at most
        ``CHUNK_ROWS`` rows (never the whole split in memory)."""
        raw = self._read([split])
        if split not in raw:
            raise UserError(f"no {split} split: set data.{split}_file (or data.hub_splits)")
        return raw[split].iter(batch_size=CHUNK_ROWS)

    def read_file(self, file: Path) -> dict[str, list]:
        """All rows of ``file`` in ``data.format`` (or the one its suffix names), in one dict
        (predict's inputs)."""
        return self.sources.read_file(file)

    def _subset(self, ds: Dataset, split: str) -> Dataset:
        limit = self.limits[split]
        if limit is not None and limit < len(ds):
            ds = ds.shuffle(seed=self.seed).select(range(limit))  # a seeded subset
        if len(ds) == 0:
            raise UserError(f"the {split} split is empty after data.max_*_samples={limit}")
        return ds

    # -- preparing: encoded splits stored once (framework.prepared) ------------------------------

    def prepare_inputs(self, fit: bool = True) -> tuple[str, dict[str, Any]]:
        """(key, inputs) of the prepared data this configuration trains on: every input that
        decides the features (sources, subsets, tokenizer, task, code). Reads no data file."""
        sources = self.sources.keys()
        if not fit:
            sources.pop("train", None)
        elif "train" not in sources:
            raise UserError("no train split: set data.train_file (or data.hub_splits.train)")
        limits = {s: self.limits[s] for s in sources}
        inputs = {
            "sources": sources,
            "read": [self.format, self.columns, self.quoting],
            "limits": limits,
            # the seed draws the subsets only: without one, every seed shares the prepared data
            "seed": self.seed if any(v is not None for v in limits.values()) else None,
            "fit": fit,
            **encoding_inputs(self.task, self.tokenizer, self.max_length),
        }
        return fingerprint(json.dumps(inputs, sort_keys=True)), inputs

    def prepare(
        self, fit: bool = True, wait: bool = True, key_inputs: tuple | None = None
    ) -> tuple[Path, dict[str, Any]]:
        """Prepare this configuration's data unless it is (a lock: one process at a time;
        ``wait=False``: another one preparing is a ``UserError``); (folder, manifest).
        ``key_inputs``: ``prepare_inputs(fit)`` when the caller has it already."""
        key, inputs = key_inputs or self.prepare_inputs(fit)
        folder = prepared_dir(self.cache_dir, key)
        with locked(self.cache_dir, key, wait):
            manifest = read_manifest(folder, key, inputs)
            if manifest is None:
                manifest = self._prepare(folder, key, inputs, fit)
        return folder, manifest

    def _prepare(self, folder: Path, key: str, inputs: dict, fit: bool) -> dict[str, Any]:
        raw = self._read(list(inputs["sources"]))  # fit=False: no train split
        for split, ds in raw.items():
            with reads_columns(split, ds.column_names):
                self.task.check_columns(ds.column_names, split)
                check_column_types(self.task, ds, split, self.sources.where(split))
                warn_empty_texts(self.task, split, ds)
        self.task.use_tokenizer(self.tokenizer)  # e.g. MLM: special token ids, vocabulary size
        if fit:
            with reads_columns("train", raw["train"].column_names):
                self.task.setup(raw["train"].iter(batch_size=CHUNK_ROWS))
        task_state = self.task.state_dict()
        try:
            json.dumps(task_state)
        except TypeError as e:
            raise UserError(
                f"task {self.task.name!r}: state_dict() must return JSON values (lists, str, "
                f"numbers) to be stored with prepared data ({e})"
            ) from None
        self.prepared_here = True
        encode = partial(self.task.encode, tokenizer=self.tokenizer, max_length=self.max_length)
        with Staging(folder) as stage:
            splits = {}
            for split, ds in raw.items():
                fp = fingerprint(key, split)
                ds = self._subset(ds, split)
                with reads_columns(split, ds.column_names):
                    splits[split] = encode_split(ds, split, encode, stage.tmp, self.num_proc, fp)
            manifest = {
                "format_version": FORMAT_VERSION, "key": key, "inputs": inputs,
                "task_state": task_state, "splits": splits,
            }  # fmt: skip
            stage.commit(manifest)
        if not self._keeps_rows():  # a task that keeps rows reads them in setup_data
            self._drop_raw()
        return manifest

    # -- encoding --------------------------------------------------------------------------------

    def setup_data(self, fit: bool = True) -> None:
        """Map every split's encoded features from its prepared files, preparing them first
        (read, check, subset, encode) when nothing is prepared for this configuration.
        Idempotent; call before fit. ``fit=False`` (evaluation of a trained run): no train
        split, and the task's state (its label set) must already be restored
        (``Task.load_state_dict``).

        Which process prepares: global rank 0, or each node's local rank 0 with
        ``data.prepare_per_node`` (node-local cache disks); the others wait for its manifest."""
        if self.splits:
            return
        key, inputs = self.prepare_inputs(fit)
        folder = prepared_dir(self.cache_dir, key)
        manifest = read_manifest(folder, key, inputs)
        if manifest is None:
            is_global, is_local = process_ranks()
            if is_local if self.prepare_per_node else is_global:
                folder, manifest = self.prepare(fit, key_inputs=(key, inputs))
            else:
                who = "local rank 0" if self.prepare_per_node else "global rank 0"
                wait_for(folder, self.prepare_timeout, who)
                manifest = read_manifest(folder, key, inputs)
        self.task.use_tokenizer(self.tokenizer)
        if fit:
            self.task.load_state_dict(manifest["task_state"])
        for split in manifest["splits"]:
            self.splits[split] = open_split(folder, manifest, split)
            if self.task.packs_rows:  # packed rows: how full they are
                real, rows = manifest["splits"][split]["tokens"], len(self.splits[split])
                msg = f"{split}: {rows} packed rows, {real} tokens, "
                log.info(msg + f"packing efficiency {real / (rows * self.max_length):.3f} "
                         "(real tokens / slots)")  # fmt: skip
                self.packing_efficiency[split] = real / (rows * self.max_length)
        if self._keeps_rows():
            # raw fields a task's decode or metrics read (QA contexts): the evaluation splits' rows
            raw = self._read(sorted(self.splits.keys() - {"train"}))
            for split in raw:
                self.task.keep_rows(split, self._subset(raw[split], split).to_dict())
        self._drop_raw()

    def _keeps_rows(self) -> bool:
        """Whether the task keeps raw evaluation rows (``Task.keep_rows`` overridden)."""
        return type(self.task).keep_rows is not Task.keep_rows

    def lengths(self, split: str) -> np.ndarray:
        """Tokens of each encoded example of ``split`` (from the Arrow offsets: no row read)."""
        if split not in self._lengths:
            self._lengths[split] = feature_lengths(self.splits[split])
        return self._lengths[split]

    def setup(self, stage: str | None = None) -> None:
        self.setup_data()

    # -- loaders ---------------------------------------------------------------------------------

    def predict_loader(self, rows: dict[str, list]) -> DataLoader:
        """Batches of raw input rows (no labels; not cached), for ``trainer.predict``: sorted by
        length like evaluation; each feature's ``row`` gives the input order back."""
        n = len(next(iter(rows.values()), []))
        if n == 0:
            raise UserError("no input rows to predict")
        self.task.check_columns(list(rows), "predict")
        check_no_gaps(self.task, rows)
        self.task.use_tokenizer(self.tokenizer)
        self.task.keep_rows("predict", rows)
        with reads_columns("predict", list(rows)):
            features = self.task.encode(rows, list(range(n)), self.tokenizer, self.max_length)
        self._lengths.pop("predict", None)
        self.splits["predict"] = [
            dict(zip(features, values, strict=True))
            for values in zip(*features.values(), strict=True)
        ]
        return self._loader("predict")

    def _loader(self, split: str) -> DataLoader:
        return make_loader(self, split)

    def num_train_batches(self, world_size: int = 1) -> int:
        """Batches per epoch of each of ``world_size`` processes (as the training loader)."""
        if self.max_tokens is not None:
            budget = token_budget_batches(self.lengths("train"), self.max_tokens, self.seed)
            return -(-len(budget) // world_size)
        return batches_per_rank(len(self.splits["train"]), world_size, self.batch_size)

    # -- position inside the training epoch (resume): ``framework.sampling.EpochPosition`` ----

    def batch_trained(self) -> None:
        """Count one trained batch (called by the module as each batch starts training; not when
        fetched: Lightning fetches one batch ahead)."""
        self.position.batch_trained()

    def state_dict(self) -> dict[str, Any]:
        return self.position.state_dict(self._position_settings())

    def _position_settings(self) -> dict[str, Any]:
        """What decides which rows the first N batches of an epoch hold (the saved position)."""
        return {
            "data.batch_size": self.batch_size,
            "data.max_tokens": self.max_tokens,
            "data.length_grouping": self.length_grouping,
            "seed": self.seed,
            "train rows": len(self.splits["train"]) if "train" in self.splits else None,
        }

    def check_resume(self, state: dict[str, Any]) -> None:
        self.position.check(state, self._position_settings())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called by Lightning on resume, before the training loader is built."""
        self.position.load_state_dict(state)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    @property
    def has_test(self) -> bool:
        return "test" in self.splits
