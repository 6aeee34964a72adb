#!/usr/bin/env bash
# Studies of benchmarks/quality_studies.py, side by side on one GPU (JAX, no TensorFlow, offline).
# Needs the wheels in the ignored folder .gpu/whl (prepare it with `make gpu-bundle`). Each study runs
# in its own process, on the validation split of the split seeds in $SPLIT_SEEDS (default "1 2 3"),
# writing $OUT/studies/<study>.json and .log; the rows are then merged into $OUT/quality_studies_gpu.json.
# Back on the CPU machine, merge them into the committed file (each row keeps its command and machine):
#   .venv/bin/python -m benchmarks.quality_studies --merge-from <folder>/quality_studies_gpu.json
# Usage: bash benchmarks/quality_studies_gpu.sh cbam_shift_only cbam_no_augment ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.cache/gpu_out}
SPLIT_SEEDS=${SPLIT_SEEDS:-"1 2 3"}
mkdir -p "$OUT/studies"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || { echo "quality_studies_gpu.sh: installing the wheels in .gpu/whl failed" >&2; exit 2; }
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 \
  TF_CPP_MIN_LOG_LEVEL=3 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
start=$(date +%s)
for study in "$@"; do
  # shellcheck disable=SC2086  # the seeds are separate arguments
  python3 -m benchmarks.quality_studies "$study" --split-seeds $SPLIT_SEEDS --eval-split val \
    --out "$OUT/studies/$study.json" >"$OUT/studies/$study.log" 2>&1 &
done
wait
echo "all studies ended after $(( $(date +%s) - start )) s"
shopt -s nullglob
files=("$OUT"/studies/*.json)
if (( ${#files[@]} )); then
  python3 -m benchmarks.quality_studies --merge-from "${files[@]}" --out "$OUT/quality_studies_gpu.json"
fi
grep -h "^\[studies\]" "$OUT"/studies/*.log
for log in "$OUT"/studies/*.log; do grep -q "^\[studies\]" "$log" || { echo "== $log"; tail -5 "$log"; }; done
