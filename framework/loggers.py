"""Loggers: instantiated from the ``logger`` config group, and made to survive a resume.

wandb never blocks or prompts (offline without an API key) and keeps one run id per run
directory. Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts; in a
resumed run that is the history of the run so far. This one appends to it instead (rows logged
between the resumed checkpoint and the interruption appear twice: the later row of a step is the
one that counts).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import hydra
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Continue the existing file (its header is the current set of columns).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to the run's ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


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


def instantiate_all(group: DictConfig | None, run_dir: Path | None = None) -> list:
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
