"""CPU latency of the teacher and every shipped student in PyTorch eager, ONNX fp32 and ONNX int8 (onnxruntime, and
OpenVINO where it is installed), in one process.

    python benchmarks/latency.py [--checkpoints checkpoints] [--only ID ...] [--sizes 256 512] [--threads 2]
                                 [--warmup 3] [--repeats 20] [--out benchmarks/results/latency.json] [--plot benchmarks/results/latency.html]

Every (model, runtime) pair is timed round-robin (gs_core.eval.cost.median_ms) with fixed threads (torch,
onnxruntime and OpenVINO alike), one 1 x 3 x SIZE x SIZE stylization per call. Prints, per size, the median
milliseconds, the speed-up over the teacher in the same runtime and, beside it, the MACs reduction; writes them as
JSON with what they depend on, and a plot (HTML) of MACs reduction against measured speed-up. The manifest's
`latency_ms` and `runtime` are not this table's: they are `deploy`'s choice per model (`python -m gs_core grid
--remeasure latency_ms`), which also tries the rewritten int8 forms and refuses inexact ones.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import tempfile
from pathlib import Path

import onnxruntime
import plotly.graph_objects as go
import torch

from gs_core.checkpoint import load_model
from gs_core.deploy.latency import RUNTIMES, cpu_name, runners
from gs_core.eval.cost import median_ms


def _openvino_version() -> str | None:
    return importlib.metadata.version("openvino") if "openvino" in RUNTIMES else None


def table(results: dict, records: dict) -> list[dict]:
    """One row per model: ms per runtime, speed-up over the teacher in that runtime, MACs reduction."""
    teacher = results["teacher"]
    rows = []
    for model_id, by_runtime in results.items():
        row = {"id": model_id, "macs_reduction": records["teacher"]["macs"] / records[model_id]["macs"]}
        for runtime, ms in by_runtime.items():
            row[f"{runtime}_ms"] = ms
            # int8 has no teacher of its own: compared with the teacher's fp32 export in the same engine
            row[f"{runtime}_speedup"] = teacher.get(runtime, teacher[runtime.removesuffix("-int8")]) / ms
        rows.append(row)
    return rows


def print_table(size: int, rows: list[dict]) -> None:
    print(f"\n{size} x {size}: median ms (speed-up over the teacher); MACs reduction; ORT speed-up / MACs reduction")
    print(f"{'id':18}" + "".join(f"{r:>24}" for r in RUNTIMES) + f"{'MACs red.':>11}{'ratio':>7}")
    for row in rows:
        cells = "".join(f"{row[f'{r}_ms']:>14.1f} ({row[f'{r}_speedup']:5.2f}x)" if f"{r}_ms" in row else f"{'-':>24}"
                        for r in RUNTIMES)
        ratio = row.get("onnxruntime_speedup", 0) / row["macs_reduction"]
        print(f"{row['id']:18}{cells}{row['macs_reduction']:>10.1f}x{ratio:>7.2f}")


def plot(size: int, rows: list[dict], path: Path) -> None:
    ids = [row["id"] for row in rows]
    figure = go.Figure([go.Bar(name="MACs reduction", x=ids, y=[row["macs_reduction"] for row in rows])])
    for runtime in RUNTIMES:
        figure.add_bar(name=f"speed-up, {runtime}", x=ids, y=[row.get(f"{runtime}_speedup") for row in rows])
    figure.update_layout(title=f"MACs reduction and measured speed-up over the teacher, {size} x {size}",
                         yaxis_title="x teacher", barmode="group")
    figure.write_html(path, include_plotlyjs=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--only", nargs="+", help="these model ids (the teacher is always timed)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency.json")
    parser.add_argument("--plot", type=Path, default=Path(__file__).parent / "results" / "latency.html")
    args = parser.parse_args(argv)

    root = args.checkpoints.resolve()
    # every model of the grid; the identity row ("output = the photo") has no model to time
    records = {r["id"]: r for r in json.loads((root / "manifest.json").read_text()) if r["path"]}
    ids = ["teacher", *[i for i in (args.only or records) if i != "teacher"]]
    paths = {i: root / records[i]["path"] for i in ids}
    models = {i: load_model(paths[i])[0] for i in ids}
    torch.set_num_threads(args.threads)
    report = {"device": f"cpu: {cpu_name()}", "threads": args.threads, "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "openvino": _openvino_version(), "warmup": args.warmup,
              "repeats": args.repeats, "sizes": {}}
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            timed = median_ms(runners(models, size, args.threads, Path(folder)), args.warmup, args.repeats)
            results = {i: {runtime: ms for (j, runtime), ms in timed.items() if j == i} for i in ids}
            rows = table(results, records)
            report["sizes"][str(size)] = rows
            print_table(size, rows)
            if size == max(args.sizes):
                plot(size, rows, args.plot)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} and {args.plot}")
    return report


if __name__ == "__main__":
    main()
