"""Bad input through the entry point: one ``error:`` line that names the problem and the fix, a
non-zero exit, no traceback and no checkpoint."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAST, run_cli

GOOD = "text,label\ngood film,positive\nbad film,negative\nfine,positive\n"


def _data(tmp_path, train: str = GOOD, dev: str = GOOD, suffix: str = "csv"):
    data = tmp_path / "data"
    data.mkdir()
    (data / f"train.{suffix}").write_text(train)
    (data / f"dev.{suffix}").write_text(dev)
    files = [f"data.train_file=train.{suffix}", f"data.val_file=dev.{suffix}"]
    return [f"data.path={data}", *files]


NULL_LABEL = "\n".join(
    json.dumps(r) for r in [{"text": "good", "label": "pos"}, {"text": "bad", "label": None}]
)

CASES = {
    "empty label value": ({"train": GOOD + "no label here,\n"}, [], "have no value in column"),
    "null label value (JSON)": (
        {"train": NULL_LABEL, "dev": NULL_LABEL, "suffix": "jsonl"},
        [],
        "have no value in column 'label'",
    ),
    "duplicated task.labels": (
        {},
        ["task.labels=[negative,positive,negative]"],
        "task.labels lists 'negative' more than once",
    ),
    "data.max_length=0": ({}, ["data.max_length=0"], "data.max_length must be >= 2"),
    "data.eval_batch_size=-1": ({}, ["data.eval_batch_size=-1"], "data.eval_batch_size must be"),
    "unknown model.attn_impl": ({}, ["model.attn_impl=flash9"], "model.attn_impl must be sdpa"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case, tmp_path):
    files, overrides, message = CASES[case]
    run_dir = tmp_path / "run"
    proc = run_cli(*FAST, *_data(tmp_path, **files), *overrides, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()
