"""A run directory belongs to one run: claimed with a lock, never overwritten by a new run.

``claim`` is entered by the training process of global rank 0 before anything is read or
written, and held until the run ends: a second run in the same directory is refused while the
first holds the lock, and a directory that already holds a run is continued (``resume=auto``),
replaced on request (``overwrite=true``) or refused. ``write_config`` writes the run's config
only after every check of the run (data, checkpoint) has passed, so a refused resume leaves the
directory as it was.

Hydra's own ``.hydra/`` copies are written here too (``hydra.output_subdir: null`` in
``conf/hydra/default.yaml``): Hydra writes them before any code of the run could refuse it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

from framework.errors import UserError

LOCK_NAME = ".tasklight.lock"
# What a run writes; a directory holding any of these holds a run (Hydra's files do not count).
RUN_OUTPUTS = ("config.yaml", "metrics.json", "checkpoints", "export", "csv", "tokenizer")
KEPT = {LOCK_NAME, ".hydra", "train.log"}  # not removed by overwrite=true


def holds_run(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that a run wrote (empty for a new directory)."""
    found = [n for n in RUN_OUTPUTS if (run_dir / n).exists()]
    return found + sorted(p.name for p in run_dir.glob("hpc_ckpt_*.ckpt"))


def lock(run_dir: Path) -> IO:
    """``run_dir``'s lock, held until the returned file is closed (or the process exits); a
    ``UserError`` if another run holds it.

    ``flock`` (advisory, released by the kernel when the holder dies, even by SIGKILL): a stale
    lock file never blocks a restart. Not reliable across nodes on some network file systems.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    f = open(run_dir / LOCK_NAME, "a+")  # returned open: it is the lock
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise UserError(
            f"another run (pid {holder}) is using {run_dir}; wait for it to end, or start this "
            "one in another hydra.run.dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


@contextlib.contextmanager
def claim(run_dir: Path, resume: bool, overwrite: bool, rank: int = 0) -> Iterator[None]:
    """Lock ``run_dir`` for the ``with`` block and check that this run may write there (see
    the module docstring). Only rank 0 claims: the other processes join its run."""
    if rank != 0:
        yield
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"hydra.run.dir {run_dir} is a file, not a directory; choose another path")
    with lock(run_dir):
        found = holds_run(run_dir)
        if found and not resume:
            if not overwrite:
                raise UserError(
                    f"{run_dir} already holds a run ({', '.join(found)}); continue it with "
                    "resume=auto, start a new one in another hydra.run.dir, or replace it with "
                    "overwrite=true"
                )
            _remove_outputs(run_dir)
        yield


def _remove_outputs(run_dir: Path) -> None:
    for entry in run_dir.iterdir():
        if entry.name in KEPT:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def relative(run_dir: Path, path: str | Path) -> str:
    """``path`` relative to ``run_dir`` when it lies inside it (``checkpoints/best-...ckpt``),
    else absolute (a ``callbacks.model_checkpoint.dirpath`` set outside the run)."""
    root, path = run_dir.resolve(), Path(path).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    """``config.yaml`` (resolved) and Hydra's ``.hydra/{config,hydra,overrides}.yaml``."""
    from hydra.core.hydra_config import HydraConfig

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if not HydraConfig.initialized():  # run() called without Hydra's entry point (tests)
        return
    hydra_cfg = HydraConfig.get()
    out = run_dir / ".hydra"
    out.mkdir(exist_ok=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(
        OmegaConf.create({"hydra": OmegaConf.to_container(hydra_cfg)}), out / "hydra.yaml"
    )
    OmegaConf.save(OmegaConf.create(list(hydra_cfg.overrides.task)), out / "overrides.yaml")
