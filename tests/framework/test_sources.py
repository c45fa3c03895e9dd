"""Reading in chunks (framework.readers, framework.sources): the same rows as reading a file
whole, a bounded amount of it in Python objects at a time, the task contract's iterators
(``Task.setup``, tokenizer training), and one-line errors for columns of the wrong shape."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from datasets import Dataset

import framework.data
from framework.data import DataModule
from framework.errors import UserError
from framework.readers import gather, read_table, table_chunks
from framework.sources import Sources, write_arrow
from tasks.classification import Classification
from tasks.mlm import MaskedLM
from tasks.ner import NER

ROWS = 25


def _files(tmp_path) -> dict[str, tuple]:
    texts = [f'w{i} "q{i}", x' if i % 3 else f"plain {i}" for i in range(ROWS)]
    labels = [str(i % 2) for i in range(ROWS)]
    csv = "text,label\n" + "".join(f'"{t.replace(chr(34), chr(34) * 2)}",{y}\n'
                                   for t, y in zip(texts, labels, strict=True))  # fmt: skip
    tsv = "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels, strict=True))
    jsonl = "".join(
        json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels, strict=True)
    )
    for name, text in (("a.csv", csv), ("a.tsv", tsv), ("a.jsonl", jsonl)):
        (tmp_path / name).write_text(text)
    return {"csv": tmp_path / "a.csv", "tsv": tmp_path / "a.tsv", "jsonl": tmp_path / "a.jsonl"}


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
def test_chunks_hold_the_rows_of_the_whole_file(tmp_path, fmt):
    path = _files(tmp_path)[fmt]
    chunks = list(table_chunks(path, chunk_rows=4))
    assert [len(c["text"]) for c in chunks] == [4] * 6 + [1]
    whole = gather(table_chunks(path, chunk_rows=10_000), path)
    assert gather(chunks, path) == whole == read_table(path)
    assert whole["text"][1] == 'w1 "q1", x' and whole["label"][:3] == ["0", "1", "0"]
    written = write_arrow(lambda: table_chunks(path, chunk_rows=4), tmp_path / "a.arrow", path)
    assert written.to_dict() == whole
    assert written.features == Dataset.from_dict(whole).features


def test_a_json_lines_column_widens_over_later_chunks_as_the_whole_file_would(tmp_path):
    lines = [{"a": 1, "b": None}, {"a": 2, "b": None}, {"a": 2.5, "b": "x"},
             {"a": 3, "b": "y", "c": True}, {"a": 4}]  # fmt: skip
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    whole = read_table(path)
    assert list(whole) == ["a", "b", "c"] and whole["c"] == [None, None, None, True, None]
    ds = write_arrow(lambda: table_chunks(path, chunk_rows=2), tmp_path / "w.arrow", path)
    assert ds.to_dict() == Dataset.from_dict(whole).to_dict()
    assert ds.features == Dataset.from_dict(whole).features  # a: float, b: string, c: bool


def test_a_number_and_a_text_in_different_chunks_is_one_error_naming_the_column(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"t": "a", "n": 1}\n{"t": "b", "n": 2}\n{"t": "c", "n": "three"}\n')
    with pytest.raises(UserError, match=r"m\.jsonl: column 'n' mixes value types"):
        write_arrow(lambda: table_chunks(path, chunk_rows=2), tmp_path / "m.arrow", path)
    assert not list(tmp_path.glob("*.arrow*"))  # nothing half-written left


def test_reading_a_split_holds_one_chunk_in_python_objects_not_the_file(tmp_path, monkeypatch):
    rows = 60_000
    path = tmp_path / "big.csv"
    with path.open("w") as f:
        f.write("text,label\n")
        for i in range(rows):
            f.write(f"{'some words of a sentence ' * 3}{i},{i % 2}\n")
    size = path.stat().st_size  # ~5 MB: read whole, the bytes, the text and its lines are 3x
    monkeypatch.setattr("framework.readers.CHUNK_ROWS", 1_000)  # ~1/60 of the file a chunk
    sources = Sources(Classification(), str(tmp_path), {"train": "big.csv"}, None, None, None,
                      None, None, {}, tmp_path / "cache")  # fmt: skip
    tracemalloc.start()
    try:
        ds = sources.read_split(path, "train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(ds) == rows and ds[rows - 1]["text"].endswith(str(rows - 1))
    assert peak < size / 4, (peak, size)
    sources.drop()
    assert not list((tmp_path / "cache" / "sources").iterdir())
    assert ds[0]["label"] == "0"  # still mapped after its file is removed


def _old_mlm_docs(text: str, documents: str) -> list[str]:
    """tasks/mlm.py's reading before chunks (the whole text at once), the reference."""
    if documents == "line":
        return [ln.strip() for ln in text.splitlines() if ln.strip()]
    blocks = [b.split("\n") for b in text.replace("\r\n", "\n").split("\n\n")]
    docs = [" ".join(ln.strip() for ln in b if ln.strip()) for b in blocks]
    return [d for d in docs if d]


@pytest.mark.parametrize("documents", ["line", "blank"])
def test_mlm_text_in_chunks_gives_the_documents_of_the_whole_text(tmp_path, monkeypatch,
                                                                  documents):  # fmt: skip
    monkeypatch.setattr("tasks.mlm.CHUNK_ROWS", 2)
    text = ("\ufeff = Title = \r\n\r\nfirst line\r\nsecond\u2028half\n  \nthird\n\n\n\n"
            "fourth\x0cpage\n\n \t\n\nlast words\rwith a carriage return\n\nend")  # fmt: skip
    path = tmp_path / "t.raw"
    path.write_bytes(text.encode())
    chunks = list(MaskedLM(documents=documents).read_chunks(path))
    assert all(len(c["text"]) <= 2 for c in chunks) and len(chunks) > 1
    assert [d for c in chunks for d in c["text"]] == _old_mlm_docs(text[1:], documents)


CONLL = """-DOCSTART- -X- O O

EU NNP B-NP B-ORG
rejects VBZ B-VP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

in IN B-PP O
Brussels NNP B-NP I-LOC
"""


def test_conll_in_chunks_and_the_scheme_found_across_chunks(tmp_path, monkeypatch):
    path = tmp_path / "a.conll"
    path.write_text(CONLL)
    whole = NER().read_file(path)
    monkeypatch.setattr("tasks.ner.CHUNK_ROWS", 1)
    chunks = list(NER().read_chunks(path))
    assert [c["tokens"] for c in chunks] == [[t] for t in whole["tokens"]]
    assert whole["tags"][2] == ["O", "I-LOC"]
    task = NER()
    task.setup(iter(chunks))  # IOB1's evidence (an I- after O) is in the last chunk only
    assert task.scheme == "IOB1"
    assert task.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]


class _Recording(Classification):
    def setup(self, train_chunks):
        chunks = list(train_chunks)
        self.chunk_rows = [len(c["label"]) for c in chunks]
        super().setup(iter(chunks))


def test_task_setup_sees_the_train_split_in_chunks(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(framework.data, "CHUNK_ROWS", 4)
    (tmp_path / "train.csv").write_text("text,label\n" + "a b,x\nc,y\n" * 5)
    (tmp_path / "dev.csv").write_text("text,label\na,x\n")
    task = _Recording()
    dm = DataModule(task, tokenizer, path=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    dm.setup_data()
    assert task.chunk_rows == [4, 4, 2] and task.labels == ["x", "y"]
    assert not [p for p in (tmp_path / "cache" / "sources").iterdir()]  # raw files removed


def _parquet(path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize(
    "task, columns, error",
    [
        (Classification(), {"text": [["a", "b"], ["c"]], "label": ["x", "y"]},
         "column 'text' holds list<item: string> values where task 'classification' reads one "
         "text or number per row"),
        (Classification(), {"text": ["a", "b"], "label": [{"k": 1}, {"k": 2}]},
         "column 'label' holds struct<k: int64> values"),
        (NER(), {"tokens": ["a b", "c"], "tags": [["O", "O"], ["O"]]},
         "column 'tokens' holds string values where task 'ner' reads a list of texts per row"),
    ],
    ids=["list for a text", "struct label", "text for a word list"],
)  # fmt: skip
def test_a_parquet_column_of_the_wrong_shape_is_one_error(
    tmp_path, tokenizer, task, columns, error
):
    _parquet(tmp_path / "train.parquet", columns)
    _parquet(tmp_path / "dev.parquet", columns)
    dm = DataModule(task, tokenizer, path=str(tmp_path), train_file="train.parquet",
                    val_file="dev.parquet", cache_dir=str(tmp_path / "cache"))  # fmt: skip
    with pytest.raises(UserError) as e:
        dm.setup_data()
    assert str(e.value).startswith(f"{tmp_path / 'train.parquet'}: {error}"), str(e.value)
    assert not (tmp_path / "cache" / "prepared").exists() or not [
        p for p in (tmp_path / "cache" / "prepared").iterdir() if not p.name.endswith(".lock")
    ]


def test_numbers_where_a_text_is_read_are_read_as_text(tmp_path, tokenizer):
    _parquet(tmp_path / "train.parquet", {"text": [1, 2, 3, 4], "label": [0.5, 1.5, 0.5, 1.5]})
    _parquet(tmp_path / "dev.parquet", {"text": [1, 2], "label": [0.5, 1.5]})
    dm = DataModule(Classification(), tokenizer, path=str(tmp_path), train_file="train.parquet",
                    val_file="dev.parquet", cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup_data()
    assert dm.task.labels == ["0.5", "1.5"] and len(dm.splits["train"]) == 4


def test_files_read_through_a_datasets_builder_give_the_features_of_local_files(
    tmp_path, tokenizer, monkeypatch
):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    csv = "text,label\n" + "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(12))
    (tmp_path / "train.csv").write_text(csv)
    (tmp_path / "dev.csv").write_text(csv)
    local = DataModule(Classification(), tokenizer, path=str(tmp_path),
                       cache_dir=str(tmp_path / "cache"))  # fmt: skip
    files = {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.csv")}
    remote = DataModule(Classification(), tokenizer, hub_id="csv", hub_data_files=files,
                        cache_dir=str(tmp_path / "cache2"))  # fmt: skip
    local.setup_data(), remote.setup_data()
    assert remote.splits["train"].to_list() == local.splits["train"].to_list()
    assert remote.task.labels == ["a", "b"]
    missing = DataModule(Classification(), tokenizer, hub_id="csv", cache_dir=str(tmp_path / "c3"),
                         hub_data_files={"train": str(tmp_path / "nope.csv")})  # fmt: skip
    with pytest.raises(UserError, match=r"cannot load 'csv' \(None\) split 'train' from .*nope"):
        missing.setup_data()


class _Keeping(Classification):
    def keep_rows(self, split, rows):
        self.kept = {**getattr(self, "kept", {}), split: rows["text"]}


def test_a_task_that_keeps_rows_reads_only_the_evaluation_files_of_prepared_data(
    tmp_path, tokenizer, monkeypatch
):
    (tmp_path / "train.csv").write_text("text,label\na b,x\nc,y\n")
    (tmp_path / "dev.csv").write_text("text,label\nd,x\n")

    def dm():
        return DataModule(_Keeping(), tokenizer, path=str(tmp_path),
                          cache_dir=str(tmp_path / "cache"))  # fmt: skip

    dm().setup_data()  # prepares
    read, real = [], Sources.read_split
    monkeypatch.setattr(Sources, "read_split", lambda s, f, split: read.append(f.name)
                        or real(s, f, split))  # fmt: skip
    again = dm()
    again.setup_data()
    assert read == ["dev.csv"] and again.task.kept == {"val": ["d"]}
