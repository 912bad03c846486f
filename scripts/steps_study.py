"""Quality against training steps, for one GS point and one stacked point at the same sparsity and bits.

    python scripts/steps_study.py [--steps 300 1000 3000] [--sparsity 0.85] [--bits 8] [--preset default]
                                  [--teacher checkpoints/teacher] [--out runs/steps_study] [--threads 2]

Each step count is a grid of two points of its own (`OUT/steps-N/`, trained in `OUT/runs/steps-N/`): the
preset's data, crops and training settings with only `steps` changed, measured as the grid measures (test
photos, the preset's eval size; no latency). Resumable: rerun the same command after a kill and only what is
missing is trained. Prints a Markdown table and writes it as `OUT/steps.csv`, with the training time of each
point (`train_min`) and its last distillation loss, to choose the grid's budget from.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from gs_core.checkpoint import read_card
from gs_core.device import DEVICE_CHOICES, resolve_device
from gs_core.grid import Point, grid_preset, run_grid

REPO = Path(__file__).resolve().parent.parent
COLUMNS = ("steps", "id", "psnr", "ssim", "style_retained", "compression_size", "macs_removed", "train_min",
           "last_distill")


def train_seconds(history: list[dict]) -> float:
    """Training time of a point: each stage's clock (a stacked method has three) at its last record, summed."""
    last = {record.get("stage"): record["seconds"] for record in history}
    return sum(last.values())


def study(steps: list[int], sparsity: float, bits: int, preset: str, teacher: str | Path, out: str | Path,
          progress: bool = True, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Train (or resume) GS and stacked at (sparsity, bits) for each step count; one row per point, and the
    identity reference (output = the photo) first, at steps 0."""
    out = Path(out)
    base = grid_preset(preset)
    rows = []
    for n in steps:
        cfg = replace(base, sparsities=(sparsity,), bits=(bits,), mixed=(),
                      baselines=(Point("stacked", sparsity, bits),), train=replace(base.train, steps=n),
                      metrics=tuple(m for m in base.metrics if m != "latency_ms"))
        folder = out / f"steps-{n}"
        manifest = run_grid(cfg, teacher, folder, out / "runs" / f"steps-{n}", progress=progress, device=device)
        for record in manifest.to_dict("records"):
            if record["method"] == "identity" and not rows:
                rows.append({**record, "steps": 0})
            elif record["method"] in ("gs", "stacked"):
                history = read_card(folder / record["path"])["history"]
                rows.append({**record, "steps": n, "train_min": train_seconds(history) / 60,
                             "last_distill": history[-1]["distill"]})
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    table.to_csv(out / "steps.csv", index=False)
    return table


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join("–" if pd.isna(v) else f"{v:.4g}" if isinstance(v, float) else str(v)
                                       for v in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--sparsity", type=float, default=0.85)
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--preset", default="default", help="grid preset giving data, crops and training settings")
    parser.add_argument("--teacher", default=str(REPO / "checkpoints" / "teacher"))
    parser.add_argument("--out", default=str(REPO / "runs" / "steps_study"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help=f"{DEVICE_CHOICES} (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = study(args.steps, args.sparsity, args.bits, args.preset, args.teacher, args.out,
                  device=resolve_device(args.device))
    print(markdown(table))


if __name__ == "__main__":
    main()
