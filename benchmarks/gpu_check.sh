#!/usr/bin/env bash
# Everything about gptiny that only a CUDA GPU can show, in one run of under 8 minutes on one
# H100/H200-class GPU. Results go to ${OUT:-gpu-results} (six files; docs/devices.md says what
# each holds):
#   doctor.json      gptiny doctor --json
#   pytest-cuda.txt  the tests marked `cuda` (tests/test_cuda.py)
#   train.log        configs/shakespeare.toml trained to the end (5,000 iterations)
#   sample.txt       gptiny sample --tokens 2000 from that run, with its speed line
#   summary.json     wall time, tokens/s, MFU, final whole-split val loss (target <= 1.47), sample time
#   stages.txt       each stage's exit status and seconds
#
# Usage: benchmarks/gpu_check.sh [CORPUS]   CORPUS: Tiny Shakespeare's input.txt (or $GPTINY_CORPUS;
#        default ./input.txt). Nothing is downloaded: the GPU machine may have no internet.
# Needs only Python with a CUDA build of torch and gptiny's dependencies (typer, rich, safetensors,
# numpy; pytest for the tests): gptiny runs as `python -m gptiny_cli`, from an installed wheel on
# PYTHONPATH or from this source tree. PYTHON picks the interpreter (default python3).
# GPU_CHECK_DRY=1 runs the same stages on the CPU at toy sizes, to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python3}
CORPUS=${1:-${GPTINY_CORPUS:-input.txt}}
WORK=$(mktemp -d)
mkdir -p "$OUT"
: >"$OUT/stages.txt"
failed=0

if [ "${GPU_CHECK_DRY:-0}" = 1 ]; then
    DEVICE=cpu TOKENS=200
    SHRINK="--set train.max_iters=30 --set train.eval_interval=15 --set train.eval_iters=4 --set train.log_interval=5
            --set model.n_layer=1 --set model.n_embd=64 --set model.block_size=64 --set train.batch_size=8"
else
    DEVICE=cuda TOKENS=2000 SHRINK=""
fi
export PY OUT CORPUS WORK DEVICE TOKENS SHRINK

doctor() { "$PY" -m gptiny_cli doctor --json >"$OUT/doctor.json"; }

cuda_tests() {
    if ! "$PY" -c "import pytest" 2>/dev/null; then
        echo "pytest is not installed for $PY: the cuda tests did not run" >"$OUT/pytest-cuda.txt"
        return 1
    fi
    "$PY" -m pytest -p no:cacheprovider -q -rs -m cuda tests/test_cuda.py >"$OUT/pytest-cuda.txt" 2>&1
}

prepare() { "$PY" -m gptiny_cli prepare "$CORPUS" --out "$WORK/data"; }

train() {
    # shellcheck disable=SC2086  # SHRINK is a list of --set options
    "$PY" -m gptiny_cli train configs/shakespeare.toml --set "data.path=$WORK/data" --runs-dir "$WORK/runs" \
        --name shakespeare --device "$DEVICE" $SHRINK >"$OUT/train.log" 2>&1
}

sample() {
    "$PY" -m gptiny_cli sample latest --runs-dir "$WORK/runs" --tokens "$TOKENS" --seed 1 --device "$DEVICE" \
        --no-stream >"$OUT/sample.txt" 2>&1
}
export -f doctor cuda_tests prepare train sample

# stage NAME LIMIT_S: run the function NAME under a time limit; record its exit status and seconds
stage() {
    local start rc
    start=$(date +%s%N)
    timeout "$2" bash -c "$1"
    rc=$?
    echo "$1 rc=$rc seconds=$(( ($(date +%s%N) - start) / 1000000000 ))" | tee -a "$OUT/stages.txt"
    [ "$rc" -eq 0 ] || failed=1
}

[ -f "$CORPUS" ] || { echo "no corpus at $CORPUS: give Tiny Shakespeare's input.txt as the argument"; exit 2; }
stage doctor 60
stage cuda_tests 150
stage prepare 60
stage train 300
stage sample 60
"$PY" benchmarks/gpu_summary.py "$WORK/runs" "$OUT" >"$OUT/summary.json" || failed=1
cat "$OUT/summary.json"
rm -rf "$WORK"
exit "$failed"
