"""A run directory is never lost or hijacked: a run refuses before it writes, holds a lock, keeps
independent checkpoint files, and a copied run loads and imports only what is its own."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from framework import rundir
from framework.errors import UserError
from framework.fileio import write_atomic
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


def test_overwrite_true_replaces_the_run_it_finds(finished, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "checkpoints" / "step99.ckpt").write_bytes(b"an older run's checkpoint")
    (run_dir / "eval" / "old").mkdir(parents=True)  # an evaluation of the older run
    code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "overwrite=true")
    assert code == 0, err[-3000:]
    assert not (run_dir / "checkpoints" / "step99.ckpt").exists()  # resume=auto cannot mix them
    assert not (run_dir / "eval").exists()
    assert "preset: tiny" in (run_dir / "config.yaml").read_text()
    assert (run_dir / "metrics.json").is_file() and (run_dir / "confusion_matrix.png").is_file()


def test_overwrite_true_deletes_only_what_a_run_wrote(finished, tmp_path):
    """A run directory that also holds the user's files, or the data the new run reads: refused,
    and not a byte of it changes."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir)
    (run_dir / "notes.txt").write_text("my notes on this run\n")
    (run_dir / "figures").mkdir()
    (run_dir / "figures" / "slide.png").write_bytes(b"a figure of mine")
    before = _snapshot(run_dir)
    code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "overwrite=true")
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = _last_line(err)
    assert "overwrite=true deletes only what a run wrote" in last, last
    assert "figures, notes.txt" in last, last
    assert _same(before, _snapshot(run_dir))
    (run_dir / "notes.txt").unlink()
    shutil.rmtree(run_dir / "figures")
    before = _snapshot(run_dir)
    for read in (f"model.init_from={run_dir}", f"data.cache_dir={run_dir / 'csv' / 'cache'}"):
        code, err = run_main(*FAST, f"hydra.run.dir={run_dir}", "overwrite=true", read)
        assert code == 2 and "Traceback" not in err, err[-3000:]
        last = _last_line(err)
        assert "overwrite=true would delete" in last and read in last, last
        assert _same(before, _snapshot(run_dir))


def test_a_folder_that_holds_no_run_is_never_taken_for_one(tmp_path):
    """A folder with a ``csv/`` and a ``config.yaml`` of its own is not a run: a new run there is
    refused with or without overwrite=true, changes nothing and leaves no lock file behind."""
    folder = tmp_path / "project"
    (folder / "csv").mkdir(parents=True)
    (folder / "csv" / "sales.csv").write_text("month,total\n1,10\n")
    (folder / "config.yaml").write_text("database: prod\n")
    before = _snapshot(folder)
    for extra in ((), ("overwrite=true",), ("resume=auto",), ("overwrite=true",)):
        code, err = run_main(*FAST, f"hydra.run.dir={folder}", *extra)
        assert code == 2 and "Traceback" not in err, err[-3000:]
        last = _last_line(err)
        assert "holds config.yaml, csv but no tasklight run" in last, last
        assert _same(before, _snapshot(folder)) and not (folder / rundir.LOCK_NAME).exists()


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
    before = _snapshot(finished)
    last = finished / "checkpoints" / "last.ckpt"
    for output, text in (
        (inputs, "is the input file"),
        (tmp_path / "missing" / "p.jsonl", "does not exist"),
        (tmp_path, "is a folder"),
        (finished / "metrics.json", "is inside the run directory"),
        (finished / "config.yaml", "is inside the run directory"),
        (last, "is inside the run directory"),
        (finished / "predictions.jsonl", "is inside the run directory"),
    ):
        code, _, err = predict_main(f"run={finished}", f"input={inputs}", f"output={output}")
        assert code == 2 and "Traceback" not in err, err[-3000:]
        assert _last_line(err).startswith("error: ") and text in _last_line(err), err
    link = tmp_path / "link.jsonl"  # a symbolic link into the run is inside it too
    link.symlink_to(finished / "metrics.json")
    code, _, err = predict_main(f"run={finished}", f"input={inputs}", f"output={link}")
    assert code == 2 and "is inside the run directory" in _last_line(err), err
    copy = tmp_path / "elsewhere.ckpt"  # ckpt= outside the run: not the output either
    shutil.copy(last, copy)
    code, _, err = predict_main(
        f"run={finished}", f"input={inputs}", f"ckpt={copy}", f"output={copy}"
    )
    assert code == 2 and "is the checkpoint file" in _last_line(err), err
    assert inputs.read_bytes() == original and _same(before, _snapshot(finished))


def test_predictions_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "p.jsonl"
    out.write_text("earlier predictions\n")
    out.chmod(0o640)
    write_atomic(out, "new\n")
    assert out.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]
    assert out.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions are kept

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError):
        write_atomic(out, "lost\n")
    monkeypatch.undo()
    assert out.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["p.jsonl"]


def test_outputs_through_links_and_special_files_keep_what_they_are(finished, tmp_path, inputs):
    target = tmp_path / "kept" / "predictions.jsonl"
    target.parent.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(target)
    code, _, err = predict_main(f"run={finished}", f"input={inputs}", f"output={link}")
    assert code == 0, err[-3000:]
    assert link.is_symlink() and len(target.read_text().splitlines()) == 2
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, "through the pipe\n")
    reader.join(timeout=10)
    assert got == [b"through the pipe\n"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_evaluate_never_writes_among_the_runs_files(finished, tmp_path, capfd):
    from framework.evaluate import main

    before = _snapshot(finished)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.json").write_text('{"revenue": 3}\n')
    for out, text in (
        (finished, "among the run's own files"),
        (finished / "checkpoints", "among the run's own files"),
        (finished.parent, "among the run's own files"),
        (mine, "which is not an earlier evaluation's"),
    ):
        with pytest.raises(SystemExit) as exit_:
            main([f"run={finished}", f"output_dir={out}"])
        last = _last_line(capfd.readouterr().err)
        assert exit_.value.code == 2 and last.startswith("error: ") and text in last, last
    assert _same(before, _snapshot(finished))
    assert (mine / "metrics.json").read_text() == '{"revenue": 3}\n'
    again = tmp_path / "eval"
    for _ in range(2):  # an earlier evaluation's folder is replaced
        main([f"run={finished}", f"output_dir={again}"])
    assert json.loads((again / "metrics.json").read_text())["split"] == "val"


def test_a_damaged_best_checkpoint_falls_back_to_the_newest_intact_one(finished, tmp_path, inputs):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    best = run / json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    with open(best, "r+b") as f:
        f.truncate(100)
    code, out, err = predict_main(f"run={run}", f"input={inputs}")
    assert code == 0, err[-3000:]
    assert f"warning: checkpoint {best} cannot be read" in err
    assert f"using {run / 'checkpoints' / 'last.ckpt'}" in err
    assert len(out.splitlines()) == 2
    from framework.evaluate import main

    main([f"run={run}", f"output_dir={tmp_path / 'eval'}"])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["examples"] > 0
    (run / "checkpoints" / "last.ckpt").write_bytes(b"damaged too")
    code, _, err = predict_main(f"run={run}", f"input={inputs}")
    assert code == 2 and f"checkpoint {best} cannot be read" in _last_line(err), err


def test_the_export_is_readable_by_others(finished):
    umask = os.umask(0)
    os.umask(umask)
    for path in (finished / "export", *(finished / "export").iterdir()):
        expected = (0o777 if path.is_dir() else 0o666) & ~umask
        assert path.stat().st_mode & 0o777 == expected, path


def test_predict_in_a_run_directory_imports_nothing_from_it(finished, tmp_path):
    """``cd RUN && python -m framework.predict run=.``: the folder's own ``tasks/`` package (or
    any module there) is never imported; nor by ``tasklight-predict``."""
    run = tmp_path / "shared_run"
    shutil.copytree(finished, run)
    marker = tmp_path / "code_ran"
    (run / "tasks").mkdir()
    (run / "tasks" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (run / "omegaconf.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    script = Path(sys.executable).with_name("tasklight-predict")
    env = {**os.environ, "PYTHONPATH": ""}
    for command in ([sys.executable, "-m", "framework.predict"], [str(script)]):
        done = subprocess.run(
            [*command, "run=.", "input=-"], cwd=run, input="a fine film\n",
            capture_output=True, text=True, env=env, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["label"] in ("negative", "positive")
        assert not marker.exists(), command
    # A package the user names is looked up there, after the installed ones.
    (run / "mine.py").write_text(f"open({str(tmp_path / 'mine_ran')!r}, 'w').write('ran')\n")
    done = subprocess.run(
        [sys.executable, "-m", "framework.predict", "run=.", "input=-", "task_packages=tasks,mine"],
        cwd=run, input="a fine film\n", capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "mine_ran").exists() and not marker.exists()


def test_a_predict_row_without_its_text_is_refused(finished, tmp_path):
    """A JSON line without the key the task reads was predicted as an empty text."""
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"text": "a fine film"}\n{"review": "dull"}\n')
    for args in ((f"input={rows}",), ("input=-",)):
        stdin = rows.read_text() if args == ("input=-",) else None
        code, out, err = predict_main(f"run={finished}", *args, stdin=stdin)
        assert code == 2 and not out, err[-3000:]
        last = _last_line(err)
        assert "input row 2 has no 'text' (a missing key or null)" in last, last


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
