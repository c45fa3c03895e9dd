"""The Lightning Trainer as the ``trainer`` config group describes it, with its settings checked
first: one-line errors for what Lightning would refuse with a traceback, a warning for mixed
precision on a CPU that would emulate it."""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig

from framework.errors import UserError


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
            "runs emulated and slower than 32-true (2.7-5x, BENCHMARKS.md); use "
            "trainer.precision=32-true on this machine",
            stacklevel=2,
        )


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
