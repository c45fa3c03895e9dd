"""Raw splits as memory-mapped Arrow files: a reader's chunks of rows written to disk one chunk
at a time (``write_arrow``), so a data file of any size is never in a process's memory whole.

Written here rather than with ``datasets.Dataset.from_generator`` because that caches by the
generator's code and arguments, not by the file's contents (an edited file would read stale),
and infers the schema from the first rows only: a JSON-lines column whose first values are all
null, integers or absent widens here to what the whole file holds (``pa.unify_schemas``), as
``Dataset.from_dict`` of the whole file did.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset

from framework.errors import UserError
from framework.fileio import checksum
from framework.readers import CHUNK_ROWS, to_dataset


class _Wider(Exception):
    """A chunk holds a column, or values, the schema written so far cannot: write again."""

    def __init__(self, schema) -> None:
        self.schema = schema


def write_arrow(
    chunks: Callable[[], Iterable[dict[str, list]]], out: Path, file: Path | str
) -> Dataset:
    """The rows ``chunks()`` yields (column-major chunks of ``file``), written to the Arrow file
    ``out`` one chunk at a time and memory-mapped back. ``chunks`` is called again (the file
    read again) in the rare case that a later chunk widens the schema: a column first seen
    there, or values of a wider type (an integer column with a float further down). Values that
    no one type holds (a number and a text) are a ``UserError`` naming the column."""
    schema = None
    while True:
        try:
            return _write(chunks(), out, schema, file)
        except _Wider as w:
            schema = w.schema


def _write(chunks: Iterable[dict[str, list]], out: Path, schema, file: Path | str) -> Dataset:
    import pyarrow as pa

    tmp = out.with_name(f".{out.name}.tmp")
    writer, rows = None, 0
    try:
        for chunk in chunks:
            table = to_dataset(chunk, Path(file)).data.table.replace_schema_metadata(None)
            if table.num_rows == 0:
                continue
            if schema is None:
                schema = table.schema
            elif not table.schema.equals(schema):
                try:
                    wider = pa.unify_schemas([schema, table.schema], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                    raise _mixed_types(file, schema, table.schema, e) from None
                if not wider.equals(schema):
                    raise _Wider(wider)
                table = _conform(table, schema, file)
            if writer is None:
                writer = pa.ipc.new_stream(str(tmp), schema)
            writer.write_table(table, max_chunksize=1000)
            rows += table.num_rows
    except BaseException:  # an error in the file, a full disk, Ctrl-C: nothing half-written
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    if rows == 0:
        raise UserError(f"{file} has no rows; every split needs at least one example")
    os.replace(tmp, out)
    return Dataset.from_file(str(out))


def _conform(table, schema, file: Path | str):
    """``table`` in ``schema``: its columns in that order, a missing one all null, cast."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            try:
                arrays.append(column.cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
                raise _mixed_types(file, schema, table.schema, e) from None
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _mixed_types(file, schema, other, e: Exception) -> UserError:
    names = {f.name for f in schema} & {f.name for f in other}
    column = next((n for n in names if schema.field(n).type != other.field(n).type), None)
    where = f"column {column!r}" if column else "a column"
    return UserError(
        f"{file}: {where} mixes value types ({str(e).splitlines()[0][:120]}); give each column "
        "values of one type (e.g. quote the numbers)"
    )


_KINDS = {"text": "one text or number per row", "list": "a list of texts per row"}


def check_column_types(task, ds: Dataset, split: str, where: str) -> None:
    """A ``UserError`` naming ``where`` (the file) and the column when a column the task reads
    (``Task.column_types``) holds other values than it reads: a list or a struct where a text
    is read, a text where a list of words is. Columns the split lacks are ``check_columns``'."""
    import pyarrow as pa

    def kind(t) -> str | None:
        if pa.types.is_null(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            return "text"
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            return "text"
        if pa.types.is_decimal(t):
            return "text"
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return "list" if kind(t.value_type) == "text" else None
        return None

    schema = ds.data.schema
    for column, wanted in task.column_types(split).items():
        if column not in schema.names:
            continue
        found = schema.field(column).type
        if kind(found) not in wanted.split("_or_"):
            what = " or ".join(_KINDS[w] for w in wanted.split("_or_"))
            raise UserError(
                f"{where}: column {column!r} holds {found} values where task {task.name!r} reads "
                f"{what}; convert the column (or point the task's column option at another one)"
            )


def warn_empty_texts(task, split: str, ds: Dataset) -> None:
    """A warning on stderr (training goes on) when texts of ``split`` are empty: each trains or
    is scored as an input with no words, which is rarely what the file meant."""
    from lightning.pytorch.utilities import rank_zero_only

    empty, first, offset = 0, None, 0
    for chunk in ds.iter(batch_size=CHUNK_ROWS):  # a mapped split, never whole
        n = len(next(iter(chunk.values()), []))
        try:
            texts = task.tokenizer_texts(chunk)
        except UserError:  # a task without plain texts (QA, multiple choice)
            return
        rows = sorted({i % n for i, t in enumerate(texts) if not t.strip()}) if n else []
        empty += sum(not t.strip() for t in texts)
        if rows and first is None:
            first = offset + rows[0] + 1
        offset += n
    if empty and rank_zero_only.rank == 0:
        print(
            f"warning: {empty} of the {split} split's texts are empty (first: row {first}); "
            "they are kept as inputs without words: drop or fill those rows if that is wrong",
            file=sys.stderr,
        )


class ReadFolder:
    """A temporary folder for one data module's raw Arrow files (``CACHE/sources/.read-*``),
    removed by ``drop`` (after preparing), when the module is collected, or at exit. The files
    stay readable while mapped: the kernel keeps a removed file until its last mapping ends."""

    def __init__(self, cache_dir: Path) -> None:
        root = cache_dir / "sources"
        root.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=".read-", dir=root))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.path, True)

    def drop(self) -> None:
        self._finalizer()


class Sources:
    """Where a data module's splits come from and how they are read: local files (``path``
    and a file name per split, read as ``format`` or by suffix; a task may read a format of its
    own, e.g. CoNLL columns) or a Hugging Face hub data set (``hub_id``, ``hub_config``, a split
    name per split). Each split is read into a memory-mapped ``Dataset``: text formats in chunks
    through ``write_arrow`` into a ``ReadFolder``, Parquet by ``datasets`` in row groups."""

    def __init__(
        self,
        task,
        path: str | None,
        files: dict[str, str | None],
        format: str | None,
        columns: list[str] | None,
        quoting: bool | None,
        hub_id: str | None,
        hub_config: str | None,
        hub_splits: dict[str, str | None],
        cache_dir: Path,
        hub_data_files: dict[str, Any] | None = None,
    ) -> None:
        from framework.readers import TABLE_FORMATS

        # the task's own format first: its suffixes win (a SQuAD .json file is not JSON lines)
        own = {task.file_format: tuple(task.file_suffixes)} if task.file_format else {}
        self.formats = {**own, **TABLE_FORMATS}
        if format is not None and format not in self.formats:
            raise UserError(
                f"data.format={format!r} is not one of: {', '.join(self.formats)} (null: from "
                "the file suffix)"
            )
        self.task, self.path, self.files = task, path, files
        self.format, self.columns, self.quoting = format, columns, quoting
        self.hub_id, self.hub_config, self.hub_splits = hub_id, hub_config, hub_splits
        self.hub_data_files = hub_data_files
        self.cache_dir = cache_dir
        self._folder: ReadFolder | None = None
        self._hub: dict[str, Dataset] | None = None
        self._checksums: dict[tuple, str] = {}  # (path, size, mtime, ctime, inode) -> checksum

    def keys(self) -> dict[str, list]:
        """split -> what identifies its source: a file's path, size and a checksum of its bytes
        (a file replaced by other content of the same size, its timestamp restored, is not the
        same source); a hub split's ``datasets`` fingerprint. Each file's checksum is computed
        once per process (its size, mtime and ctime unchanged: ctime cannot be set back)."""
        if self.path is None:
            self._hub = self._hub or self._read_hub()
            hub = self._hub.items()
            return {s: [self.hub_id, self.hub_config, ds._fingerprint] for s, ds in hub}
        out = {}
        for split, file in self._local_files().items():
            st = file.stat()
            seen = (str(file.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            if seen not in self._checksums:
                self._checksums[seen] = checksum(file)
            out[split] = [seen[0], st.st_size, self._checksums[seen]]
        return out

    def _local_files(self) -> dict[str, Path]:
        """split -> its file in ``data.path``; a ``UserError`` for a missing folder or file."""
        if not Path(self.path).is_dir():
            raise UserError(f"data.path {self.path} is not a directory")
        out = {}
        for split, name in self.files.items():
            if name is not None:
                file = Path(self.path) / name
                if not file.is_file():
                    raise UserError(
                        f"data file {file} does not exist; check data.path and the file names"
                    )
                out[split] = file
        return out

    def read(self, splits: Iterable[str]) -> dict[str, Dataset]:
        """split -> its rows, memory-mapped, for each of ``splits`` this source has."""
        if self.path is None:
            have = self.keys()
            return {s: self._hub[s] for s in splits if s in have}
        files = self._local_files()
        return {s: self.read_split(files[s], s) for s in splits if s in files}

    def _read_hub(self) -> dict[str, Dataset]:
        from framework.readers import read_hub_split

        return {
            split: read_hub_split(self.hub_id, self.hub_config, split, name, self.hub_data_files)
            for split, name in self.hub_splits.items()
            if name is not None
        }

    def file_format(self, file: Path) -> str:
        """``data.format``, or the one ``file``'s suffix names (a missing file: ``UserError``)."""
        from framework.readers import guess_format

        if not file.is_file():
            raise UserError(f"data file {file} does not exist; check data.path and the file names")
        return self.format or guess_format(file, self.formats)

    def read_split(self, file: Path, split: str) -> Dataset:
        """The rows of ``file``, memory-mapped: Parquet converted by ``datasets`` in row groups
        (``CACHE/sources``), every other format read in chunks into this module's
        ``ReadFolder`` (removed by ``drop``)."""
        from framework.readers import TABLE_FORMATS, read_parquet, table_chunks

        fmt = self.file_format(file)
        if fmt == "parquet":
            return read_parquet(file, self.cache_dir / "sources")
        if fmt in TABLE_FORMATS:
            chunks = partial(table_chunks, file, fmt, self.columns, self.quoting)
        else:
            chunks = partial(self.task.read_chunks, file)
        self._folder = self._folder or ReadFolder(self.cache_dir)
        return write_arrow(chunks, self._folder.path / f"{split}.arrow", file)

    def read_file(self, file: Path) -> dict[str, list]:
        """All rows of ``file`` in one column-major dict (small inputs: predict's)."""
        from framework.readers import TABLE_FORMATS, gather, read_table

        fmt = self.file_format(file)
        if fmt in TABLE_FORMATS:
            return read_table(file, fmt, self.columns, self.quoting)
        return gather(self.task.read_chunks(file), file)

    def where(self, split: str) -> str:
        """What names ``split``'s source in an error: its file, or the hub data set's split."""
        if self.path is None:
            return f"{self.hub_id} ({self.hub_config}) split {self.hub_splits[split]!r}"
        return str(Path(self.path) / self.files[split])

    def drop(self) -> None:
        """Remove the raw Arrow files this module wrote (mapped ones stay readable)."""
        if self._folder is not None:
            self._folder.drop()
            self._folder = None
