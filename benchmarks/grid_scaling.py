"""How the grid's wall time scales with Ray workers.

The quick preset's teacher and grid (optionally with more training steps per point), trained from scratch by the
local backend and by Ray tasks on a local Ray instance of 1, 2, ... CPUs: one thread per point, so CPUs =
workers. Ray's start-up is timed apart from the grid. Every run starts from a grid folder holding only the teacher;
the backends take turns, `--repeats` rounds, and the median is reported (on a busy machine the spread is large).

    PYTHONPATH=. .venv/bin/python benchmarks/grid_scaling.py [--steps N] [--workers 1 2] [--repeats R] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
import torch

from gs_core.grid import grid_preset, run_grid, run_local
from gs_core.grid_ray import RayBackend
from gs_core.teacher import preset, train_teacher


def timed_grid(cfg, teacher: Path, root: Path, backend) -> float:
    shutil.copytree(teacher, root / "teacher")
    start = time.perf_counter()
    run_grid(cfg, root / "teacher", root, root / "runs", progress=False, backend=backend)
    seconds = time.perf_counter() - start
    failures = json.loads((root / "grid" / "failures.json").read_text())
    if failures:
        raise RuntimeError(f"points failed: {failures}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help="training steps per point (quick preset: 6)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    cfg = grid_preset("quick")
    if args.steps:
        cfg = replace(cfg, train=replace(cfg.train, steps=args.steps))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_teacher(preset("quick"), tmp / "teacher", tmp / "teacher-run", progress=False)
        runs = {("local", 1): [], **{("ray", w): [] for w in args.workers}}
        startups = []
        for repeat in range(args.repeats):
            runs["local", 1].append(timed_grid(cfg, tmp / "teacher", tmp / f"local-{repeat}", run_local))
            for workers in args.workers:
                start = time.perf_counter()
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                startups.append(time.perf_counter() - start)
                runs["ray", workers].append(timed_grid(cfg, tmp / "teacher", tmp / f"ray-{workers}-{repeat}",
                                                       RayBackend(cpus_per_point=1)))
                ray.shutdown()
    rows = [{"backend": backend, "workers": workers, "seconds": statistics.median(seconds), "runs": seconds}
            for (backend, workers), seconds in runs.items()]
    result = {"preset": "quick", "points": len(cfg.points()), "steps_per_point": cfg.train.steps,
              "threads_per_point": 1, "cpu_count": os.cpu_count(), "load_average": [load_before, os.getloadavg()[0]],
              "device": "cpu", "ray_startup_s": statistics.median(startups), "rows": rows}
    for row in rows:
        print(f"{row['backend']:>5} {row['workers']} worker(s): {row['seconds']:6.1f} s (runs: "
              + ", ".join(f"{s:.1f}" for s in row["runs"]) + ")")
    print(f"Ray start-up, not included: {result['ray_startup_s']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
