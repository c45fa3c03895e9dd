"""No code runs from a checkpoint: every entry point that reads one unpickles it with
``weights_only=True`` and refuses one that needs more, with one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests import test_run_directory
from tests.conftest import FAST
from tests.test_bad_inputs import run_main
from tests.test_predict import predict_main

finished = test_run_directory.finished  # the fixture: a finished tiny run (its own, per module)


class _Payload:
    """Unpickling this calls ``exec``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _plant(finished: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(a copy of the run whose every checkpoint is a real one plus the payload, the marker)."""
    marker = tmp_path / "code_ran"
    run = tmp_path / "shared_run"
    shutil.copytree(finished, run)
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        state = torch.load(ckpt, weights_only=True)  # all checks but the unpickling would pass
        torch.save({**state, "extra": _Payload(marker)}, ckpt)
    return run, marker


def test_the_planted_checkpoint_runs_code_when_unpickled_unsafely(finished, tmp_path):
    run, marker = _plant(finished, tmp_path)  # the control: the payload is live
    torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert marker.read_text() == "code ran"


def _refused(code: int, err: str, marker: Path, *texts: str) -> None:
    assert code == 2 and "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(t in last for t in texts), last
    assert not marker.exists(), "code from the checkpoint ran"


UNSAFE = ("holds more than tensors and plain data", "it needs exec")


def test_no_entry_point_runs_code_from_a_checkpoint(finished, tmp_path):
    run, marker = _plant(finished, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "new"
    code, err = run_main(*FAST, f"ckpt_path={last}", f"hydra.run.dir={out}")
    _refused(code, err, marker, "ckpt_path", str(last), *UNSAFE)
    code, err = run_main(*FAST, f"model.init_from={last}", f"hydra.run.dir={out}")
    _refused(code, err, marker, "model.init_from", *UNSAFE)
    code, err = run_main(*FAST, "resume=auto", f"hydra.run.dir={run}")
    _refused(code, err, marker, "no checkpoint in", "can be read")  # each one was skipped
    rows = tmp_path / "new.jsonl"
    rows.write_text('{"text": "a fine film"}\n')
    code, _, err = predict_main(f"run={run}", f"input={rows}")
    _refused(code, err, marker, *UNSAFE)
    code, _, err = predict_main(f"run={run}", f"input={rows}", f"ckpt={last}")
    _refused(code, err, marker, str(last), *UNSAFE)
    from framework.evaluate import main

    with pytest.raises(SystemExit) as exit_:
        main([f"run={run}", f"output_dir={tmp_path / 'eval'}"])
    assert exit_.value.code == 2 and not marker.exists()
    assert not (out / "checkpoints").exists()  # the refused runs trained nothing


def test_a_run_predicts_and_evaluates_from_weights_only_checkpoints(finished, tmp_path):
    rows = tmp_path / "new.jsonl"
    rows.write_text('{"text": "a fine film"}\n{"text": "dull"}\n')
    code, out, err = predict_main(f"run={finished}", f"input={rows}")
    assert code == 0, err[-3000:]
    assert [json.loads(line)["id"] for line in out.splitlines()] == [0, 1]
