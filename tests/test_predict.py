"""``framework.predict`` and ``framework.evaluate`` on trained runs of every task.

Each task trains a tiny run on its synthetic rows (JSON lines files), then predicts its dev file
(from the file, and from stdin) and the predictions are compared, in input order, with the
exported Hugging Face model's on the same rows.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch

from framework.registry import get_task
from tests.conftest import tasks_under_test
from tests.test_bad_inputs import run_main


def _write_jsonl(path: Path, rows: dict[str, list]) -> None:
    n = len(next(iter(rows.values())))
    lines = [json.dumps({k: v[i] for k, v in rows.items()}) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trained(task_name, tmp_path_factory) -> tuple[str, Path, Path]:
    """(task name, run directory, dev file) of a tiny run of the task."""
    name = task_name
    task = get_task(name)()
    try:
        train_rows, dev_rows = task.synthetic_rows(24, seed=0), task.predict_rows(6, seed=1)
    except NotImplementedError:
        pytest.skip(f"task {name!r} declares no synthetic_rows")
    data = tmp_path_factory.mktemp("data")
    _write_jsonl(data / "train.jsonl", train_rows)
    _write_jsonl(data / "dev.jsonl", dev_rows)
    run_dir = tmp_path_factory.mktemp("run")
    code, err = run_main(
        "model=tiny", "debug=fast", "trainer.accelerator=cpu", f"task={name}",
        f"data.path={data}", "data.train_file=train.jsonl", "data.val_file=dev.jsonl",
        "data.format=jsonl", "data.max_length=64", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert code == 0, err[-3000:]
    return name, run_dir, data / "dev.jsonl"


def predict_main(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    from framework.predict import main

    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    code = 0
    try:
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(list(args))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def _predict_file(run_dir: Path, dev: Path, tmp_path: Path) -> tuple[list[dict], list[dict]]:
    """(predict's records for the dev file, the dev rows)."""
    out_file = tmp_path / "pred.jsonl"
    code, _, err = predict_main(f"run={run_dir}", f"input={dev}", f"output={out_file}")
    assert code == 0, err[-3000:]
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    rows = [json.loads(line) for line in dev.read_text().splitlines()]
    return records, rows


def test_predict_file_and_stdin_in_input_order(trained, tmp_path):
    name, run_dir, dev = trained
    records, rows = _predict_file(run_dir, dev, tmp_path)
    assert [r["id"] for r in records] == list(range(len(rows)))
    task = get_task(name)()
    # stdin: plain text lines where the task reads them, else JSON lines
    lines = [task.text_line(r) for r in rows]
    lines = [json.dumps(r) if line is None else line for r, line in zip(rows, lines, strict=True)]
    code, stdout, err = predict_main(f"run={run_dir}", "input=-", stdin="\n".join(lines) + "\n")
    assert code == 0, err[-3000:]
    assert [json.loads(line) for line in stdout.splitlines()] == records


def test_predict_as_the_export(trained, tmp_path):
    name, run_dir, dev = trained
    task = get_task(name)()
    records, rows = _predict_file(run_dir, dev, tmp_path)
    try:
        theirs = task.hf_predictions(run_dir / "export", rows)
    except NotImplementedError:  # nothing to compare with: said, not passed silently
        pytest.skip(f"task {name!r} declares no hf_predictions: predict is not compared")
    ours = [task.record_value(r) for r in records]
    if _floats(theirs):
        assert torch.allclose(torch.tensor(ours), torch.tensor(theirs), atol=1e-4)
    else:
        assert ours == theirs


def _figures(name: str) -> list[str]:
    """The names of the figures the task draws (``Task.figures``), once set up on its rows."""
    task = get_task(name)()
    task.setup([task.synthetic_rows(24, seed=0)])
    return list(task.figures())


def _floats(values: list) -> bool:
    """A float, or a list of floats, per row: compared within 1e-4 (``Task.record_value``)."""
    first = values[0]
    return isinstance(first, float) or (isinstance(first, list) and isinstance(first[0], float))


def test_evaluate_writes_metrics_and_figures(trained, tmp_path):
    from framework.evaluate import main

    name, run_dir, dev = trained
    out = tmp_path / "eval"
    main([f"run={run_dir}", f"output_dir={out}", "data.val_file=dev.jsonl"])
    metrics = json.loads((out / "metrics.json").read_text())
    trained_metrics = json.loads((run_dir / "metrics.json").read_text())
    monitor = get_task(name).monitor
    assert metrics[monitor] == pytest.approx(trained_metrics[monitor])
    rows = len(dev.read_text().splitlines())
    # a packing task's examples are its packed rows (several texts each)
    assert metrics["examples"] == rows or (get_task(name).packs_rows and metrics["examples"] >= 1)
    for figure in _figures(name):
        assert (out / f"{figure}.png").read_bytes()[:4] == b"\x89PNG", figure


def test_predict_errors_are_one_line(trained, tmp_path, request):
    name, run_dir, dev = trained
    if name != tasks_under_test(request.config)[0]:
        pytest.skip("the command's errors, once")
    for args, text in (
        ((f"input={dev}",), "run=RUN_DIR"),
        ((f"run={tmp_path}", f"input={dev}"), "not a run directory"),
        ((f"run={run_dir}", "input=missing.jsonl"), "does not exist"),
        ((f"run={run_dir}", f"input={dev}", "colour=red"), "unknown argument 'colour'"),
    ):
        code, _, err = predict_main(*args)
        assert code == 2 and text in err and "Traceback" not in err, err


def test_every_run_writes_its_curves_and_its_task_figure(trained):
    name, run_dir, _ = trained
    expected = ["curves", *_figures(name)]
    for figure in expected:
        assert (run_dir / f"{figure}.png").read_bytes()[:4] == b"\x89PNG", figure
