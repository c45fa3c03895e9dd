"""Reading a run's checkpoints back: safely (``weights_only``), the newest complete one to resume
(``resume=auto``), and whether one fits the module and data it is resumed into. The checkpoints
are written by ``framework.checkpoint``."""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from framework.checkpoint import CKPT_SUFFIX
from framework.errors import UserError

log = logging.getLogger(__name__)


def load_checkpoint(path: str | Path, what: str = "checkpoint", mmap: bool = True) -> Any:
    """``path`` read with ``torch.load(weights_only=True)``: tensors, numbers, strings and
    containers only, so a checkpoint from someone else cannot run code when it is unpickled (a
    pickle may name any callable). tasklight's own checkpoints need nothing more (RNG states are
    stored as tensors and lists). A ``UserError`` names the file and the refused type."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        kind = f"it needs {found.group(1)}" if found else str(e).splitlines()[0]
        raise UserError(
            f"{what} {path} holds more than tensors and plain data ({kind}); tasklight loads "
            "checkpoints with weights_only=True and never runs code from one: use a checkpoint "
            "that tasklight wrote"
        ) from None
    except Exception as e:  # truncated, not a checkpoint, unreadable
        why = "it is not a complete training checkpoint (truncated?)"
        if what != "checkpoint":
            why = "truncated, or not a file torch.save wrote"
        raise UserError(f"{what} {path} cannot be read ({type(e).__name__}): {why}") from None


def training_checkpoint(path: Path) -> dict[str, Any]:
    """The complete Lightning checkpoint at ``path``; a ``UserError`` otherwise."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"state_dict", "global_step", "loops"} <= set(ckpt):
        raise UserError(
            f"checkpoint {path} is not a complete training checkpoint (truncated or weights only)"
        )
    return ckpt


def checkpoint_step(path: Path) -> int | None:
    """The checkpoint's global step, or None when ``path`` is not a complete Lightning one."""
    try:
        return int(training_checkpoint(path)["global_step"])
    except UserError as e:
        log.warning("skipping %s", e)
        return None


def checkpoints_of(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run: ``checkpoints/*.ckpt`` and SLURM's ``hpc_ckpt_*.ckpt``."""
    files = list((run_dir / "checkpoints").glob(f"*{CKPT_SUFFIX}"))
    files += run_dir.glob(f"hpc_ckpt_*{CKPT_SUFFIX}")
    # Not a symbolic link: a copied run directory could point one at any file.
    return [f for f in files if f.is_file() and not f.is_symlink() and not f.name.startswith(".")]


def newest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The valid checkpoint with the highest step (latest written among equals), or None."""
    best: tuple[int, int] | None = None
    found = None
    for f in checkpoints_of(run_dir):
        step = checkpoint_step(f)
        if step is None:
            continue
        key = (step, f.stat().st_mtime_ns)
        if best is None or key > best:
            best, found = key, f
    return found


def resolve_resume(run_dir: Path, resume: str | None, ckpt_path: str | None) -> str | None:
    """The checkpoint to start from: ``ckpt_path``, the newest of ``run_dir`` (``resume=auto``)."""
    if resume not in (None, "auto"):
        raise UserError(f"resume={resume!r}: use resume=auto (or ckpt_path=FILE)")
    if ckpt_path is not None:
        if resume is not None:
            raise UserError("set either resume=auto or ckpt_path=FILE, not both")
        if not Path(ckpt_path).is_file():
            raise UserError(f"ckpt_path {ckpt_path} does not exist")
        try:
            training_checkpoint(Path(ckpt_path))
        except UserError as e:
            raise UserError(f"ckpt_path: {e}; pick another file in a run's checkpoints/") from None
        return ckpt_path
    if resume == "auto":
        for stale in (run_dir / "checkpoints").glob(".*.tmp*"):  # left by a kill during a save
            stale.unlink(missing_ok=True)
        found = newest_valid_checkpoint(run_dir)
        files = checkpoints_of(run_dir)
        if found is None and files:  # starting over would silently lose the trained steps
            names = ", ".join(sorted(f.name for f in files))
            raise UserError(
                f"no checkpoint in {run_dir} can be read ({names}: truncated or not a training "
                "checkpoint); restore one from a copy, or start over with overwrite=true"
            )
        return str(found) if found is not None else None
    return None


def check_fits(path: str | Path, module: torch.nn.Module, datamodule: Any = None) -> None:
    """A ``UserError`` when checkpoint ``path`` holds other weights than ``module`` has: one
    written for another task, label set or model (Lightning would fail deep in ``load_state_dict``),
    or (``datamodule.check_resume``) a place in the epoch saved with other batch settings.
    """
    ckpt = load_checkpoint(path)
    state = ckpt["state_dict"]
    own = module.state_dict()
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if wrong:
        k = wrong[0]
        why = f"{k} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here"
    elif missing:
        why = f"it has no {missing[0]}"
    elif extra:
        why = f"its {extra[0]} is not in this model"
    else:
        if datamodule is not None:  # the same model: is its place in the epoch the same here?
            datamodule.check_resume(ckpt.get(type(datamodule).__qualname__) or {})
        return
    raise UserError(
        f"checkpoint {path} was written for another task or model ({why}); resume it with the "
        "config of the run that wrote it (its config.yaml), or start a new run directory"
    )
