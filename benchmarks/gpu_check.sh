#!/usr/bin/env bash
# GPU throughput check (issue 12): resnet50 224 px fine-tuning img/s, lightkit vs a plain loop, bf16 on/off,
# channels_last on/off (+ --compile). A few minutes on one GPU; on a machine without CUDA, or with --dry-run,
# the same code runs on the CPU at tiny sizes (what tests/test_gpu_check.py runs).
#   bash benchmarks/gpu_check.sh [--dry-run] [--compile] [--reps N] [--json out.json] [--batch-size 128]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec python benchmarks/gpu_check.py "$@"
