"""The documented recipes on real data and their accuracy bars (slow: `make test-slow`)."""

from __future__ import annotations

import json

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
def test_sst2_8000_sentences_one_epoch_reaches_085_over_3_seeds(tmp_path):
    # Measured with the default recipe (BENCHMARKS.md, "Fast by default"): seeds 0/1/2 give
    # 0.8567 / 0.8498 / 0.8544, mean 0.8536. The bar is on the mean of the same 3 seeds; a single
    # seed may land under 0.85 (seed 1 does), so each alone only has to clear 0.84.
    accs = []
    for seed in (0, 1, 2):
        run_dir = tmp_path / f"seed{seed}"
        proc = run_cli(
            "experiment=sst2", f"data.path={SST2}", "data.max_train_samples=8000",
            "data.batch_size=32", "optim.lr=5e-5", "trainer.max_epochs=1", f"seed={seed}",
            f"hydra.run.dir={run_dir}", "callbacks=none", timeout=3600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        accs.append(json.loads((run_dir / "metrics.json").read_text())["val/acc"])
    assert sum(accs) / 3 >= 0.85 and min(accs) >= 0.84, accs
