"""Entry point: ``python -m framework.train [overrides]``.

Composes the config, builds tokenizer, encoder, task, data and the generic module, fits, then
validates (and tests, when a test split exists) with the best checkpoint, exports a Hugging Face
model and writes ``metrics.json``. This is the only place that instantiates from config.
"""

from __future__ import annotations

import copy
import json
import sys
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from framework import rundir
from framework.build import apply_task_defaults, build
from framework.checks import check_config
from framework.config import CONF_DIR, print_config, register_resolvers
from framework.errors import UserError, print_error
from framework.overrides import (
    check_overrides,
    expand_task_overrides,
    expand_trainer_overrides,
)

register_resolvers()


def run(cfg: DictConfig) -> dict:
    """Train and evaluate as configured, in a run directory claimed for this run (see
    ``framework.rundir``); returns the final metrics (also in metrics.json)."""
    from lightning.pytorch.utilities import rank_zero_only

    run_dir = Path(cfg.paths.output_dir)
    apply_task_defaults(cfg)  # an unknown task fails here, before the run directory is made
    print_config(cfg)
    check_config(cfg)
    resume, overwrite = cfg.get("resume") == "auto", bool(cfg.get("overwrite"))
    reads = {  # what overwrite=true must never delete
        "data.path": cfg.data.get("path"),
        "data.cache_dir": cfg.data.get("cache_dir"),
        "model.name_or_path": cfg.model.get("name_or_path"),
        "model.tokenizer": cfg.model.get("tokenizer"),
        "model.init_from": cfg.model.get("init_from"),
        "ckpt_path": cfg.get("ckpt_path"),
    }
    with rundir.claim(run_dir, resume, overwrite, rank=rank_zero_only.rank, reads=reads):
        return _fit_and_evaluate(cfg, run_dir)


def _fit_and_evaluate(cfg: DictConfig, run_dir: Path) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import FSDPStrategy
    from lightning.pytorch.utilities import rank_zero_only

    from framework.export import export_hf
    from framework.loggers import instantiate_all
    from framework.plots import plot_curve
    from framework.resume import check_fits, resolve_resume
    from framework.timing import TrainTimer
    from framework.trainer import build_trainer, check_precision

    resume_from = resolve_resume(run_dir, cfg.get("resume"), cfg.get("ckpt_path"))
    L.seed_everything(cfg.seed, workers=True)
    tokenizer, datamodule, module = build(cfg)
    check_precision(cfg.trainer)
    if resume_from is not None:
        check_fits(resume_from, module, datamodule)
    # Every check has passed: from here on the run writes into its directory.
    if rank_zero_only.rank == 0:
        rundir.write_config(run_dir, cfg)
        if cfg.get("resume") == "auto":
            print(f"Resuming from {resume_from}" if resume_from else f"Starting {run_dir}")

    timer = TrainTimer()
    callbacks = [*instantiate_all(cfg.get("callbacks")), timer]
    loggers = instantiate_all(cfg.get("logger"), run_dir)
    trainer = build_trainer(cfg.trainer, callbacks, loggers)

    start_metrics: dict = {}
    if cfg.get("validate_first") and resume_from is None:  # the curve's starting point
        for result in trainer.validate(module, datamodule=datamodule, verbose=False):
            start_metrics.update({f"{k}_start": float(v) for k, v in result.items()})
        # Metric states made under validate's inference mode cannot be updated in fit's loop.
        module.val_metrics.reset()
    # Under FSDP the trained module holds shards only: the export is written from an unwrapped
    # copy (made here, before fit wraps the module) given the gathered full weights.
    sharded = isinstance(trainer.strategy, FSDPStrategy)
    unwrapped = copy.deepcopy(module) if sharded and trainer.is_global_zero else None
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    fit_seconds = time.perf_counter() - start
    # The optimizer's state (AdamW: twice the weights) and the last gradients are not needed
    # for evaluation: freed before the best checkpoint is loaded (the peak memory of the run).
    for optimizer in trainer.optimizers:
        optimizer.state.clear()
    module.zero_grad(set_to_none=True)

    # The checkpoint callback that tracks the monitored metric ("best"), if any.
    checkpoints = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    ckpt = next((c for c in checkpoints if c.monitor), checkpoints[0] if checkpoints else None)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    metrics: dict = {}
    module.draw_figures = True  # the task's figures (confusion matrix...) of this evaluation
    for result in trainer.validate(
        module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
    ):
        metrics.update(result)
    module.draw_figures = False  # drawn below, after metrics.json: figures never block it
    if datamodule.has_test:
        for result in trainer.test(
            module, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True
        ):
            metrics.update(result)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics.update(start_metrics)
    metrics.update({f"packing_efficiency/{k}": v for k, v in datamodule.packing_efficiency.items()})
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["train_seconds"] = round(timer.seconds, 3)  # training batches only (TrainTimer)
    # Relative to the run directory: a copied or moved run still names its own file.
    metrics["best_checkpoint"] = rundir.relative(run_dir, best) if best else None

    # Gathering FSDP's shards is a collective: every process joins, rank 0 gets the weights.
    full_state = trainer.strategy.lightning_module_state_dict() if sharded else None
    if trainer.is_global_zero:
        if unwrapped is not None:
            unwrapped.load_state_dict(full_state)
        try:
            export_hf(unwrapped or module, tokenizer, run_dir / "export")
        except UserError as e:  # the training's results stand; only the export is missing
            warnings.warn(str(e), stacklevel=1)
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        shown = " ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("val/", "test/"))
        )
        print(f"{shown} fit_seconds={fit_seconds:.1f} train_seconds={timer.seconds:.1f}")
    figures = module.write_figures(run_dir)  # every process: the metric states sync
    if trainer.is_global_zero:
        rundir.record(run_dir, *figures)  # overwrite=true knows them as the run's own
        plot_curve(run_dir / "csv" / "metrics.csv", cfg.task.monitor, run_dir / "curves.png")
        print(f"Run directory: {run_dir}")
    return metrics


# An absolute path: the entry point also runs when imported (console script, wrappers).
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One run; returns the monitored metric of its best checkpoint (a sweep's objective)."""
    try:
        return run(cfg).get(cfg.task.monitor)
    except UserError as e:
        print_error(e)
        sys.exit(2)
    except FloatingPointError as e:  # a diverged run: one line, not a traceback
        print_error(e)
        sys.exit(3)
    except KeyboardInterrupt:  # before training (preparing data) or after: one line
        print_error(
            "interrupted (Ctrl-C); nothing half-written was kept: run the same command again "
            "(with resume=auto to continue a run that had started training)"
        )
        sys.exit(130)  # 128 + SIGINT, as a shell reports it
    except SystemExit as e:  # Lightning's SIGTERMException (exit status 0) is not a success
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(e, SIGTERMException):
            raise
        print_error(
            f"stopped by SIGTERM ({_sigterm_checkpoint(cfg)}); continue the run with the "
            "same command and resume=auto"
        )
        sys.exit(143)  # 128 + SIGTERM, as a shell reports a process the signal ended


def _sigterm_checkpoint(cfg: DictConfig) -> str:
    """What was saved when SIGTERM stopped the run, for its last line."""
    from framework.resume import newest_valid_checkpoint

    newest = newest_valid_checkpoint(Path(cfg.paths.output_dir))
    return f"newest checkpoint: {newest}" if newest else "no checkpoint was written yet"


def main() -> None:
    try:
        # A task named by import path or plug-in name, without a YAML in conf/task/.
        sys.argv[1:] = expand_task_overrides(sys.argv[1:])
        check_overrides(sys.argv[1:])
        # Any lightning.Trainer argument as trainer.NAME=..., listed in the config or not.
        sys.argv[1:] = expand_trainer_overrides(sys.argv[1:])
    except UserError as e:
        print_error(e)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
