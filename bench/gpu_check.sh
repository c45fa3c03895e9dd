#!/usr/bin/env bash
# One-command GPU check (a few minutes): the gpu-marked parity tests, then encoder throughput and
# MFU at bert-base shapes. Run from the repository root with the project's environment active.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
"$PY" -m pytest -m gpu -q tests
"$PY" bench/gpu_throughput.py "$@"
