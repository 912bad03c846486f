"""Latency budget against MACs budget: the 32-bit GS students of a grid, their latency as the per-layer table
predicts it and as onnxruntime measures it, beside their quality.

    python benchmarks/latency_budget.py [--checkpoints checkpoints] [--threads 2] [--repeats 20]
                                        [--out benchmarks/results/latency_budget.json]

The table is the teacher's (`gs_core.deploy.latency_table`, measured once on this machine at 256 px and cached);
every model is exported to ONNX fp32 and timed round-robin in one process (`gs_core.eval.cost.median_ms`).
Prints, per student: MACs removed, predicted and measured ms (and the prediction's error), speed-up over the
teacher, PSNR and style retained against the teacher from the manifest.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd

from gs_core.checkpoint import load_model
from gs_core.deploy.latency import runners
from gs_core.deploy.latency_table import latency_table
from gs_core.eval.cost import median_ms
from gs_core.methods import COST_SIZE
from gs_core.slim.plan import dense_plan, kept_channels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latency_budget.json")
    args = parser.parse_args()

    manifest = pd.read_json(args.checkpoints / "manifest.json").set_index("id")
    chosen = manifest[manifest["method"].isin(["gs", "gs-latency"]) & (manifest["bits"].astype(str) == "32")]
    teacher, _ = load_model(args.checkpoints / manifest.loc["teacher", "path"])
    table = latency_table(teacher, COST_SIZE[0], args.threads)
    models = {"teacher": teacher} | {i: load_model(args.checkpoints / chosen.loc[i, "path"])[0] for i in chosen.index}
    with tempfile.TemporaryDirectory() as folder:
        timed = median_ms(runners(models, COST_SIZE[0], args.threads, Path(folder), ("onnxruntime",)),
                          args.warmup, args.repeats)
    rows = []
    for model_id, model in models.items():
        predicted, measured = table.plan_ms(kept_channels(model, dense_plan(model))), timed[model_id, "onnxruntime"]
        record = manifest.loc[model_id]
        rows.append({"id": model_id, "method": record["method"], "macs_removed": record["macs_removed"],
                     "predicted_ms": predicted, "measured_ms": measured, "error": predicted / measured - 1,
                     "speedup": timed["teacher", "onnxruntime"] / measured, "psnr": record["psnr"],
                     "style_retained": record["style_retained"]})
    df = pd.DataFrame(rows).sort_values("measured_ms", ascending=False)
    print(f"onnxruntime fp32, {COST_SIZE[0]} px, {args.threads} threads, median of {args.repeats} "
          f"(table: {table.runtime}, dense {table.dense_ms:.1f} ms when measured)")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"size": COST_SIZE[0], "threads": args.threads, "repeats": args.repeats,
                                    "rows": rows}, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
