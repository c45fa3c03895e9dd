"""A non-editable install (``pip install .``): configs and the quickstart data come from the
installed package, and the entry point runs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_an_installed_wheel_trains_from_another_directory(tmp_path):
    wheels, site, work = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Built from a copy: setuptools leaves build/ and *.egg-info/ in the tree it builds.
    src = tmp_path / "src"
    skip = shutil.ignore_patterns(".*", "logs", "build", "*.egg-info", "__pycache__", "outputs")
    shutil.copytree(ROOT, src, ignore=skip)
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)], check=True,
                   capture_output=True)  # fmt: skip
    (wheel,) = wheels.glob("tasklight-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    configs = {
        f"tasklight_conf/{p.relative_to(ROOT / 'conf')}" for p in ROOT.glob("conf/**/*.yaml")
    }
    assert configs <= shipped, sorted(configs - shipped)  # every config folder is packaged
    modules = {
        str(p.relative_to(ROOT)) for d in ("framework", "tasks") for p in (ROOT / d).rglob("*.py")
    }
    assert modules <= shipped, sorted(modules - shipped)  # every module (subpackages too)
    assert "tasklight_data/quickstart/train.csv" in shipped
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    work.mkdir()
    # The installed copy first on the path: the editable checkout is not imported.
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    code = "import framework; print(framework.__file__)"
    where = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert where.stdout.startswith(str(site))
    args = ("model=tiny", "debug=fast", "callbacks=none", "trainer.accelerator=cpu")
    proc = subprocess.run([str(site / "bin" / "tasklight-train"), *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (metrics,) = work.glob("logs/runs/*/*/metrics.json")  # runs go under the current directory
    assert "val/acc" in metrics.read_text()
