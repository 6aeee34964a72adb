#!/usr/bin/env bash
# The GPU benchmark in one command, on a machine with JAX (CUDA), no TensorFlow and no network.
# Needs, in the ignored folder .gpu/ of the repository root (prepare it with `make gpu-bundle`):
#   .gpu/whl/            keras, namex, optree, mlxtend, faiss-cpu wheels for Python 3.12
#   .gpu/fashion-mnist/  the four idx.gz files of Fashion-MNIST (Debian package dataset-fashion-mnist)
# Results go to $OUT (or .cache/gpu_out): gpu_results.json, gpu_weights.tar, gpu_log.txt.
# Extra arguments go to benchmarks/gpu.py (e.g. --parts training --budgets 0 300 0).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.cache/gpu_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
  || { echo "gpu.sh: installing the wheels in .gpu/whl failed" >&2; exit 2; }
export PYTHONPATH=/tmp/site:$PWD KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1 \
  TF_CPP_MIN_LOG_LEVEL=3 MPLBACKEND=Agg OUT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python3 -m benchmarks.gpu --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu_log.txt"
