"""Fault-tolerant checkpoints: atomic writes, RNG state, best/last/step/preemption callbacks
(reading them back, finding the newest valid one to resume: ``framework.resume``).

Written here because Lightning's default writer is not atomic on local disks in the way a killed
job needs: it stages the bytes in a temporary file from ``tempfile`` (often another file system,
``/tmp``) and moves it over, which becomes copy-then-delete and can leave a partial file under
the final name; it does not fsync either. Lightning does not store RNG states in checkpoints.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from framework.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

CKPT_SUFFIX = ".ckpt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported (some network file systems)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staging_path(path: Path) -> Path:
    """Where ``path`` is staged before its atomic rename: hidden, beside it (``resume=auto``
    removes such leftovers of a killed save)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write ``path`` as a whole or not at all: a temporary file next to it, fsync, rename.

    A kill during a save leaves the previous file under ``path`` and at most a hidden
    ``.NAME.tmpPID`` file, which resuming ignores and removes.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _staging_path(path)
        try:
            with open(tmp, "wb") as f:
                self._write(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def _write(self, checkpoint: dict[str, Any], f: Any) -> None:
        torch.save(checkpoint, f)


def rng_states() -> dict[str, Any]:
    """This process's RNG states, as types that ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


class RNGStateCallback(Callback):
    """Saves the RNG states of every process (torch, numpy, Python, CUDA) and restores them.

    With them a resumed run draws the same dropout masks as an uninterrupted one. Each process
    gets its own state back (gathered to the saving process, by rank on load).
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        state = rng_states()
        states = [state]
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, state)
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if not states:
            return
        if len(states) != trainer.world_size:
            log.warning(
                "checkpoint holds RNG states of %d processes, this run has %d: the resumed run "
                "draws different random numbers (dropout) than an uninterrupted one",
                len(states),
                trainer.world_size,
            )
        set_rng_states(states[trainer.global_rank % len(states)])


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is the state after every validation (or epoch).

    Written here for two reasons. Lightning 2.6 writes ``last.ckpt`` only when a top-k checkpoint
    is written at the same step, so after an epoch that does not improve the monitored metric
    ``last.ckpt`` stays behind and a resumed run repeats the epochs since the best one. And when
    both are written at the same step they hold the same training state: ``last.ckpt`` is then a
    byte copy of the best file (no second serialisation). A copy, not a hard link or Lightning's
    ``save_last="link"`` symlink: with one file under two names, truncating one (a full disk, a
    ``cp`` onto it) destroys both, the best weights included.
    """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        due = not self._should_skip_saving_checkpoint(trainer)
        due = due and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._catch_up_last(trainer, due)

    def on_validation_end(self, trainer, pl_module) -> None:
        due = not self._should_skip_saving_checkpoint(trainer)
        due = due and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        self._catch_up_last(trainer, due)

    def on_sanity_check_end(self, trainer, pl_module) -> None:
        self._check_monitor(trainer.callback_metrics)  # before any training step

    def _save_topk_checkpoint(self, trainer, monitor_candidates: dict[str, Any]) -> None:
        if trainer.fit_loop.epoch_loop.val_loop._has_run:  # Lightning: a traceback here
            self._check_monitor(monitor_candidates)
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _check_monitor(self, logged: dict[str, Any]) -> None:
        """A ``UserError`` (before anything is saved) when ``task.monitor`` is not logged."""
        if self.monitor is None or self.monitor in logged:
            return
        names = sorted(k for k in logged if k.startswith("val/"))
        hint = did_you_mean(self.monitor, names)
        raise UserError(
            f"task.monitor={self.monitor!r} is not a metric this task logs; choose one of: "
            f"{', '.join(names)}.{hint}"
        )

    def _catch_up_last(self, trainer, due: bool) -> None:
        """Writes ``last.ckpt`` when Lightning saved nothing at a step where it was due."""
        if due and self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_last_checkpoint(self, trainer, monitor_candidates: dict[str, Any]) -> None:
        source = self._last_checkpoint_saved
        filepath = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        same_state = (
            self.save_last is True
            and self._last_global_step_saved == trainer.global_step
            and bool(source)
            and os.path.abspath(source) != os.path.abspath(filepath)
        )
        # Every process takes the same branch: rank 0 looks at the (maybe node-local) disk.
        copied = False
        if same_state:
            if trainer.is_global_zero:
                copied = _atomic_copy(Path(source), Path(filepath))
            copied = trainer.strategy.broadcast(copied, src=0)
        if not copied:
            super()._save_last_checkpoint(trainer, monitor_candidates)
            return
        trainer.strategy.barrier("BestAndLastCheckpoint")
        previous, self.last_model_path = self.last_model_path, filepath
        if previous and self._should_remove_checkpoint(trainer, previous, filepath):
            self._remove_checkpoint(trainer, previous)


def _atomic_copy(source: Path, target: Path) -> bool:
    """``target`` becomes an independent copy of ``source`` (whole or not at all: a staged copy
    beside it, fsync, rename); False where that cannot be done (not a plain file)."""
    if not source.is_file():  # e.g. a sharded (FSDP) checkpoint is a folder
        return False
    tmp = _staging_path(target)
    try:
        shutil.copyfile(source, tmp)  # sendfile/copy_file_range: in the kernel, no Python loop
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    _fsync_dir(target.parent)
    return True


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every N steps, except after the last batch of an epoch.

    Resuming from a checkpoint taken there skips that epoch's validation (Lightning goes on to the
    next epoch), so its metric never reaches the best-checkpoint choice; without it the run
    resumes from the step before, redoes the last steps and validates as an uninterrupted run.
    """

    def on_train_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return
        super().on_train_batch_end(trainer, *args, **kwargs)


class SigtermCheckpoint(Callback):
    """On SIGTERM (a preempted or cancelled job): ``DIRPATH/preempted.ckpt``, the state after the
    last trained batch, written before the process exits (``framework.train`` then exits 143).

    Written here because Lightning, on SIGTERM, stops its loops at the end of the current batch
    and exits with status 0 without saving: a scheduler sees success, and the steps since the
    last checkpoint are lost. Nothing is written when a checkpoint of this step exists already
    (the end of an epoch) or when the signal came during validation (the run resumes from the
    checkpoint before it and validates again).
    """

    def __init__(self, dirpath: str, filename: str = "preempted") -> None:
        self.path = Path(dirpath) / f"{filename}{CKPT_SUFFIX}"

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or not trainer.training:
            return
        saved = {getattr(c, "_last_global_step_saved", None) for c in trainer.checkpoint_callbacks}
        if trainer.global_step == 0 or trainer.global_step in saved:
            return
        trainer.save_checkpoint(self.path)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:  # the run went on past it: a later checkpoint supersedes it
            self.path.unlink(missing_ok=True)
