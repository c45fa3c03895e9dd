"""Entry point: ``python -m framework.train [overrides]``.

Composes the config, builds tokenizer, encoder, task, data and the generic module, fits, then
validates (and tests, when a test split exists) with the best checkpoint, exports a Hugging Face
model and writes ``metrics.json``. This is the only place that instantiates from config.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from framework.cli import check_overrides
from framework.config import CONF_DIR, print_config, register_resolvers
from framework.errors import UserError
from framework.timing import TrainTimer

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


def _wandb_run_id(run_dir: Path) -> str | None:
    """The wandb run id of ``run_dir``, made once and kept in it: a resumed run logs to the
    same wandb run (WandbLogger alone would start a new one after a restart)."""
    from lightning.pytorch.utilities import rank_zero_only

    file = run_dir / "wandb_run_id"
    if not file.is_file() and rank_zero_only.rank == 0:
        import uuid

        file.write_text(uuid.uuid4().hex[:8] + "\n")  # wandb ids: short, alphanumeric
    return file.read_text().strip() if file.is_file() else None  # other ranks log nothing


def _instantiate_all(group: DictConfig | None, run_dir: Path | None = None) -> list:
    out = []
    for _name, node in (group or {}).items():
        if node is None:
            continue
        if "WandbLogger" in str(node.get("_target_", "")):
            _wandb_offline_without_key()
            if node.get("id") is None and run_dir is not None:
                out.append(hydra.utils.instantiate(node, id=_wandb_run_id(run_dir), resume="allow"))
                continue
        out.append(hydra.utils.instantiate(node))
    return out


def build_task(task_cfg: DictConfig):
    """The registered task named ``task_cfg.name``, with the rest of ``task_cfg`` as its args."""
    import inspect

    from framework.registry import get_task

    args = OmegaConf.to_container(task_cfg, resolve=True)
    cls = get_task(task_cfg.name)
    kwargs = {k: v for k, v in args.items() if k not in TASK_KEYS}
    known = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - known)
    if unknown:  # e.g. a key an experiment sets for another task
        raise UserError(
            f"task {task_cfg.name!r} has no option {', '.join(unknown)}; its options: "
            f"{', '.join(sorted(known))}"
        )
    return cls(**kwargs)


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX); Linux only."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return True  # cannot tell: no warning
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def check_precision(trainer_cfg: DictConfig) -> None:
    """Warn when mixed precision would run on a CPU without bf16 (emulated: slower, not faster).

    On a CPU Lightning turns 16-mixed into bf16-mixed.
    """
    import torch

    precision, accelerator = str(trainer_cfg.get("precision")), trainer_cfg.get("accelerator")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and precision.startswith(("bf16", "16")) and not cpu_has_native_bf16():
        warnings.warn(
            f"trainer.precision={precision} on a CPU without native bfloat16 (no AVX512-BF16/AMX) "
            "runs emulated and slower than 32-true (2.7-5x measured on a 2-core EPYC); use "
            "trainer.precision=32-true on this machine",
            stacklevel=2,
        )


def plot_curve(csv_file: Path, key: str, out: Path) -> None:
    """The training curve, from the CSV log, as a PNG: one panel each for the loss (training
    and validation), the monitored metric ``key`` and, when logged, the validation accuracy
    (with ``val/acc_most_frequent``, the unigram baseline of masked-LM pretraining), per step."""
    import csv

    if not csv_file.is_file():
        return
    series: dict[str, dict[int, float]] = {}
    with open(csv_file, newline="") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if value and row.get("step") and name not in ("step", "epoch"):
                    try:  # a resumed run's later row wins
                        series.setdefault(name, {})[int(row["step"])] = float(value)
                    except ValueError:
                        continue
    panels = [["train/loss", "val/loss"], [key]]
    if "val/acc" in series and key != "val/acc":
        panels.append(["val/acc", "val/acc_most_frequent"])
    panels = [[k for k in p if len(series.get(k, {})) >= 2] for p in panels]
    panels = [p for p in panels if p]
    if not panels:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, names in zip(axes[0], panels, strict=True):
        for name in names:
            steps = sorted(series[name])
            style = {"marker": "o", "markersize": 3} if name.startswith("val/") else {}
            ax.plot(steps, [series[name][s] for s in steps], label=name, **style)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(names[0].split("/")[-1] if len(names) > 1 else names[0])
        if "perplexity" in names[0]:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def trained_tokenizer(cfg: DictConfig, datamodule) -> Path:
    """The run's own WordPiece tokenizer (``model.train_tokenizer``: its vocabulary size),
    trained on the train split's ``task.text_column`` once and kept in ``RUN_DIR/tokenizer`` (a
    resumed run, and every process of a job, reads the same one)."""
    from lightning.pytorch.utilities import rank_zero_only

    from framework.tokenizer import train_wordpiece

    m = cfg.model
    if m.name_or_path or m.get("init_from"):
        raise UserError(
            "model.train_tokenizer trains a vocabulary for a model with random weights "
            "(model.preset); a pretrained model keeps its own: set model.train_tokenizer=null"
        )
    out = Path(cfg.paths.output_dir) / "tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    if rank_zero_only.rank != 0:  # launched together (torchrun, SLURM): wait for rank 0's
        for _ in range(3600):
            if (out / "tokenizer.json").is_file():
                return out
            time.sleep(1)
        raise UserError(f"no tokenizer appeared in {out} within an hour (process 0 trains it)")
    column = getattr(datamodule.task, "text_column", None)
    if column is None:
        raise UserError(f"task {cfg.task.name!r} has no text_column to train a tokenizer on")
    texts = datamodule.raw_split("train")[column]
    start = time.perf_counter()
    train_wordpiece(texts, int(m.train_tokenizer), bool(m.get("lowercase", True)), out)
    print(f"Trained a {m.train_tokenizer}-token WordPiece tokenizer in "
          f"{time.perf_counter() - start:.1f} s: {out}")  # fmt: skip
    return out


def build(cfg: DictConfig) -> tuple:
    """(tokenizer, datamodule with encoded splits, module) as configured; nothing trained."""
    from transformers import AutoTokenizer

    from framework.data import DataModule
    from framework.module import TaskModule
    from framework.pretrained import build_encoder, resolve_init_from

    m = cfg.model
    init_from = m.get("init_from")
    task = build_task(cfg.task)
    data_args = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = DataModule(task, None, seed=cfg.seed, **data_args)
    if m.get("train_tokenizer"):
        tok_path = str(trained_tokenizer(cfg, datamodule))
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


def build_trainer(trainer_cfg: DictConfig, callbacks: list, loggers: list):
    """The Lightning Trainer of ``trainer.*``; a setting it refuses is a ``UserError``."""
    import torch
    from hydra.errors import InstantiationException
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if trainer_cfg.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={trainer_cfg.accelerator} but no CUDA GPU is visible (is this "
            "torch a CPU build?); use trainer=cpu, or trainer.accelerator=auto"
        )
    try:
        return hydra.utils.instantiate(trainer_cfg, callbacks=callbacks, logger=loggers)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, (ValueError, TypeError, MisconfigurationException)):
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause)
            raise UserError(f"the trainer.* config is refused by Lightning: {first}") from e
        raise


def run(cfg: DictConfig) -> dict:
    """Train and evaluate as configured; returns the final metrics (also in metrics.json)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import FSDPStrategy
    from lightning.pytorch.utilities import rank_zero_only

    from framework.checkpoint import check_fits, resolve_resume
    from framework.export import export_hf

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
    callbacks = [*_instantiate_all(cfg.get("callbacks")), timer]
    loggers = _instantiate_all(cfg.get("logger"), run_dir)
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
    for result in trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False):
        metrics.update(result)
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
        plot_curve(run_dir / "csv" / "metrics.csv", cfg.task.monitor, run_dir / "curve.png")
        shown = " ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith(("val/", "test/"))
        )
        print(f"{shown} fit_seconds={fit_seconds:.1f} train_seconds={timer.seconds:.1f}")
        print(f"Run directory: {run_dir}")
    return metrics


# An absolute path: the entry point also runs when imported (console script, wrappers).
@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
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
