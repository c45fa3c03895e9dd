"""Data module: file formats, seeded subsets, caching, and one-line errors for bad input."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from framework.data import DataModule
from framework.errors import UserError
from framework.readers import read_table
from framework.sampling import eval_batches
from tasks.classification import Classification


def _write(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def _dm(tmp_path, tokenizer, task=None, **kw):
    task = task or Classification(labels=["neg", "pos"])
    return DataModule(task, tokenizer, path=str(tmp_path), cache_dir=str(tmp_path / "cache"), **kw)


CSV = 'text,label\ngood film,pos\n"bad, very bad",neg\nfine,pos\nawful,neg\n'


def test_reads_csv_tsv_jsonl(tmp_path):
    rows = read_table(_write(tmp_path / "a.csv", CSV))
    assert rows == {
        "text": ["good film", "bad, very bad", "fine", "awful"],
        "label": ["pos", "neg", "pos", "neg"],
    }
    # TSV is read without quote processing, as GLUE's files need
    tsv = read_table(_write(tmp_path / "a.tsv", 'sentence\tlabel\nsay "hi" \t1\n'))
    assert tsv == {"sentence": ['say "hi" '], "label": ["1"]}
    lines = [json.dumps({"text": "x", "label": 1}), "", json.dumps({"text": "y", "label": 0})]
    assert read_table(_write(tmp_path / "a.jsonl", "\n".join(lines))) == {
        "text": ["x", "y"],
        "label": [1, 0],
    }


def test_a_changed_encoding_is_not_served_from_the_cache(tmp_path, tokenizer, monkeypatch):
    _write(tmp_path / "train.csv", CSV)
    _write(tmp_path / "dev.csv", CSV)
    first = _dm(tmp_path, tokenizer)
    first.setup_data()
    assert "tag" not in first.splits["train"][0]
    original = Classification.encode

    def encode_with_a_tag(self, rows, indices, tokenizer, max_length):  # the task's code changed
        out = original(self, rows, indices, tokenizer, max_length)
        return {**out, "tag": [7] * len(indices)}

    monkeypatch.setattr(Classification, "encode", encode_with_a_tag)
    second = _dm(tmp_path, tokenizer)  # same files, tokenizer, settings: only the code differs
    second.setup_data()
    assert [f["tag"] for f in second.splits["train"]] == [7] * 4
    assert len(list((tmp_path / "cache" / "prepared").glob("*/manifest.json"))) == 2


def test_batches_are_padded_per_batch_and_subset_is_seeded(tmp_path, tokenizer):
    long = "text,label\n" + "".join(
        f"{'word ' * (i % 7 + 1)},{'pos' if i % 2 else 'neg'}\n" for i in range(40)
    )
    _write(tmp_path / "train.csv", long)
    _write(tmp_path / "dev.csv", CSV)
    dm = _dm(tmp_path, tokenizer, batch_size=4, max_train_samples=10)
    dm.setup_data()
    assert len(dm.splits["train"]) == 10 and len(dm.splits["val"]) == 4
    again = _dm(tmp_path, tokenizer, batch_size=4, max_train_samples=10)
    again.setup_data()
    assert again.splits["train"].to_list() == dm.splits["train"].to_list()  # same seed, subset
    other = _dm(tmp_path, tokenizer, batch_size=4, max_train_samples=10, seed=1)
    other.setup_data()
    assert other.splits["train"].to_list() != dm.splits["train"].to_list()
    assert list((tmp_path / "cache" / "prepared").glob("*/train.arrow"))  # encoded once, stored
    labels, lengths = [], []
    for batch in dm.val_dataloader():
        batch_lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == batch_lengths.max()  # dynamic padding
        labels += batch["labels"].tolist()
        lengths += batch_lengths.tolist()
    assert sorted(labels) == [0, 0, 1, 1]  # every dev example once
    assert lengths == sorted(lengths, reverse=True)  # evaluated longest first


@pytest.mark.parametrize(
    "files, kwargs, message",
    [
        ({"train.csv": CSV}, {}, r"dev\.csv does not exist"),
        ({"train.csv": CSV, "dev.csv": "text,label\n"}, {}, "has no rows"),
        ({"train.csv": CSV, "dev.csv": ""}, {}, "is empty"),
        ({"train.csv": CSV, "dev.csv": b"text,label\ncaf\xe9,pos\n"}, {}, "not UTF-8.*line 2"),
        ({"train.csv": CSV, "dev.csv": CSV.replace("pos", "meh")}, {}, "label 'meh' is not in"),
        ({"train.csv": CSV, "dev.csv": "txt,label\nx,pos\n"}, {}, "column 'text' not found"),
        ({"train.csv": CSV, "dev.csv": "text,label\nx,pos,extra\n"}, {}, r"dev\.csv:2: 3 fields"),
        ({"train.csv": CSV, "dev.csv": CSV}, {"max_train_samples": 0}, "empty after"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, tokenizer, files, kwargs, message):
    for name, text in files.items():
        _write(tmp_path / name, text)
    with pytest.raises(UserError, match=message) as e:
        _dm(tmp_path, tokenizer, **kwargs).setup_data()
    assert "\n" not in str(e.value)


def test_labels_are_inferred_when_not_given(tmp_path, tokenizer):
    _write(tmp_path / "train.csv", CSV)
    _write(tmp_path / "dev.csv", CSV)
    task = Classification()
    _dm(tmp_path, tokenizer, task=task).setup_data()
    assert task.labels == ["neg", "pos"]


def test_sentence_pairs_use_token_types(tmp_path, tokenizer):
    pairs = "q,a,label\nis it good?,yes it is,pos\nis it bad?,no,neg\n"
    _write(tmp_path / "train.csv", pairs)
    _write(tmp_path / "dev.csv", pairs)
    task = Classification(text_column="q", text_pair_column="a")
    dm = _dm(tmp_path, tokenizer, task=task)
    dm.setup_data()
    batch = next(iter(dm.val_dataloader()))
    assert batch["token_type_ids"].max() == 1  # the second segment is marked


def test_hub_source_reads_named_splits(tmp_path, tokenizer, monkeypatch):
    """The hub path (no network here): load_dataset is replaced by an in-memory GLUE-like set."""
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    data = {"sentence": ["good", "bad", "fine"], "label": [1, 0, 1]}
    calls = []

    def fake_load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        return datasets.Dataset.from_dict(data, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    task = Classification(text_column="sentence")
    dm = DataModule(
        task,
        tokenizer,
        hub_id="glue",
        hub_config="sst2",
        hub_splits={"train": "train", "val": "validation", "test": None},
        cache_dir=str(tmp_path),
    )
    dm.setup_data()
    assert calls == [("glue", "sst2", "train"), ("glue", "sst2", "validation")]
    assert task.labels == ["neg", "pos"]  # the ClassLabel names, not their ids
    assert [f["labels"] for f in dm.splits["val"]] == [1, 0, 1] and not dm.has_test


def test_length_grouping_covers_every_example_with_less_padding(tmp_path, tokenizer):
    text = "text,label\n" + "".join(
        f"{'word ' * (1 + (i * 7) % 23)},{'pos' if i % 2 else 'neg'}\n" for i in range(96)
    )
    _write(tmp_path / "train.csv", text)
    _write(tmp_path / "dev.csv", text)

    def padding_and_order(grouped: bool, seed: int = 0):
        dm = _dm(tmp_path, tokenizer, batch_size=8, length_grouping=grouped, seed=seed)
        dm.setup_data()
        pad, seen = 0, []
        for b in dm.train_dataloader():
            pad += (b["attention_mask"] == 0).sum().item()
            seen += [
                tuple(r[m.bool()].tolist())
                for r, m in zip(b["input_ids"], b["attention_mask"], strict=True)
            ]
        return pad, seen

    torch.manual_seed(0)
    random_pad, random_seen = padding_and_order(False)
    grouped_pad, grouped_seen = padding_and_order(True)
    assert sorted(grouped_seen) == sorted(random_seen)  # every example once
    assert grouped_pad < random_pad / 2
    assert padding_and_order(True)[1] == grouped_seen  # deterministic by seed
    assert padding_and_order(True, seed=1)[1] != grouped_seen


def test_token_budget_batches_fit_the_budget_cover_every_example_and_resume(tmp_path, tokenizer):
    from framework.sampling import TrainBatchSampler

    text = "text,label\n" + "".join(
        f"{'word ' * (1 + (i * 7) % 23)},{'pos' if i % 2 else 'neg'}\n" for i in range(96)
    )
    _write(tmp_path / "train.csv", text)
    _write(tmp_path / "dev.csv", text)
    dm = _dm(tmp_path, tokenizer, batch_size=8, max_tokens=160)
    dm.setup_data()
    sizes, seen = [], []
    for b in dm.train_dataloader():
        assert b["input_ids"].numel() <= 160  # the budget, padding included
        sizes.append(b["input_ids"].size(0))
        seen += [
            tuple(r[m.bool()].tolist())
            for r, m in zip(b["input_ids"], b["attention_mask"], strict=True)
        ]
    assert len(sizes) == dm.num_train_batches()
    assert sorted(seen) == sorted(tuple(f["input_ids"]) for f in dm.splits["train"])  # each once
    assert max(sizes) > 8 > min(sizes)  # short examples in big batches, long ones in small

    lengths = [len(f["input_ids"]) for f in dm.splits["train"]]
    one = TrainBatchSampler(lengths, 8, seed=0, max_tokens=160)
    first = list(one.batches(0))
    assert first != list(one.batches(1))  # order reshuffled per epoch
    assert first == list(TrainBatchSampler(lengths, 8, seed=0, max_tokens=160).batches(0))
    one.resume_at = (0, 3)  # resume after 3 trained batches: the same remaining batches
    assert list(one) == first[3:]
    ranks = [TrainBatchSampler(lengths, 8, seed=0, num_replicas=2, rank=r, max_tokens=160)
             for r in (0, 1)]  # fmt: skip
    assert len(ranks[0]) == len(ranks[1]) == -(-len(one.budget) // 2)
    dealt = [i for r in ranks for batch in r.batches(0) for i in batch]
    assert set(dealt) == set(range(96))  # whole batches dealt across processes


def test_token_budget_below_max_length_is_a_clear_error(tmp_path, tokenizer):
    _write(tmp_path / "train.csv", CSV)
    _write(tmp_path / "dev.csv", CSV)
    with pytest.raises(UserError, match=r"raise data\.max_tokens"):
        _dm(tmp_path, tokenizer, max_length=64, max_tokens=32)


@pytest.mark.parametrize("n", [2, 5, 31, 64, 65, 200])
@pytest.mark.parametrize(("batch_size", "world"), [(1, 2), (8, 2), (64, 2), (8, 3), (16, 4)])
def test_every_process_gets_as_many_eval_batches_each_example_once(n, batch_size, world):
    if n < world:
        return
    per_rank = [eval_batches(n, batch_size, world, r) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # FSDP: equal numbers of forwards
    seen = sorted(i for batches in per_rank for b in batches for i in b)
    assert seen == list(range(n))  # each example exactly once
    assert all(b for batches in per_rank for b in batches)  # no empty batch
    if n >= world * -(-n // (world * batch_size)):  # enough examples: the size limit holds
        assert max(len(b) for batches in per_rank for b in batches) <= batch_size


def test_eval_loaders_of_two_processes_have_as_many_batches(tmp_path, tokenizer):
    _write(tmp_path / "train.csv", CSV)
    _write(tmp_path / "dev.csv", CSV + "ok,pos\n")  # 5 examples, 2 processes, batches of 2
    counts = []
    for rank in (0, 1):
        dm = _dm(tmp_path, tokenizer, eval_batch_size=2)
        dm.setup_data()
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        counts.append([len(b["input_ids"]) for b in dm.val_dataloader()])
    assert len(counts[0]) == len(counts[1]) and sum(map(sum, counts)) == 5, counts


def _parquet(path, rows: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), path, row_group_size=2)  # several row groups
    return path


def test_parquet_splits_give_the_features_of_the_same_rows_in_csv(tmp_path, tokenizer):
    rows = read_table(_write(tmp_path / "csv" / "train.csv", CSV))
    _write(tmp_path / "csv" / "dev.csv", CSV)
    _parquet(tmp_path / "pq" / "train.parquet", rows)
    _parquet(tmp_path / "pq" / "dev.parquet", rows)
    from_csv = _dm(tmp_path / "csv", tokenizer)
    from_pq = _dm(tmp_path / "pq", tokenizer, train_file="train.parquet", val_file="dev.parquet")
    from_csv.setup_data(), from_pq.setup_data()
    assert from_pq.splits["train"].to_list() == from_csv.splits["train"].to_list()
    assert read_table(tmp_path / "pq" / "dev.parquet") == rows  # predict's reader


def test_token_tasks_read_parquet_list_columns(tmp_path, tokenizer):
    from tasks.ner import NER

    rows = {"tokens": [["EU", "rejects", "German"], ["Peter", "Blackburn"]],
            "tags": [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"]]}  # fmt: skip
    for name in ("train.parquet", "dev.parquet"):
        _parquet(tmp_path / name, rows)
    dm = _dm(tmp_path, tokenizer, NER(), train_file="train.parquet", val_file="dev.parquet")
    dm.setup_data()
    assert len(dm.splits["train"]) == 2 and dm.task.labels[0] == "O"


def test_a_damaged_or_incomplete_parquet_file_is_a_clear_error(tmp_path, tokenizer):
    _parquet(tmp_path / "dev.parquet", {"text": ["a", "b"], "label": ["pos", "neg"]})
    (tmp_path / "train.parquet").write_bytes(b"PAR1 cut short")
    dm = _dm(tmp_path, tokenizer, train_file="train.parquet", val_file="dev.parquet")
    with pytest.raises(UserError, match=r"train\.parquet is not a readable Parquet file"):
        dm.setup_data()
    _parquet(tmp_path / "train.parquet", {"sentence": ["a", "b"], "label": ["pos", "neg"]})
    dm = _dm(tmp_path, tokenizer, train_file="train.parquet", val_file="dev.parquet")
    with pytest.raises(UserError, match=r"column 'text' not found in the train split \(columns: "
                       r"sentence, label\); set task.text_column"):  # fmt: skip
        dm.setup_data()
