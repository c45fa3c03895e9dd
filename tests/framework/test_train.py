"""The entry point end to end, as a user runs it: `python -m framework.train ...`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from framework.build import build
from tests.conftest import FAST, compose, run_cli


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory) -> tuple[Path, object]:
    run_dir = tmp_path_factory.mktemp("run")
    return run_dir, run_cli(*FAST, f"hydra.run.dir={run_dir}")


def test_fast_run_writes_a_complete_run_directory(fast_run):
    run_dir, proc = fast_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"Run directory: {run_dir}"
    assert "litlogger" not in proc.stdout + proc.stderr  # Lightning's advertisement, silenced
    assert "- model=tiny" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "preset: tiny" in (run_dir / "config.yaml").read_text()  # resolved config
    assert (
        (run_dir / "csv" / "metrics.csv")
        .read_text()
        .startswith(("epoch", "lr", "step", "train", "val"))
    )
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    m = _metrics(run_dir)
    # one epoch: the best and the last checkpoint are one state, in two independent files
    best = run_dir / m["best_checkpoint"]  # relative to the run directory
    last = run_dir / "checkpoints" / "last.ckpt"
    assert not os.path.samefile(last, best) and last.read_bytes() == best.read_bytes()
    assert {"val/acc", "val/f1", "val/mcc", "val/loss", "fit_seconds"} <= set(m)
    assert 0.0 <= m["val/acc"] <= 1.0 and m["fit_seconds"] > 0
    # training batches only: less than fit, which also validates and writes checkpoints
    assert 0 < m["train_seconds"] < m["fit_seconds"]
    assert best.name.startswith("best-") and best.is_file()


def test_export_matches_the_best_checkpoint(fast_run, tmp_path):
    run_dir, proc = fast_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = compose(*FAST, f"paths.output_dir={tmp_path}")
    _, dm, module = build(cfg)
    best = run_dir / _metrics(run_dir)["best_checkpoint"]
    state = torch.load(best, weights_only=False)["state_dict"]
    module.load_state_dict(state)
    module.eval()
    hf = AutoModelForSequenceClassification.from_pretrained(run_dir / "export").eval()
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        ours = module(batch).logits
        theirs = hf(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")).logits
    assert (ours - theirs).abs().max().item() <= 1e-4


def test_multirun_sweeps_each_value(tmp_path):
    proc = run_cli("-m", *FAST, "optim.lr=1e-4,3e-4", f"hydra.sweep.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lrs = [
        float((tmp_path / j / "config.yaml").read_text().split("lr: ")[1].split()[0]) for j in "01"
    ]
    assert lrs == [1e-4, 3e-4]
    assert all("val/acc" in _metrics(tmp_path / j) for j in "01")


def test_bad_label_exits_nonzero_with_one_line_and_no_checkpoint(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("text,label\ngood,positive\nbad,negative\n")
    (data / "dev.csv").write_text("text,label\nmeh,neutral\n")
    run_dir = tmp_path / "run"
    proc = run_cli(*FAST, f"data.path={data}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: label 'neutral' is not in the label set ['negative', 'positive']; "
        "fix the data or set task.labels"
    )
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "metrics.json").exists()


def test_unknown_override_exits_nonzero_with_choices():
    proc = run_cli("data=sst3")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown data 'sst3'; choose one of: commonsenseqa, conll2003, goemotions, mrpc, "
        "quickstart, squad, sst2, stsb, wikitext2. Did you mean 'sst2'?"
    )


def test_last_checkpoint_follows_epochs_that_do_not_improve(tmp_path):
    # lr ~0: the validation accuracy never changes, so only epoch 0 is "best" (Lightning 2.6
    # alone would leave last.ckpt at epoch 0's step)
    proc = run_cli(*FAST, "trainer.max_epochs=3", "optim.lr=1e-12", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = tmp_path / "checkpoints"
    best = tmp_path / _metrics(tmp_path)["best_checkpoint"]
    steps = {p.name: torch.load(p, weights_only=False)["global_step"] for p in ckpts.iterdir()}
    per_epoch = steps[best.name]
    assert best.name.startswith("best-epoch0") and per_epoch > 0
    assert steps["last.ckpt"] == 3 * per_epoch  # the end of the last epoch
    assert not os.path.samefile(ckpts / "last.ckpt", best)  # replacing last kept the best intact


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    cfg = compose(*FAST, f"paths.output_dir={tmp_path}")  # 4 batches of 16
    _, dm, module = build(cfg)
    step = module.task.step

    def poisoned(head, hidden, batch):
        out = step(head, hidden, batch)
        if module.global_step == 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(module.task, "step", poisoned)
    ckpt = ModelCheckpoint(tmp_path / "checkpoints", save_last=True, every_n_train_steps=2)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, limit_val_batches=1,
        num_sanity_val_steps=0, callbacks=[ckpt], logger=False, enable_progress_bar=False,
    )  # fmt: skip
    with pytest.raises(FloatingPointError, match="training loss is nan at step 3"):
        trainer.fit(module, datamodule=dm)
    last = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == 2  # the checkpoint of step 2 survives the NaN at step 3
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_console_script_runs_like_the_module(tmp_path):
    # `tasklight-train` imports the entry point instead of running it as __main__.
    import os
    import subprocess
    import sys

    script = Path(sys.executable).parent / "tasklight-train"
    proc = subprocess.run(
        [str(script), *FAST, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"Run directory: {tmp_path}"


def test_bf16_mixed_clips_gradients_with_the_fused_optimizer(tmp_path, monkeypatch):
    # Lightning refuses to clip for a fused AdamW under any mixed precision; under bf16-mixed
    # (no loss scaling) the module clips itself, so trainer=gpu runs with the default clipping.
    import lightning as L

    cfg = compose(*FAST, f"paths.output_dir={tmp_path}")
    _, dm, module = build(cfg)
    clip = torch.nn.utils.clip_grad_norm_
    norms = []

    def spy(params, max_norm, *args, **kwargs):
        params = list(params)
        out = clip(params, max_norm, *args, **kwargs)
        norms.append((max_norm, torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for p in params if p.grad is not None])).item()))  # fmt: skip
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    trainer = L.Trainer(
        accelerator="cpu", precision="bf16-mixed", gradient_clip_val=1e-3, max_steps=2,
        limit_val_batches=0, logger=False, enable_progress_bar=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    assert trainer.optimizers[0].defaults["fused"] is True
    assert len(norms) == 2  # every step clipped...
    assert all(limit == 1e-3 and 0 < norm <= 1.01e-3 for limit, norm in norms)  # ...to the limit


def test_fp16_loss_scaling_turns_the_fused_optimizer_off_when_clipping(tmp_path):
    # A fused AdamW unscales fp16's scaled gradients inside its step, after clipping: with a loss
    # scaler the default (optim.fused=null) is the foreach AdamW, and fused=true is refused.
    from types import SimpleNamespace

    from lightning.pytorch.plugins.precision import MixedPrecision

    from framework.errors import UserError

    _, _, module = build(compose(*FAST, f"paths.output_dir={tmp_path}"))
    scaled = MixedPrecision.__new__(MixedPrecision)
    scaled.scaler = object()  # what 16-mixed on CUDA holds
    module._trainer = SimpleNamespace(precision_plugin=scaled, gradient_clip_val=1.0)
    assert module._fused() is False
    module._trainer.gradient_clip_val = 0
    assert module._fused() is None  # no clipping: fused where supported
    module._trainer.gradient_clip_val, module.fused = 1.0, True
    with pytest.raises(UserError, match=r"optim\.fused=true cannot clip"):
        module._fused()
