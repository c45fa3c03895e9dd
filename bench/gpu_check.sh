#!/usr/bin/env bash
# The GPU check, one command on a lent GPU machine (docs/development.md, "The GPU check"):
#
#     make wheelhouse                                        # here, once: .wheelhouse/
#     device run, carry [".wheelhouse"], timeout_s 560:
#         TASKLIGHT_COMMIT=<sha> bash bench/gpu_check.sh     # results in $OUT
#
# Installs .wheelhouse/ on top of the machine's own packages (bench/device/install.sh), then runs
# the stages below, each under its own time limit, so that one failing or hanging stage still
# leaves the others' numbers. After every stage, $OUT/results.json gains its exit code, seconds
# and result (the bench script's JSON line); $OUT/gpu_check.log holds every stage's output. The
# limits add up to 8 minutes.
#
# SMOKE=1 runs the same stages on the CPU at toy sizes (bench/device/bare_machine.sh does, before
# any device time is spent): it proves the plumbing, not the numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-$PWD/gpu_check_out}"
SMOKE="${SMOKE:-0}"
DATA="${DATA:-$PWD/.wheelhouse/data}"
E2E_SEEDS="${E2E_SEEDS:-0}"
STAGES="${STAGES:-all}"  # a rerun of some stages only: STAGES="gpu_tests throughput"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export TASKLIGHT_CACHE="${TASKLIGHT_CACHE:-/tmp/tasklight-cache}"
export TASKLIGHT_COMMIT="${TASKLIGHT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
mkdir -p "$OUT"
LOGS=$(mktemp -d)
: > "$OUT/gpu_check.log"

stage() {  # stage NAME LIMIT_SECONDS COMMAND...
    local name=$1 limit=$2 start=$SECONDS code=0
    shift 2
    [ "$STAGES" = all ] || [[ " $STAGES " == *" $name "* ]] || return 0
    echo "== $name (limit ${limit} s): $*" >> "$OUT/gpu_check.log"
    timeout -k 10 "$limit" "$@" > "$LOGS/$name.log" 2>&1 || code=$?
    cat "$LOGS/$name.log" >> "$OUT/gpu_check.log"
    "$PY" bench/device/collect.py "$OUT/results.json" "$name" "$code" "$((SECONDS - start))" \
        "$LOGS/$name.log" | tee -a "$OUT/gpu_check.log"
}

# Not a stage(): the install exports PYTHONPATH, so it runs in this shell, not under timeout.
install_wheelhouse() { source bench/device/install.sh; }
start=$SECONDS
install_wheelhouse > "$LOGS/install.log" 2>&1
code=$?
cat "$LOGS/install.log" >> "$OUT/gpu_check.log"
"$PY" bench/device/collect.py "$OUT/results.json" install "$code" "$((SECONDS - start))" \
    "$LOGS/install.log"
[ "$code" = 0 ] || exit "$code"

if [ "$SMOKE" = 1 ]; then
    DEV=(--device cpu) BASE=tiny STEPS=(--steps 1 --warmup 1 --batch-size 4)
    MLM=(--steps 1 --warmup 1 --batch-size 4 --precision bf16) E2E_N=64 RANDOM_INIT=small
    TRAINER=(--overrides trainer.accelerator=cpu --overrides trainer.precision=bf16-mixed)
    F=4  # the CPU is slow: longer limits
else
    DEV=(--device cuda) BASE=base STEPS=(--steps 20 --warmup 5)
    MLM=(--steps 20 --warmup 5 --batch-size 128 --precision bf16) E2E_N=8000 RANDOM_INIT=base
    TRAINER=(--overrides trainer=gpu)
    F=1
fi

stage env $((20 * F)) "$PY" bench/device/env.py
# gpu_tests: varlen bf16 against the padded fp32 path, BERT's block and ModernBERT's windowed one
stage gpu_tests $((60 * F)) "$PY" -m pytest -m gpu -q -p no:cacheprovider \
    --junitxml="$OUT/gpu_tests.xml" tests/framework/test_varlen.py
stage throughput $((60 * F)) "$PY" bench/gpu_throughput.py "${DEV[@]}" --preset "$BASE" "${STEPS[@]}"
if [ -f "$DATA/wikitext2_raw/wiki.train.raw" ]; then
    stage mlm $((60 * F)) "$PY" bench/mlm_throughput.py --data "$DATA/wikitext2_raw" \
        "${DEV[@]}" --preset "$BASE" "${MLM[@]}"
fi
if [ -f "$DATA/sst2/train.tsv" ]; then
    E2E=("$PY" bench/finetune_vs_hf.py --data "$DATA/sst2" --recipe sst2 --train-samples "$E2E_N"
         --seeds $E2E_SEEDS --sides hf_dynamic tasklight "${TRAINER[@]}")
    stage e2e_minilm $((120 * F)) "${E2E[@]}" --workdir "$LOGS/e2e_minilm"
    stage e2e_${RANDOM_INIT} $((100 * F)) "${E2E[@]}" --workdir "$LOGS/e2e_random" \
        --init-random "$RANDOM_INIT"
fi
echo "gpu_check: $((SECONDS)) s; results in $OUT/results.json" | tee -a "$OUT/gpu_check.log"
