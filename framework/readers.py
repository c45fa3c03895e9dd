"""Reading data files: CSV, TSV and JSON lines (every task), with errors that name the file and
the line. Written here rather than with ``datasets.load_dataset("csv")`` because a user needs
those errors (bad UTF-8, ragged rows, NaN in JSON, mixed types), and GLUE's TSV files must be
read without quote processing."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from framework.errors import UserError


def _unreadable(path: Path, e: OSError) -> UserError:  # no permission, a folder, a bad mount
    return UserError(f"cannot read {path} ({e.strerror}); check that it is a readable file")


def _not_utf8(path: Path, line: int) -> UserError:
    return UserError(
        f"{path} is not UTF-8 (bad byte at line {line}); re-encode it as UTF-8, e.g. "
        f"`iconv -f latin1 -t utf-8 {path.name}`"
    )


def _nul_byte(path: Path, line: int) -> UserError:
    # a binary or corrupted file: it would train silently on the bytes around it
    return UserError(
        f"{path}:{line}: a NUL byte; the file is binary or corrupted: remove the NUL bytes "
        f"(`tr -d '\\000' < {path.name} > fixed_{path.name}`) or use the original file"
    )


def read_utf8(path: Path) -> str:
    """The text of ``path`` (a format read whole: SQuAD's JSON); a ``UserError`` naming the line
    of the first non-UTF-8 or NUL byte. Line by line: ``read_lines``."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _unreadable(path, e) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, raw[: e.start].count(b"\n") + 1) from None
    nul = text.find("\0")
    if nul >= 0:
        raise _nul_byte(path, text.count("\n", 0, nul) + 1)
    return text


# The table formats every task reads, and the suffixes that name them when data.format is null.
TABLE_FORMATS = {
    "csv": (".csv",),
    "tsv": (".tsv",),
    "jsonl": (".jsonl", ".json"),
    "parquet": (".parquet", ".pq"),
}


def guess_format(path: Path, formats: dict[str, tuple[str, ...]]) -> str:
    """The format whose suffixes include ``path``'s; a ``UserError`` naming the choices."""
    suffix = path.suffix.lower()
    for fmt, suffixes in formats.items():
        if suffix in suffixes:
            return fmt
    raise UserError(
        f"{path}: cannot tell the format from the suffix {suffix!r}; set data.format to one of: "
        f"{', '.join(formats)}"
    )


# Rows per chunk a reader yields: a bounded amount of a file in Python objects at a time.
CHUNK_ROWS = 10_000


def read_lines(path: Path, newline_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line number, line) of each line of ``path`` without its line end, read incrementally:
    the lines of ``str.splitlines`` (which also breaks at \\r, \\x0c, \\u2028...), numbered
    from 1; ``newline_only``: the lines between \\n (or \\r\\n) only. A ``UserError`` naming
    the line of the first non-UTF-8 or NUL byte."""
    try:
        f = open(path, "rb")  # closed by the with below; open's own errors named here
    except OSError as e:
        raise _unreadable(path, e) from None
    with f:
        # b"\n" never occurs inside a UTF-8 multi-byte character, so splitting the bytes there
        # and decoding each physical line is exact; each piece's splitlines() are the lines
        # str.splitlines() gives for that stretch of the whole text
        n = 0
        for physical, raw in enumerate(f, 1):
            if physical == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # utf-8-sig
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _not_utf8(path, physical) from None
            if "\0" in text:
                raise _nul_byte(path, physical)
            if newline_only:  # as text.replace("\r\n", "\n").split("\n")
                if text.endswith("\n"):
                    text = text[:-2] if text.endswith("\r\n") else text[:-1]
                yield physical, text
                continue
            for line in text.splitlines():
                n += 1
                yield n, line


def then_blank(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """``lines`` (of ``read_lines``), then one empty line: a record that ends at an empty line
    (a CoNLL sentence, a block of text) ends at the end of the file too."""
    n = 0
    for n, line in lines:
        yield n, line
    yield n + 1, ""


def table_chunks(
    path: str | Path,
    fmt: str | None = None,
    columns: list[str] | None = None,
    quoting: bool | None = None,
    chunk_rows: int | None = None,
) -> Iterator[dict[str, list]]:
    """Rows of a CSV, TSV or JSON-lines file, column-major, ``chunk_rows`` (None:
    ``CHUNK_ROWS``) at a time (the file is read incrementally); ``fmt`` None: from the suffix.
    ``columns``: the names of a CSV/TSV file without a header line. ``quoting``: whether
    ``"``-quoted fields are unquoted; None: CSV yes, TSV no (GLUE's TSV has bare quotes). A
    JSON-lines chunk has the keys of its own lines (``None`` where a line lacks one);
    ``framework.sources.write_arrow`` joins the chunks."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file {path} does not exist; check data.path and the file names")
    fmt = fmt or guess_format(path, TABLE_FORMATS)
    chunk_rows = chunk_rows or CHUNK_ROWS
    if fmt == "jsonl":
        yield from _jsonl_chunks(path, chunk_rows)
    elif fmt in ("csv", "tsv"):
        yield from _csv_chunks(path, fmt, columns, quoting, chunk_rows)
    else:
        raise UserError(
            f"{path}: unknown table format {fmt!r}; use one of {', '.join(TABLE_FORMATS)}"
        )


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[dict[str, list]]:
    records = []
    for n, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_no_constant)
        except _NonFinite as e:
            raise UserError(
                f"{path}:{n}: {e} is not a JSON value; write null for a missing value, or drop "
                "the row"
            ) from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{n}: not a JSON object ({e.msg})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: every line must be a JSON object (line {n} is not)")
        records.append(record)
        if len(records) == chunk_rows:
            yield _columns(records)
            records = []
    if records:
        yield _columns(records)


def _columns(records: list[dict]) -> dict[str, list]:
    """Records -> column-major rows: every key of any record (in order of first appearance)."""
    keys = dict.fromkeys(k for r in records for k in r)
    return {k: [r.get(k) for r in records] for k in keys}


def _csv_chunks(
    path: Path, fmt: str, columns: list[str] | None, quoting: bool | None, chunk_rows: int
) -> Iterator[dict[str, list]]:
    quoted = quoting if quoting is not None else fmt == "csv"
    # Python's csv refuses a field over 128 KiB (a long document): up to 1 GiB here.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))
    reader = csv.reader(
        (line for _, line in read_lines(path)),
        delimiter="\t" if fmt == "tsv" else ",",
        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
    )
    has_header = columns is None
    if has_header:
        header = next(reader, None)
        if not header:
            raise UserError(f"{path} is empty; it needs a header line and at least one row")
        columns = [h.strip() for h in header]
    first_line = 2 if has_header else 1
    rows: dict[str, list] = {c: [] for c in columns}
    count = 0
    for n, fields in enumerate(reader, first_line):
        if not fields:
            continue
        if len(fields) != len(columns):
            where = "the header has" if has_header else "data.columns names"
            raise UserError(f"{path}:{n}: {len(fields)} fields where {where} {len(columns)}")
        for c, v in zip(columns, fields, strict=True):
            rows[c].append(v)
        count += 1
        if count == chunk_rows:
            yield rows
            rows, count = {c: [] for c in columns}, 0
    if count:
        yield rows


def gather(chunks: Iterable[dict[str, list]], path: Path | str) -> dict[str, list]:
    """Chunks -> one column-major dict (for small inputs: predict's rows); a key missing from a
    chunk is ``None`` in its rows. A ``UserError`` when there are no rows."""
    out: dict[str, list] = {}
    total = 0
    for chunk in chunks:
        n = len(next(iter(chunk.values()), []))
        for k in chunk:
            if k not in out:  # a key first seen in this chunk: None in the rows before
                out[k] = [None] * total
        for k, values in out.items():
            values.extend(chunk.get(k, [None] * n))
        total += n
    if total == 0:
        raise UserError(f"{path} has no rows; every split needs at least one example")
    return out


def read_table(
    path: str | Path,
    fmt: str | None = None,
    columns: list[str] | None = None,
    quoting: bool | None = None,
) -> dict[str, list]:
    """All rows of a CSV, TSV, JSON-lines or Parquet file, column-major (``table_chunks``
    gathered: for inputs that fit in memory)."""
    path = Path(path)
    if (fmt or guess_format(path, TABLE_FORMATS)) == "parquet" and path.is_file():
        return read_parquet(path).to_dict()
    return gather(table_chunks(path, fmt, columns, quoting), path)


def read_parquet(path: Path, cache_dir: Path | None = None) -> Dataset:
    """A Parquet file as a ``Dataset``, converted in row groups by ``datasets`` into an Arrow
    file under ``cache_dir`` (memory-mapped: never the whole file in memory); None: in memory."""
    from datasets.utils import logging as ds_logging

    bars = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        if cache_dir is None:
            import pyarrow.parquet as pq

            ds = Dataset(pq.read_table(path))
        else:
            ds = Dataset.from_parquet(str(path), cache_dir=str(cache_dir))
    except Exception as e:  # pyarrow and datasets raise several types for a damaged file
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise UserError(
            f"{path} is not a readable Parquet file ({why}); check the file, or write it again "
            "(e.g. pandas.DataFrame.to_parquet)"
        ) from None
    finally:
        if bars:  # as it was
            ds_logging.enable_progress_bar()
    if len(ds) == 0:
        raise UserError(f"{path} has no rows; every split needs at least one example")
    return ds


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> None:
    """Python's json reads NaN and Infinity, which JSON does not have: refused here."""
    raise _NonFinite(name)


def to_dataset(rows: dict[str, list], file: Path) -> Dataset:
    """``Dataset.from_dict``; a column Arrow cannot hold (mixed value types) is a ``UserError``."""
    import pyarrow as pa

    try:
        return Dataset.from_dict(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        column = next(
            (c for c, v in rows.items() if len({type(x) for x in v} - {type(None)}) > 1), None
        )
        where = f"column {column!r}" if column else "a column"
        raise UserError(
            f"{file}: {where} mixes value types ({str(e).splitlines()[0]}); give each column "
            "values of one type (e.g. quote the numbers)"
        ) from None


def read_hub_split(
    hub_id: str,
    hub_config: str | None,
    split: str,
    name: str,
    data_files: dict[str, Any] | None = None,
) -> Dataset:
    """Split ``name`` of a Hugging Face hub data set (the cache, or the network once), with
    ``ClassLabel`` ids turned into their names. ``data_files``: split name -> file(s) for a
    ``datasets`` builder (``hub_id`` ``parquet``, ``json``, ``csv``, ``text``): local paths,
    globs or fsspec URLs (``https://``, ``hf://``, ``s3://`` with s3fs installed), read by
    ``datasets`` into its Arrow cache and memory-mapped."""
    from datasets import load_dataset

    where = "from the Hugging Face Hub" if not data_files else f"from {data_files.get(name)}"
    try:
        extra = {"data_files": data_files} if data_files else {}
        ds = load_dataset(hub_id, hub_config, split=name, **extra)
    except Exception as e:
        raise UserError(
            f"cannot load {hub_id!r} ({hub_config}) split {name!r} {where} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}); "
            "without network use data.path=DIR"
        ) from e
    if len(ds) == 0:
        raise UserError(f"the {split} split ({name}) of {hub_id} is empty")
    return _class_labels_to_names(ds)


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
