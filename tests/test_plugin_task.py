"""A task from a package outside tasklight's tree: the example of docs/tasks.md, copied into a
temporary package, trains, evaluates, predicts and passes the contract tests, by import path and
by entry point, with no edit to tasklight; a missing or broken plug-in is a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_bad_inputs import run_main

EXAMPLE = ROOT / "docs" / "examples" / "mean_pool.py"
TASK = "my_tasks.mean_pool:MeanPoolClassifier"
FAST = ("model=tiny", "debug=fast", "trainer.accelerator=cpu", "~callbacks.rich_progress_bar",
        "~callbacks.model_summary")  # fmt: skip


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """A directory holding package ``my_tasks`` (the docs' example) and its installed metadata
    with a ``tasklight.tasks`` entry point ``mean_pool``, as ``pip install`` would leave it."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "my_tasks").mkdir()
    (root / "my_tasks" / "__init__.py").write_text("")
    (root / "my_tasks" / "mean_pool.py").write_text(EXAMPLE.read_text())
    (root / "my_tasks" / "broken.py").write_text("import a_module_that_is_not_there\n")
    info = root / "my_tasks-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-tasks\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tasklight.tasks]\nmean_pool = {TASK}\n")
    return root


def _run(plugin_dir: Path, module: str, *args: str, stdin: str | None = None):
    env = {**os.environ, "PYTHONPATH": str(plugin_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, input=stdin,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_the_docs_show_the_whole_example_file():
    text = EXAMPLE.read_text()
    assert len(text.splitlines()) < 80
    assert text in (ROOT / "docs" / "tasks.md").read_text()


def test_example_task_trains_evaluates_and_predicts_by_import_path(plugin_dir, tmp_path):
    run_dir = tmp_path / "run"
    done = _run(plugin_dir, "framework.train", *FAST, f"task={TASK}", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "declares no transformers AutoModelFor... class" in done.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/acc"] <= 1.0 and metrics["best_checkpoint"]
    config = json.loads((run_dir / "export" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"]  # the encoder alone: AutoModel loads it

    lines = "it was great\nit was awful\n"
    # a run directory names the module, but predict imports it only when the user says so
    refused = _run(plugin_dir, "framework.predict", f"run={run_dir}", "input=-", stdin=lines)
    assert refused.returncode == 2 and "task_packages=my_tasks.mean_pool" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    trusted = ("task_packages=tasks,my_tasks.mean_pool",)
    done = _run(plugin_dir, "framework.predict", f"run={run_dir}", "input=-", *trusted, stdin=lines)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["id"] for r in records] == [0, 1]
    assert {r["label"] for r in records} <= {"negative", "positive"}
    out = tmp_path / "eval"
    done = _run(plugin_dir, "framework.evaluate", f"run={run_dir}", f"output_dir={out}", *trusted)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["val/acc"] == pytest.approx(
        metrics["val/acc"]
    )


def test_example_task_trains_as_an_installed_plug_in(plugin_dir, tmp_path):
    run_dir = tmp_path / "run"
    done = _run(plugin_dir, "framework.train", *FAST, "task=mean_pool",
                "task.labels=[negative,positive]", f"hydra.run.dir={run_dir}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "val/acc" in json.loads((run_dir / "metrics.json").read_text())
    config = (run_dir / "config.yaml").read_text()
    assert "name: mean_pool\n" in config and "monitor: val/acc\n" in config


def test_example_task_passes_the_contract_and_predict_tests(plugin_dir):
    tests = ("tests/tasks/test_contract.py", "tests/test_predict.py")
    flags = ("-q", "-p", "no:cacheprovider", "-p", "no:xdist")
    done = _run(plugin_dir, "pytest", *flags, *tests, f"--task={TASK}")
    assert done.returncode == 0, done.stdout[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("my_tasks.nowhere:Task", "module 'my_tasks.nowhere' cannot be imported"),
        ("my_tasks.broken:Task", "importing 'my_tasks.broken' failed"),
        ("my_tasks.mean_pool:Nothing", "check the class name after ':'"),
        ("my_tasks.mean_pool:Batch", "is not a subclass of framework.task.Task"),
    ],
)
def test_a_missing_or_broken_plug_in_is_one_line(plugin_dir, monkeypatch, task, expected):
    monkeypatch.syspath_prepend(str(plugin_dir))
    code, err = run_main(*FAST, f"task={task}")
    last = err.strip().splitlines()[-1]
    assert code == 2 and expected in last and task in last, err[-2000:]


def test_the_docs_table_every_hook_of_the_contract():
    from framework.task import Task

    docs = (ROOT / "docs" / "tasks.md").read_text()
    hooks = [n for n, v in vars(Task).items() if callable(v) and not n.startswith("_")]
    assert len(hooks) > 20
    assert [h for h in hooks if f"`{h}(" not in docs and f" `{h}(" not in docs] == []
    assert sorted(Task.__abstractmethods__) == sorted(
        ["encode", "collate", "build_head", "step", "metrics", "decode"]
    )
