"""A run directory is never lost or hijacked: a run refuses before it writes, holds a lock, keeps
independent checkpoint files, and a copied run loads and imports only what is its own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from framework import rundir
from framework.errors import UserError
from framework.predict import write_atomically
from framework.runs import best_checkpoint
from tests.conftest import FAST
from tests.test_bad_inputs import run_main
from tests.test_predict import predict_main


def _snapshot(run_dir: Path) -> dict[str, str]:
    """Every file of ``run_dir`` with a hash of its bytes; ``train.log`` by its lines: a refused
    run may append why (a checkpoint it skipped), never replace what was logged."""
    files = {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in (rundir.LOCK_NAME, "train.log")
    }
    log = run_dir / "train.log"
    return files | {"train.log": log.read_text() if log.exists() else ""}


def _same(before: dict[str, str], after: dict[str, str]) -> bool:
    log_kept = after["train.log"].startswith(before["train.log"])
    return log_kept and {**before, "train.log": ""} == {**after, "train.log": ""}


def _last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    code, err = run_main(*FAST, f"hydra.run.dir={run_dir}")
    assert code == 0, err[-3000:]
    return run_dir


@pytest.fixture
def inputs(tmp_path) -> Path:
    path = tmp_path / "new.jsonl"
    path.write_text('{"text": "a fine film"}\n{"text": "dull and long"}\n')
    return path


def test_a_new_run_in_a_directory_holding_a_run_is_refused_and_changes_nothing(finished):
    before = _snapshot(finished)
    assert {"config.yaml", "metrics.json", ".hydra/overrides.yaml"} <= set(before)
    code, err = run_main(*FAST, "trainer.max_epochs=2", f"hydra.run.dir={finished}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = _last_line(err)
    assert last.startswith(f"error: {finished} already holds a run"), last
    assert "resume=auto" in last and "overwrite=true" in last
    assert _same(
        before, _snapshot(finished)
    )  # config, .hydra, checkpoints, export: all as they were


def test_overwrite_true_replaces_the_run_it_finds(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "step99.ckpt").write_bytes(b"an older run's checkpoint")
    (run_dir / "config.yaml").write_text("an older run's config\n")
    code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "overwrite=true")
    assert code == 0, err[-3000:]
    assert not (run_dir / "checkpoints" / "step99.ckpt").exists()  # resume=auto cannot mix them
    assert "preset: tiny" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "metrics.json").is_file()


def test_a_refused_resume_leaves_the_run_as_it_was(finished, tmp_path):
    before = _snapshot(finished)
    code, err = run_main(
        *FAST, f"data.path={tmp_path / 'typo'}", "resume=auto", f"hydra.run.dir={finished}"
    )
    assert code == 2 and "is not a directory" in _last_line(err), err[-3000:]
    assert _same(before, _snapshot(finished))  # config.yaml is the trained run's, not the typo's
    from framework.evaluate import main

    main([f"run={finished}", f"output_dir={tmp_path / 'eval'}"])  # the run still evaluates
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["examples"] > 0


def test_a_second_run_is_refused_while_another_holds_the_directory(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with rundir.lock(run_dir):  # flock is per open file: as if another process held it
        code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "resume=auto")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert _last_line(err).startswith(f"error: another run (pid {os.getpid()}) is using {run_dir}")
    assert [p.name for p in run_dir.iterdir()] == [rundir.LOCK_NAME]  # nothing else written
    code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "resume=auto")  # released: it runs
    assert code == 0, err[-3000:]


def test_last_and_best_are_independent_files_and_a_truncated_pair_stops_resume(finished, tmp_path):
    m = json.loads((finished / "metrics.json").read_text())
    best, last = finished / m["best_checkpoint"], finished / "checkpoints" / "last.ckpt"
    assert not os.path.samefile(best, last) and best.read_bytes() == last.read_bytes()
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    last_copy = run_dir / "checkpoints" / "last.ckpt"
    with open(last_copy, "r+b") as f:  # a full disk, a killed cp onto it
        f.truncate(100)
    assert torch.load(run_dir / m["best_checkpoint"], weights_only=False)["global_step"] == 3
    with open(run_dir / m["best_checkpoint"], "r+b") as f:
        f.truncate(100)
    before = _snapshot(run_dir)
    code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "resume=auto")
    assert code == 2, err[-3000:]
    last_line = _last_line(err)
    assert last_line.startswith(f"error: no checkpoint in {run_dir} can be read"), last_line
    assert "last.ckpt" in last_line and "overwrite=true" in last_line
    assert _same(before, _snapshot(run_dir))  # not silently retrained from zero


def test_a_copied_run_loads_only_checkpoints_inside_it(finished, tmp_path):
    m = json.loads((finished / "metrics.json").read_text())
    assert m["best_checkpoint"].startswith("checkpoints/best-")  # relative to the run
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    assert best_checkpoint(copy) == (copy / m["best_checkpoint"]).resolve()
    (copy / m["best_checkpoint"]).unlink()
    for pointer in (str(finished / m["best_checkpoint"]), f"../{finished.name}/x.ckpt"):
        # an absolute path (as older versions wrote) or one out of the directory: not followed
        (copy / "metrics.json").write_text(json.dumps({**m, "best_checkpoint": pointer}))
        assert best_checkpoint(copy) == copy / "checkpoints" / "last.ckpt"
    (copy / "checkpoints" / "last.ckpt").unlink()
    os.symlink(finished / m["best_checkpoint"], copy / "checkpoints" / "link.ckpt")
    with pytest.raises(UserError, match="no checkpoint in"):
        best_checkpoint(copy)  # a symbolic link out of the run is not one of its checkpoints


def test_predict_imports_no_package_that_a_run_directory_names(finished, tmp_path, inputs):
    marker = tmp_path / "code_ran"
    packages = tmp_path / "site"
    packages.mkdir()
    (packages / "planted_tasks.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    copy = tmp_path / "shared_run"
    shutil.copytree(finished, copy)
    cfg = OmegaConf.load(copy / "config.yaml")
    cfg.task_packages = ["tasks", "planted_tasks"]
    OmegaConf.save(cfg, copy / "config.yaml")
    sys.path.insert(0, str(packages))
    try:
        out = tmp_path / "p.jsonl"
        code, _, err = predict_main(f"run={copy}", f"input={inputs}", f"output={out}")
        assert code == 0, err[-3000:]
        assert len(out.read_text().splitlines()) == 2 and not marker.exists()
        cfg.task.name = "pos_tagging"  # a task only that package would register
        OmegaConf.save(cfg, copy / "config.yaml")
        code, _, err = predict_main(f"run={copy}", f"input={inputs}")
        last = _last_line(err)
        assert code == 2 and "task_packages=tasks,planted_tasks" in last, err[-3000:]
        assert not marker.exists()
        # The user names the package: then, and only then, it is imported.
        predict_main(f"run={copy}", f"input={inputs}", "task_packages=tasks,planted_tasks")
        assert marker.read_text() == "ran"
    finally:
        sys.path.remove(str(packages))
        sys.modules.pop("planted_tasks", None)


def test_predict_checks_its_output_before_inference(finished, tmp_path, inputs, monkeypatch):
    import framework.runs

    def no_inference(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(framework.runs, "load_run", no_inference)
    original = inputs.read_bytes()
    for output, text in (
        (inputs, "is the input file"),
        (tmp_path / "missing" / "p.jsonl", "does not exist"),
        (tmp_path, "is a folder"),
    ):
        code, _, err = predict_main(f"run={finished}", f"input={inputs}", f"output={output}")
        assert code == 2 and "Traceback" not in err, err[-3000:]
        assert _last_line(err).startswith("error: ") and text in _last_line(err), err
    assert inputs.read_bytes() == original


def test_predictions_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "p.jsonl"
    out.write_text("earlier predictions\n")
    write_atomically(out, "new\n")
    assert out.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]

    def full_disk(self, text, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError):
        write_atomically(out, "lost\n")
    monkeypatch.undo()
    assert out.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


def test_a_resume_with_another_batch_size_is_refused(finished):
    # The checkpoint's place in the epoch counts batches: of 16 rows there, of 8 here.
    before = _snapshot(finished)
    code, err = run_main(*FAST, "data.batch_size=8", "resume=auto", f"hydra.run.dir={finished}")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = _last_line(err)
    assert "saved with other data settings (data.batch_size 16 there, 8 here)" in last, last
    assert _same(before, _snapshot(finished))


def test_checkpoint_paths_are_relative_inside_the_run_and_absolute_outside(tmp_path):
    run = tmp_path / "run"
    assert rundir.relative(run, run / "checkpoints" / "best.ckpt") == "checkpoints/best.ckpt"
    # callbacks.model_checkpoint.dirpath outside the run: kept, never an error after training
    assert rundir.relative(run, tmp_path / "elsewhere" / "b.ckpt") == str(
        tmp_path / "elsewhere" / "b.ckpt"
    )
