"""Data: read local CSV/TSV/JSON-lines files or a Hugging Face ``datasets`` hub id, let the task
encode the rows, cache the encoded splits, and serve dynamically padded batches.

Local files are read here rather than with ``datasets.load_dataset("csv")`` because a user needs
errors that name the file and line (bad UTF-8, ragged rows, missing columns), and GLUE's TSV files
must be read without quote processing; encoding and caching use ``datasets`` (``Dataset.map``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from framework.errors import UserError
from framework.task import Task

SPLITS = ("train", "val", "test")


def read_utf8(path: Path) -> str:
    """The text of ``path``; a ``UserError`` naming the line of the first non-UTF-8 byte."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path} is not UTF-8 (bad byte at line {line}); re-encode it as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name}`"
        ) from None


def read_table(path: str | Path) -> dict[str, list]:
    """Rows of a .csv, .tsv or .jsonl file, column-major. TSV is read without quoting (GLUE)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check data.path and the file names")
    text = read_utf8(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not all(isinstance(r, dict) for r in records):
            raise UserError(f"{path}: every line must be a JSON object")
        columns = list(dict.fromkeys(k for r in records for k in r))
        rows = {c: [r.get(c) for r in records] for c in columns}
    elif suffix in (".csv", ".tsv"):
        if suffix == ".tsv":
            reader = csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(text.splitlines())
        header = next(reader, None)
        if not header:
            raise UserError(f"{path} is empty; it needs a header line and at least one row")
        columns = [h.strip() for h in header]
        rows = {c: [] for c in columns}
        for n, fields in enumerate(reader, 2):
            if not fields:
                continue
            if len(fields) != len(columns):
                raise UserError(
                    f"{path}:{n}: {len(fields)} fields where the header has {len(columns)}"
                )
            for c, v in zip(columns, fields, strict=True):
                rows[c].append(v)
    else:
        raise UserError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    if not rows or not len(next(iter(rows.values()))):
        raise UserError(f"{path} has no rows; every split needs at least one example")
    return rows


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:20]


class DataModule(L.LightningDataModule):
    """Encoded train/val/test splits of one data source, served as padded batches.

    Local files: ``path`` is a directory and ``train_file``/``val_file``/``test_file`` name files in
    it (``test_file=None``: no test split). Hub: ``hub_id`` (+ ``hub_config``) and ``hub_splits``
    mapping train/val/test to the data set's split names.
    """

    def __init__(
        self,
        task: Task,
        tokenizer: Any,
        path: str | None = None,
        train_file: str | None = "train.csv",
        val_file: str | None = "dev.csv",
        test_file: str | None = None,
        hub_id: str | None = None,
        hub_config: str | None = None,
        hub_splits: dict[str, str | None] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_length: int = 128,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
        length_grouping: bool = False,
    ) -> None:
        super().__init__()
        if path is None and hub_id is None:
            raise UserError("no data source: set data.path=DIR (local files) or data.hub_id")
        if batch_size < 1:
            raise UserError(f"data.batch_size must be >= 1, got {batch_size}")
        self.task, self.tokenizer = task, tokenizer
        self.path, self.hub_id, self.hub_config = path, hub_id, hub_config
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        self.hub_splits = dict(hub_splits or {"train": "train", "val": "validation"})
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
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "tasklight")
        self.splits: dict[str, list[dict[str, Any]]] = {}

    # -- reading ---------------------------------------------------------------------------------

    def _raw_splits(self) -> dict[str, tuple[Dataset, str]]:
        """split -> (rows, cache key of the source)."""
        out = {}
        if self.path is not None:
            if not Path(self.path).is_dir():
                raise UserError(f"data.path {self.path} is not a directory")
            for split, name in self.files.items():
                if name is None:
                    continue
                file = Path(self.path) / name
                rows = self._read(file)
                st = file.stat()
                key = _fingerprint(str(file.resolve()), st.st_size, st.st_mtime_ns)
                out[split] = (Dataset.from_dict(rows), key)
            return out
        from datasets import load_dataset

        for split, name in self.hub_splits.items():
            if name is None:
                continue
            try:
                ds = load_dataset(self.hub_id, self.hub_config, split=name)
            except Exception as e:
                raise UserError(
                    f"cannot load {self.hub_id!r} ({self.hub_config}) split {name!r} from the "
                    f"Hugging Face Hub ({type(e).__name__}); without network use data.path=DIR"
                ) from e
            if len(ds) == 0:
                raise UserError(f"the {split} split ({name}) of {self.hub_id} is empty")
            out[split] = (_class_labels_to_names(ds), ds._fingerprint)
        return out

    def _read(self, file: Path) -> dict[str, list]:
        """A task may read its own formats (``read_file(path) -> rows or None``, e.g. CoNLL)."""
        reader = getattr(self.task, "read_file", None)
        if reader is not None and file.is_file():
            rows = reader(file)
            if rows is not None:
                return rows
        return read_table(file)

    # -- encoding --------------------------------------------------------------------------------

    def setup_data(self) -> None:
        """Read, check, encode (cached) and subset every split. Idempotent; call before fit."""
        if self.splits:
            return
        raw = self._raw_splits()
        if "train" not in raw:
            raise UserError("no train split: set data.train_file (or data.hub_splits.train)")
        for split, (ds, _) in raw.items():
            self.task.check_columns(ds.column_names, split)
        self.task.setup(raw["train"][0][:])
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tok_id = (self.tokenizer.name_or_path, len(self.tokenizer), type(self.tokenizer).__name__)
        task_state = sorted((k, repr(v)) for k, v in vars(self.task).items())
        for split, (ds, source_key) in raw.items():
            limit = self.limits[split]
            if limit is not None and limit < len(ds):
                ds = ds.shuffle(seed=self.seed).select(range(limit))  # a seeded subset
            if len(ds) == 0:
                raise UserError(f"the {split} split is empty after data.max_*_samples={limit}")
            key = _fingerprint(
                source_key, limit, self.seed, tok_id, self.max_length, self.task.name, task_state
            )
            encoded = ds.map(
                partial(self.task.encode, tokenizer=self.tokenizer, max_length=self.max_length),
                batched=True,
                with_indices=True,  # row ids: a task may split a row (long sentences) and rejoin it
                remove_columns=ds.column_names,
                cache_file_name=str(self.cache_dir / f"{split}-{key}.arrow"),
                desc=f"encoding {split}",
            )
            self.splits[split] = encoded.to_list()

    def setup(self, stage: str | None = None) -> None:
        self.setup_data()

    # -- loaders ---------------------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        pad_id = self.tokenizer.pad_token_id or 0
        features = self.splits[split]
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        sampler = None
        if shuffle and self.length_grouping:
            # Shuffled mega-batches sorted by length: batches of similar length, less padding.
            from transformers.trainer_pt_utils import LengthGroupedSampler

            lengths = [len(f["input_ids"]) for f in features]
            generator = torch.Generator().manual_seed(self.seed)
            sampler = LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
            shuffle = False
        elif self.length_grouping:
            # Evaluation order does not change any metric: longest first, least padding.
            features = sorted(features, key=lambda f: -len(f["input_ids"]))
        return DataLoader(
            features,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=shuffle,
            collate_fn=partial(self.task.collate, pad_id=pad_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    @property
    def has_test(self) -> bool:
        return "test" in self.splits


def _class_labels_to_names(ds: Dataset) -> Dataset:
    """Hub data sets store labels as ClassLabel ids; tasks see the names (as in local files)."""
    from datasets import ClassLabel

    conv = {}
    for col, feat in ds.features.items():
        if isinstance(feat, ClassLabel):
            conv[col] = (feat, False)
        elif isinstance(getattr(feat, "feature", None), ClassLabel):
            conv[col] = (feat.feature, True)
    if not conv:
        return ds

    def name(cl: ClassLabel, i: int) -> str:
        return cl.int2str(i) if i >= 0 else str(i)  # -1: unlabelled (GLUE test splits)

    def to_names(batch: dict[str, list]) -> dict[str, list]:
        for col, (cl, is_seq) in conv.items():
            vals = batch[col]
            batch[col] = (
                [[name(cl, i) for i in v] for v in vals] if is_seq else [name(cl, i) for i in vals]
            )
        return batch

    from datasets import Features, List, Value

    features = Features(
        {
            col: (List(Value("string")) if conv[col][1] else Value("string")) if col in conv else f
            for col, f in ds.features.items()
        }
    )
    return ds.map(to_names, batched=True, features=features, desc="label names")
