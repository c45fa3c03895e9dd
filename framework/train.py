"""Entry point: ``python -m framework.train [overrides]``.

Composes the config, builds tokenizer, encoder, task, data and the generic module, fits, then
validates (and tests, when a test split exists) with the best checkpoint, exports a Hugging Face
model and writes ``metrics.json``. This is the only place that instantiates from config.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from framework.cli import check_overrides
from framework.config import print_config, register_resolvers
from framework.errors import UserError

register_resolvers()

TASK_KEYS = ("name", "monitor", "mode")  # task config keys that are not task constructor args


def _wandb_offline_without_key() -> None:
    """wandb must never block or prompt: with no API key it logs offline (sync later)."""
    netrc = Path.home() / ".netrc"
    has_key = os.environ.get("WANDB_API_KEY") or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
    )
    if not has_key:
        os.environ.setdefault("WANDB_MODE", "offline")


def _instantiate_all(group: DictConfig | None) -> list:
    out = []
    for _name, node in (group or {}).items():
        if node is None:
            continue
        if "WandbLogger" in str(node.get("_target_", "")):
            _wandb_offline_without_key()
        out.append(hydra.utils.instantiate(node))
    return out


def build_task(task_cfg: DictConfig):
    """The registered task named ``task_cfg.name``, with the rest of ``task_cfg`` as its args."""
    from framework.registry import get_task

    args = OmegaConf.to_container(task_cfg, resolve=True)
    return get_task(task_cfg.name)(**{k: v for k, v in args.items() if k not in TASK_KEYS})


def build(cfg: DictConfig) -> tuple:
    """(tokenizer, datamodule with encoded splits, module) as configured; nothing trained."""
    from transformers import AutoTokenizer

    from framework.data import DataModule
    from framework.module import TaskModule
    from framework.pretrained import build_encoder

    tok_path = cfg.model.tokenizer or cfg.model.name_or_path
    if not tok_path:
        raise UserError("set model.tokenizer (a tokenizer directory or hub id) for model.preset")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_path, use_fast=True)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot load a tokenizer from {tok_path!r}: {str(e).splitlines()[0]}"
        ) from e
    task = build_task(cfg.task)
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = DataModule(task, tokenizer, seed=cfg.seed, **data_args)
    datamodule.setup_data()
    m = cfg.model
    encoder, extra = build_encoder(
        m.name_or_path, m.preset, m.attn_impl, len(tokenizer), m.attention_dropout
    )
    if datamodule.max_length > encoder.cfg.max_position_embeddings:
        raise UserError(
            f"data.max_length={datamodule.max_length} exceeds the model's "
            f"{encoder.cfg.max_position_embeddings} positions; lower data.max_length"
        )
    head = task.build_head(encoder.cfg.hidden_size, extra)
    module = TaskModule(encoder, task, head, **cfg.optim)
    return tokenizer, datamodule, module


def run(cfg: DictConfig) -> dict:
    """Train and evaluate as configured; returns the final metrics (also in metrics.json)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities import rank_zero_only

    from framework.export import export_hf

    run_dir = Path(cfg.paths.output_dir)
    print_config(cfg)
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    L.seed_everything(cfg.seed, workers=True)
    tokenizer, datamodule, module = build(cfg)

    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.perf_counter() - start

    ckpt = next((c for c in callbacks if isinstance(c, ModelCheckpoint)), None)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    metrics: dict = {}
    for result in trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False):
        metrics.update(result)
    if datamodule.has_test:
        for result in trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False):
            metrics.update(result)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["fit_seconds"] = round(fit_seconds, 3)
    metrics["best_checkpoint"] = best

    if trainer.is_global_zero:
        export_hf(module, tokenizer, run_dir / "export")
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        shown = " ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("val/", "test/"))
        )
        print(f"{shown} fit_seconds={fit_seconds:.1f}")
        print(f"Run directory: {run_dir}")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # a diverged run: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
