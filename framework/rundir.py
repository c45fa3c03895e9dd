"""A run directory belongs to one run: claimed with a lock, never overwritten by a new run.

``claim`` is entered by the training process of global rank 0 before anything is read or
written, and held until the run ends: a second run in the same directory is refused while the
first holds the lock, and a directory that already holds a run is continued (``resume=auto``),
replaced on request (``overwrite=true``) or refused. What a run wrote is known by name
(``RUN_NAMES``, and its figures in the ledger ``.tasklight.outputs``): ``overwrite=true``
deletes only that, and refuses a directory that holds anything else or that holds what this
run reads; a directory tasklight never claimed (no lock file, no run's ``config.yaml``) is
never taken for a run. ``write_config`` writes the run's config
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
from framework.fileio import is_inside

LOCK_NAME = ".tasklight.lock"
LEDGER = ".tasklight.outputs"  # the names this run wrote beyond the fixed ones (its figures)
# What a run writes at the top of its directory (Hydra's train.log and .hydra/ included).
RUN_NAMES = frozenset({
    "config.yaml", "metrics.json", "checkpoints", "export", "csv", "tensorboard", "wandb",
    "wandb_run_id", "tokenizer", "eval", "curves.png", "train.log", ".hydra", LOCK_NAME, LEDGER,
})  # fmt: skip
RUN_PATTERNS = ("hpc_ckpt_*.ckpt",)  # SLURM's requeue checkpoints
KEPT = {LOCK_NAME, LEDGER, ".hydra", "train.log"}  # written before a run may be refused
CONFIG_KEYS = {"task", "model", "data", "trainer"}  # a config.yaml tasklight wrote has these


def made_by_tasklight(run_dir: Path) -> bool:
    """Whether tasklight claimed ``run_dir`` before (its lock file) or wrote a run there (a
    ``config.yaml`` holding a run's config): a folder that merely holds a ``csv/`` or a
    ``config.yaml`` of its own is not a run, and is never emptied by ``overwrite=true``."""
    if (run_dir / LOCK_NAME).is_file() or (run_dir / LEDGER).is_file():
        return True
    import yaml

    try:
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and CONFIG_KEYS <= set(cfg)


def record(run_dir: Path, *paths: Path) -> None:
    """Add the top-level names of ``paths`` (files this run wrote in ``run_dir``: its figures)
    to the run's ledger, so that ``overwrite=true`` knows them as the run's own."""
    names = {p.name for p in paths if p.parent.resolve() == run_dir.resolve()}
    names -= RUN_NAMES | _ledger(run_dir)
    if names:
        with open(run_dir / LEDGER, "a") as f:
            f.writelines(f"{n}\n" for n in sorted(names))


def _ledger(run_dir: Path) -> set[str]:
    try:
        lines = (run_dir / LEDGER).read_text().splitlines()
    except OSError:
        return set()
    return {n for n in lines if n and "/" not in n and n not in (".", "..")}


def run_outputs(run_dir: Path) -> list[Path]:
    """The entries of ``run_dir`` that a run writes (see ``RUN_NAMES``, the ledger), sorted."""
    own = RUN_NAMES | _ledger(run_dir)
    found = {p for p in run_dir.iterdir() if p.name in own}
    for pattern in RUN_PATTERNS:
        found.update(run_dir.glob(pattern))
    return sorted(found)


def holds_run(run_dir: Path) -> list[str]:
    """The names in ``run_dir`` that a run wrote and a new run would replace (empty for a new
    directory, or one where a run was refused before it wrote anything)."""
    if not run_dir.is_dir():
        return []
    return [p.name for p in run_outputs(run_dir) if p.name not in KEPT]


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
def claim(
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    rank: int = 0,
    reads: dict[str, str | None] | None = None,
) -> Iterator[None]:
    """Lock ``run_dir`` for the ``with`` block and check that this run may write there (see
    the module docstring). ``reads``: the paths this run reads, by option name
    (``data.path``...), which ``overwrite=true`` must never delete. Only rank 0 claims: the
    other processes join its run."""
    if rank != 0:
        yield
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"hydra.run.dir {run_dir} is a file, not a directory; choose another path")
    ours = run_dir.is_dir() and made_by_tasklight(run_dir)  # before the lock file is made
    with lock(run_dir):
        try:
            _check(run_dir, ours, resume, overwrite, reads or {})
        except UserError:
            if not ours:  # a refused first claim leaves no lock file: it would make this a run
                (run_dir / LOCK_NAME).unlink(missing_ok=True)
            raise
        yield


def _check(
    run_dir: Path, ours: bool, resume: bool, overwrite: bool, reads: dict[str, str | None]
) -> None:
    found = holds_run(run_dir)
    if found and not ours:
        raise UserError(
            f"{run_dir} holds {', '.join(found)} but no tasklight run: a run would write over "
            "them; start it in another (new or empty) hydra.run.dir"
        )
    if found and not resume:
        if not overwrite:
            raise UserError(
                f"{run_dir} already holds a run ({', '.join(found)}); continue it with "
                "resume=auto, start a new one in another hydra.run.dir, or replace it with "
                "overwrite=true"
            )
        _remove_outputs(run_dir, reads)


def _remove_outputs(run_dir: Path, reads: dict[str, str | None]) -> None:
    """Delete what the run in ``run_dir`` wrote (``overwrite=true``): only when the folder holds
    nothing else, and nothing this run reads lies among it."""
    outputs = run_outputs(run_dir)
    doomed = [p for p in outputs if p.name not in KEPT]
    own = {p.name for p in outputs}
    other = sorted(p.name for p in run_dir.iterdir() if p.name not in own)
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise UserError(
            f"overwrite=true deletes only what a run wrote, and {run_dir} also holds {shown}; "
            "move them out, or start the run in another hydra.run.dir"
        )
    for option, value in reads.items():
        if value and os.path.realpath(value) == os.path.realpath(run_dir):
            hit: Path | None = run_dir  # e.g. model.init_from=RUN_DIR: its export
        else:
            hit = next((p for p in doomed if value and is_inside(value, p)), None)
        if hit is not None:
            what = f"the run in {hit}" if hit == run_dir else str(hit)
            raise UserError(
                f"overwrite=true would delete {what}, which this run reads ({option}={value}); "
                "copy it out of the run directory first, or start the run in another "
                "hydra.run.dir"
            )
    for entry in doomed:
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
