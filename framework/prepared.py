"""Prepared data: encoded splits stored once as memory-mapped Arrow files plus a manifest.

A prepared data set is one folder, ``CACHE_DIR/prepared/KEY/``, holding each split's Arrow
files (written by ``datasets.Dataset.map``) and ``manifest.json`` (rows, tokens, files and
their sizes, the task's learned state, and the inputs of ``KEY``: sources, subset, tokenizer,
maximum length, task options, code version). The folder is built under a temporary name and
renamed into place whole, so a folder under its final name is complete: a crash, a full disk or
a second writer never leaves a manifest that a later run would trust. A file lock
(``KEY.lock``, ``filelock``) lets one process prepare while the others wait; the rename alone
keeps the cache safe where a file system has no working locks.

Arrow, through ``datasets``, because it is already a dependency, is memory-mapped (the pages
belong to the operating system's page cache: loader workers and every process of a node
share them, and the training process holds none of the data in its own heap), stores token ids
as int32 lists (``datasets`` narrows ``input_ids``), and reads back zero-copy by row.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import UserError
from framework.fileio import checksum, json_checksum

if TYPE_CHECKING:
    from datasets import Dataset

FORMAT_VERSION = 2  # 2: checksums of the files and of the manifest
MANIFEST = "manifest.json"
PREPARE_HINT = "re-run `python -m framework.prepare` with the run's overrides"


class DamagedPreparedData(UserError):
    """A prepared folder that cannot be trusted (corrupted, truncated, from other inputs)."""


def prepared_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir / "prepared" / key


def process_ranks() -> tuple[bool, bool]:
    """(global rank zero, local rank zero) of this process, from the launcher's environment
    (torchrun, Lightning's launcher, SLURM), before any process group exists. A process that
    no launcher started is both."""
    env = os.environ
    local = int(env.get("LOCAL_RANK") or env.get("SLURM_LOCALID") or 0)
    if "RANK" in env or "SLURM_PROCID" in env:
        return int(env.get("RANK") or env.get("SLURM_PROCID") or 0) == 0, local == 0
    node = int(env.get("NODE_RANK") or env.get("GROUP_RANK") or env.get("SLURM_NODEID") or 0)
    return node == 0 and local == 0, local == 0


def read_manifest(folder: Path, key: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of a complete prepared folder, checked against ``inputs`` and against the
    sizes of its files; None when nothing is prepared under ``key``. A ``UserError`` naming the
    file when the folder is corrupted, truncated or was made from other inputs."""
    path = folder / MANIFEST
    if not folder.is_dir():
        return None
    try:
        manifest = json.loads(path.read_text())
        splits = manifest["splits"]
        ok = manifest["format_version"] == FORMAT_VERSION and isinstance(splits, dict)
    except (OSError, ValueError, KeyError, TypeError) as e:
        reason = "missing" if not path.exists() else f"unreadable: {type(e).__name__}"
        raise DamagedPreparedData(
            f"{path} is {reason}: the prepared data in {folder} is corrupted; delete {folder} "
            f"or {PREPARE_HINT}"
        ) from None
    if not ok:
        raise DamagedPreparedData(
            f"{path} is of format {manifest.get('format_version')}, not {FORMAT_VERSION} (another "
            f"tasklight version); {PREPARE_HINT}"
        )
    if manifest.get("key") != key or manifest.get("inputs") != inputs:
        saved = manifest.get("inputs") or {}
        differ = sorted(k for k in {*saved, *inputs} if saved.get(k) != inputs.get(k))
        raise DamagedPreparedData(
            f"{path} was prepared from other inputs ({', '.join(differ) or 'key'} differ: e.g. "
            f"another tokenizer or code version); delete {folder} or {PREPARE_HINT}"
        )
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    if manifest.get("checksum") != json_checksum(body):
        raise DamagedPreparedData(
            f"{path} was edited after it was written (its checksum differs: e.g. its label list); "
            f"delete {folder} or {PREPARE_HINT}"
        )
    for split in splits.values():
        for name, size in split["files"].items():
            outside = Path(name).name != name or name.startswith(".") or name == ""
            if outside or (folder / name).is_symlink():
                raise DamagedPreparedData(  # a manifest may name only files of its own folder
                    f"{path} names the file {name!r}, which is not in {folder}; the prepared "
                    f"data was tampered with: delete {folder} or {PREPARE_HINT}"
                )
            file = folder / name
            actual = file.stat().st_size if file.is_file() else None
            if actual == size and checksum(file) != split["checksums"].get(name):
                actual = "other bytes"  # a file swapped for another of the same size
            if actual != size:
                state = "missing" if actual is None else f"{actual} bytes, manifest says {size}"
                if actual == "other bytes":
                    state = "same size, other bytes than prepared"
                raise DamagedPreparedData(
                    f"{file} is truncated or changed ({state}); delete {folder} or {PREPARE_HINT}"
                )
    return manifest


def open_split(folder: Path, manifest: dict[str, Any], split: str):
    """The split's features, memory-mapped (``datasets.Dataset``, nothing read into memory)."""
    from datasets import Dataset, concatenate_datasets

    entry = manifest["splits"][split]
    try:
        parts = [Dataset.from_file(str(folder / name)) for name in entry["files"]]
    except Exception as e:  # pyarrow's errors for a damaged file are of several types
        raise DamagedPreparedData(
            f"the prepared {split} split in {folder} cannot be read ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:120]}); delete {folder} or {PREPARE_HINT}"
        ) from None
    ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    if len(ds) != entry["rows"]:
        raise DamagedPreparedData(
            f"the prepared {split} split in {folder} has {len(ds)} rows, its manifest "
            f"{entry['rows']}; delete {folder} or {PREPARE_HINT}"
        )
    return ds


class Staging:
    """A temporary folder beside the prepared one, renamed into place by ``commit``; removed
    (with whatever was written) when the block fails. ``OSError`` on the way (a full disk, no
    permission) becomes a ``UserError`` naming the folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        host = socket.gethostname()
        self.tmp = folder.parent / f".{folder.name}.tmp-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> Staging:
        self.remove_stale()
        self.tmp.mkdir(parents=True)
        return self

    def remove_stale(self) -> None:
        """Remove the temporary folders of this key left by a killed preparation (SIGKILL, a
        lost node): those made on this host by a process that no longer runs. Another host's
        are left alone (its process cannot be asked)."""
        host = socket.gethostname()
        for old in self.folder.parent.glob(f".{self.folder.name}.tmp-{host}-*"):
            pid = old.name.removeprefix(f".{self.folder.name}.tmp-{host}-").partition("-")[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(old, ignore_errors=True)

    def commit(self, manifest: dict[str, Any]) -> None:
        """Write the manifest (flushed to disk) last, then rename the folder into place."""
        for file in self.tmp.iterdir():  # the Arrow files reach the disk before the manifest
            with open(file, "rb") as f:
                os.fsync(f.fileno())
        path = self.tmp / MANIFEST
        manifest = {**manifest, "checksum": json_checksum(manifest)}  # an edit shows
        with open(path, "w") as f:
            f.write(json.dumps(manifest, indent=1) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(self.tmp, self.folder)
        except OSError:
            if not (self.folder / MANIFEST).is_file():
                raise
            # another process prepared the same key meanwhile: its folder stands, ours goes
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __exit__(self, kind, error, tb) -> bool:
        if kind is None:
            return False
        shutil.rmtree(self.tmp, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, UserError):
            import errno

            full = error.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "the disk is full" if full else error.strerror or type(error).__name__
            raise UserError(
                f"preparing data into {self.folder.parent} failed ({why}); nothing was kept: "
                "free space or set data.cache_dir to a larger disk, then run again"
            ) from error
        return False


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (ours or not)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def locked(cache_dir: Path, key: str, wait: bool):
    """Hold the lock of ``key``'s preparation (``filelock``: one preparer at a time).
    ``wait=False``: a ``UserError`` when another process holds it (two prepares at once)."""
    from filelock import FileLock, Timeout

    path = cache_dir / "prepared" / f"{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    file_lock = FileLock(str(path))
    try:
        file_lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise UserError(
            f"another process is preparing this data ({path} is locked); wait for it to "
            "finish (its result is then used), or stop it and run again"
        ) from None
    try:
        yield
    finally:
        file_lock.release()


def wait_for(folder: Path, timeout: float, preparer: str) -> None:
    """Block until ``folder``'s manifest exists (prepared by another process)."""
    start = time.monotonic()
    while not (folder / MANIFEST).is_file():
        if time.monotonic() - start > timeout:
            raise UserError(
                f"waited {timeout:.0f} s for {preparer} to prepare {folder}: check that process's "
                "log, raise data.prepare_timeout, or prepare first with python -m framework.prepare"
            )
        time.sleep(0.5)


def encode_split(
    ds, split: str, encode, folder: Path, num_proc: int, fingerprint: str
) -> dict[str, Any]:
    """Encode the rows ``ds`` of ``split`` (``datasets.Dataset.map`` of the task's ``encode``,
    batched, with row ids) into Arrow files in ``folder``; the split's manifest entry (rows,
    tokens, seconds, files and sizes). ``fingerprint``: the new dataset's (given, so that
    ``datasets`` does not hash the tokenizer inside ``encode`` on every call: a fixed cost)."""
    start = time.perf_counter()
    encoded = ds.map(
        encode,
        batched=True,
        with_indices=True,  # row ids: a task may split a row and rejoin it
        remove_columns=ds.column_names,
        cache_file_name=str(folder / f"{split}.arrow"),
        load_from_cache_file=False,
        new_fingerprint=fingerprint,
        # worker processes when each gets at least two rows
        num_proc=num_proc if 1 < num_proc <= len(ds) // 2 else None,
        desc=f"encoding {split}",
    )
    if len(encoded) == 0:
        raise UserError(f"the {split} split has no text to train or evaluate on")
    seconds, tokens = time.perf_counter() - start, int(feature_lengths(encoded).sum())
    files = [Path(f["filename"]).name for f in encoded.cache_files]
    print(
        f"prepared {split}: {len(ds)} rows, {tokens} tokens in {seconds:.1f} s "
        f"({len(ds) / seconds:.0f} rows/s, {tokens / seconds:.0f} tokens/s)",
        file=sys.stderr,
    )
    return {
        "rows": len(encoded), "source_rows": len(ds), "tokens": tokens,
        "seconds": round(seconds, 3), "files": {n: (folder / n).stat().st_size for n in files},
        "checksums": {n: checksum(folder / n) for n in files},
    }  # fmt: skip


def feature_lengths(features: Dataset | list[dict[str, Any]]) -> np.ndarray:
    """``len(input_ids)`` of each example: for a ``Dataset`` from its Arrow list offsets."""
    if isinstance(features, list):
        return np.array([len(f["input_ids"]) for f in features], dtype=np.int64)
    import pyarrow.compute as pc

    column = features.data.column("input_ids")
    if features._indices is not None:  # a selection of the table's rows
        column = column.take(features._indices.column(0))
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
