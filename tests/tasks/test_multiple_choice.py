"""Multiple choice on CommonsenseQA's layout: nested columns, letter answers, repeated choices."""

from __future__ import annotations

import json

import pytest

from framework.data import DataModule
from tasks.multiple_choice import MultipleChoice

ROWS = [
    {"answerKey": "C", "id": "a", "question": {"stem": "Where do fish live?", "choices": [
        {"label": "A", "text": "tree"}, {"label": "B", "text": "desert"},
        {"label": "C", "text": "water"}, {"label": "D", "text": "desert"},
        {"label": "E", "text": "sky"}]}},
    {"answerKey": "A", "id": "b", "question": {"stem": "What is cold?", "choices": [
        {"label": "A", "text": "ice"}, {"label": "B", "text": "fire"},
        {"label": "C", "text": "sun"}, {"label": "D", "text": "lava"},
        {"label": "E", "text": "ice "}]}},
]  # fmt: skip


def _task() -> MultipleChoice:
    return MultipleChoice(context_column="question.stem", choices_column="question.choices",
                          label_column="answerKey")  # fmt: skip


def test_reads_nested_columns_letters_and_keeps_repeated_choices(tmp_path, tokenizer):
    for name in ("train.jsonl", "dev.jsonl"):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    task = _task()
    dm = DataModule(task, tokenizer, path=str(tmp_path), train_file="train.jsonl",
                    val_file="dev.jsonl", cache_dir=str(tmp_path / "cache"))  # fmt: skip
    dm.setup_data()
    assert task.num_choices == 5
    features = dm.splits["train"]
    assert [f["labels"] for f in features] == [2, 0]  # C, A: by position
    batch = task.collate(features, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 10  # 2 rows x 5 pairs, repeated texts kept
    first_pairs = [tokenizer.decode(ids, skip_special_tokens=True) for ids in batch["input_ids"]]
    assert first_pairs[1] == first_pairs[3]  # "desert" twice: two candidates


def test_an_answer_that_names_no_candidate_is_a_clear_error(tokenizer):
    task = _task()
    rows = {"answerKey": ["F"], "question": [ROWS[0]["question"]]}
    task.setup([rows])
    with pytest.raises(Exception, match="neither a candidate's 'label'"):
        task.encode(rows, [0], tokenizer, 64)
