#!/usr/bin/env bash
# Train the shipped grid on a 2-core machine: two lanes of one thread each (small convs use two single-thread
# processes better than one two-thread process), most informative points first, then one pass that rebuilds
# the manifest. Resumable: rerun it after an interruption. Logs go to runs/grid-*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs
PY=".venv/bin/python -m gs_core grid --threads 1"
# The latency budget's per-layer table is timed while nothing else runs (it is cached for the lanes).
.venv/bin/python -c "from gs_core.checkpoint import load_model; from gs_core.deploy.latency_table import \
latency_table; latency_table(load_model('checkpoints/teacher')[0])" > runs/grid-table.log 2>&1
# Lane a: the uniform GS points (the 4-bit ones the mixed points are size-matched to come early); lane b: the
# baselines, then the mixed points. About an hour each at 1,000 steps a point on this CPU.
$PY --only gs-s0.7-b8 gs-s0.85-b8 gs-s0.95-b8 gs-s0.4-b8 gs-s0.7-b4 gs-s0.85-b4 gs-s0.95-b4 gs-s0.4-b4 \
    gs-s0.7-b32 gs-s0.85-b32 gs-s0.95-b32 gs-s0.4-b32 gs-latency-s0.3-b32 > runs/grid-a.log 2>&1 &
lane_a=$!
# The first lane measures the teacher before its first point; the second starts once that is in the card.
until grep -q '"metrics"' checkpoints/teacher/card.json || ! kill -0 "$lane_a" 2>/dev/null; do sleep 5; done
$PY --only stacked-s0.7-b8 stacked-s0.85-b8 stacked-s0.85-b4 stacked-scratch-s0.7-b8 stacked-scratch-s0.85-b8 \
    distill-s0.7-b32 distill-s0.85-b32 prune-s0.7-b32 prune-s0.85-b32 quant-s0-b8 quant-s0-b4 gs-latency-s0.5-b32 \
    gs-size-s0.98-b8 gs-s0.7-bmixed gs-s0.85-bmixed > runs/grid-b.log 2>&1 &
wait
$PY > runs/grid-final.log 2>&1
