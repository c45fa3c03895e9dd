"""A two-trial Optuna sweep (hparams_search=optuna) of the tiny model through the entry point."""

from __future__ import annotations

import json

import yaml

from tests.conftest import FAST, run_cli


def test_two_trial_optuna_sweep_maximizes_the_monitored_metric(tmp_path):
    proc = run_cli(*FAST, "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                   f"hydra.sweep.dir={tmp_path}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [json.loads((tmp_path / str(i) / "metrics.json").read_text()) for i in (0, 1)]
    lrs = [yaml.safe_load((tmp_path / str(i) / "config.yaml").read_text())["optim"]["lr"]
           for i in (0, 1)]  # fmt: skip
    assert lrs[0] != lrs[1] and all(1e-5 <= lr <= 2e-4 for lr in lrs)  # drawn from the space
    result = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert result["best_value"] == max(t["val/acc"] for t in trials)
