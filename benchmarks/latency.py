"""CPU latency of a teacher and its compressed students, timed interleaved in one process.

    python benchmarks/latency.py TEACHER.pt STUDENT.pt [STUDENT.pt ...] [--size 256] [--threads 2]
                                 [--warmup 3] [--repeats 15] [--out latency.json]

Prints the median milliseconds per forward pass and the speed-up over the teacher, and writes them
as JSON together with what the numbers depend on (threads, CPU, torch version, input size).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from gs_core.checkpoint import load_model
from gs_core.eval.cost import measure_latency


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where available (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher", help="teacher checkpoint")
    parser.add_argument("models", nargs="+", help="checkpoints to compare with the teacher")
    parser.add_argument("--size", type=int, default=256, help="input is 1 x 3 x SIZE x SIZE")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("latency.json"))
    args = parser.parse_args(argv)

    # Keys are "name (path)" so that two checkpoints with the same card name stay apart.
    models = {}
    for path in [args.teacher, *args.models]:
        model, card = load_model(path)
        models[f"{card['name']} ({path})"] = model
    teacher_key = next(iter(models))

    median_ms = measure_latency(models, input_size=(args.size, args.size), threads=args.threads,
                                warmup=args.warmup, repeats=args.repeats)
    report = {
        "device": f"cpu: {cpu_name()}",
        "threads": args.threads,
        "torch": torch.__version__,
        "input_size": [args.size, args.size],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "teacher": teacher_key,
        "median_ms": median_ms,
        "speedup": {key: median_ms[teacher_key] / ms for key, ms in median_ms.items()},
    }
    for key, ms in median_ms.items():
        print(f"{ms:10.2f} ms  x{report['speedup'][key]:5.2f}  {key}")
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
