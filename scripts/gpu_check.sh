#!/usr/bin/env bash
# GPU readiness check: CUDA tests, training speed (plain vs GS, fp32 and bf16), one GS-8 CartoonGAN point through
# slim / info / eval on the GPU, peak GPU memory of each; one JSON report. Fits in 8 minutes on one H100.
#   scripts/gpu_check.sh [--dry-run] [--out FILE] [--work DIR]
# --dry-run: the same steps at toy size on whatever device is here (the suite runs it). Exit status 1 when a step
# failed (the report says which and why), 2 without a GPU and without --dry-run. See benchmarks/gpu_check.py and
# docs/gpu.md. Python: $PYTHON, else the studio's .venv, else python3 (a GPU machine's own PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
