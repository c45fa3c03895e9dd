"""The documented recipes on real data and their accuracy bars (slow: `make test-slow`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

SST2 = ROOT.parent / "shared" / "data" / "sst2"


@pytest.mark.slow
def test_quickstart_reaches_085_dev_accuracy(tmp_path):
    proc = run_cli(f"hydra.run.dir={tmp_path}", "callbacks=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "metrics.json").read_text())["val/acc"] >= 0.85


@pytest.mark.slow
@pytest.mark.skipif(not SST2.is_dir(), reason="needs ../shared/data/sst2")
def test_sst2_8000_sentences_one_epoch_reaches_085(tmp_path):
    proc = run_cli(
        "experiment=sst2", f"data.path={SST2}", "data.max_train_samples=8000",
        "data.batch_size=32", "optim.lr=5e-5", "trainer.max_epochs=1", "seed=0",
        f"hydra.run.dir={tmp_path}", "callbacks=none", timeout=3600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((Path(tmp_path) / "metrics.json").read_text())
    assert metrics["val/acc"] >= 0.85, metrics
