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
from omegaconf import DictConfig, OmegaConf

from framework.config import CONF_DIR, print_config, register_resolvers
from framework.errors import UserError
from framework.overrides import check_overrides, expand_trainer_overrides

register_resolvers()


def build(cfg: DictConfig) -> tuple:
    """(tokenizer, datamodule with encoded splits, module) as configured; nothing trained."""
    from transformers import AutoTokenizer

    from framework.data import DataModule
    from framework.module import TaskModule
    from framework.pretrained import build_encoder, resolve_init_from
    from framework.registry import build_task, import_task_packages
    from framework.tokenizer import run_tokenizer

    m = cfg.model
    init_from = m.get("init_from")
    import_task_packages(cfg.task_packages)
    task = build_task(cfg.task)
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = DataModule(task, None, seed=cfg.seed, **data_args)
    if m.get("train_tokenizer"):
        tok_path = str(run_tokenizer(cfg, datamodule))
    elif init_from:  # the run's tokenizer goes with its encoder (model.tokenizer is not read)
        tok_path = str(resolve_init_from(init_from)[0])
    else:
        tok_path = m.tokenizer or m.name_or_path
    if not tok_path:
        raise UserError("set model.tokenizer (a tokenizer directory or hub id) for model.preset")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load a tokenizer from {tok_path!r}: {str(e).splitlines()[0]}"
        ) from e
    datamodule.tokenizer = tokenizer
    datamodule.setup_data()
    m = cfg.model
    encoder, extra = build_encoder(
        m.name_or_path,
        m.preset,
        m.attn_impl,
        len(tokenizer),
        m.attention_dropout,
        m.get("hidden_dropout"),
        init_from,
        from_scratch=bool(m.get("from_scratch", False)),
    )
    encoder.unpad = bool(m.get("unpad", False))
    if len(tokenizer) > encoder.cfg.vocab_size:  # its ids would index past the embeddings
        raise UserError(
            f"the tokenizer ({tok_path}) has {len(tokenizer)} tokens but the model's embeddings "
            f"have {encoder.cfg.vocab_size} rows; use the model's own tokenizer "
            "(model.tokenizer=null) or a model whose vocabulary holds it"
        )
    positions = encoder.cfg.max_position_embeddings - encoder.cfg.position_offset
    if datamodule.max_length > positions:
        raise UserError(
            f"data.max_length={datamodule.max_length} exceeds the model's {positions} "
            "positions; lower data.max_length"
        )
    head = task.build_head(encoder.cfg.hidden_size, extra)
    module = TaskModule(encoder, task, head, **cfg.optim)
    return tokenizer, datamodule, module


def run(cfg: DictConfig) -> dict:
    """Train and evaluate as configured; returns the final metrics (also in metrics.json)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import FSDPStrategy
    from lightning.pytorch.utilities import rank_zero_only

    from framework.checkpoint import check_fits, resolve_resume
    from framework.export import export_hf
    from framework.loggers import instantiate_all
    from framework.plots import plot_curve
    from framework.timing import TrainTimer
    from framework.trainer import build_trainer, check_precision

    run_dir = Path(cfg.paths.output_dir)
    print_config(cfg)
    resume_from = resolve_resume(run_dir, cfg.get("resume"), cfg.get("ckpt_path"))
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        if cfg.get("resume") == "auto":
            print(f"Resuming from {resume_from}" if resume_from else f"Starting {run_dir}")
    L.seed_everything(cfg.seed, workers=True)
    tokenizer, datamodule, module = build(cfg)

    check_precision(cfg.trainer)
    timer = TrainTimer()
    callbacks = [*instantiate_all(cfg.get("callbacks")), timer]
    loggers = instantiate_all(cfg.get("logger"), run_dir)
    trainer = build_trainer(cfg.trainer, callbacks, loggers)
    if resume_from is not None:
        check_fits(resume_from, module)

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
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
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
    for result in trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False):
        metrics.update(result)
    module.write_figures(run_dir)
    if datamodule.has_test:
        for result in trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False):
            metrics.update(result)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics.update(start_metrics)
    metrics.update({f"packing_efficiency/{k}": v for k, v in datamodule.packing_efficiency.items()})
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["train_seconds"] = round(timer.seconds, 3)  # training batches only (TrainTimer)
    metrics["best_checkpoint"] = best

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
        plot_curve(run_dir / "csv" / "metrics.csv", cfg.task.monitor, run_dir / "curves.png")
        shown = " ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("val/", "test/"))
        )
        print(f"{shown} fit_seconds={fit_seconds:.1f} train_seconds={timer.seconds:.1f}")
        print(f"Run directory: {run_dir}")
    return metrics


# An absolute path: the entry point also runs when imported (console script, wrappers).
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    """One run; returns the monitored metric of its best checkpoint (a sweep's objective)."""
    try:
        return run(cfg).get(cfg.task.monitor)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # a diverged run: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
        # Any lightning.Trainer argument as trainer.NAME=..., listed in the config or not.
        sys.argv[1:] = expand_trainer_overrides(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
