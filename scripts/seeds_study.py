"""The headline comparison with its spread: GS against stacked at matched MACs, over several seeds.

    python scripts/seeds_study.py [--seeds 0 1 2] [--points gs-s0.7-b8 stacked-s0.7-b8 gs-s0.85-b8 stacked-s0.85-b8]
                                  [--teacher checkpoints/teacher] [--out runs/seeds] [--threads 2]
                                  [--reuse-grid checkpoints]

Each seed is a grid of its own (`OUT/seed-N/`, the default preset with only `seed` changed: the discriminator's
initialisation, the batches drawn, a thinner network's weights), so reruns resume. `--reuse-grid DIR` takes the
preset's own seed from that grid (the shipped one was trained with exactly these settings) instead of training
it again. Prints mean ± sd of PSNR, SSIM
and style retained against the teacher per point, and the GS - stacked gap per sparsity with its spread, and writes
the per-seed rows to `OUT/seeds.csv`.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from gs_core.grid import grid_preset, run_grid

METRICS = ("psnr", "ssim", "style_retained")


def study(seeds: list[int], points: list[str], teacher: str | Path, out: str | Path,
          preset: str = "default", reuse_grid: str | Path | None = None) -> pd.DataFrame:
    """One row per (seed, point) with its quality against the teacher."""
    cfg = grid_preset(preset)
    rows = []
    for seed in seeds:
        reuse = reuse_grid is not None and seed == cfg.train.seed
        folder = Path(reuse_grid) if reuse else Path(out) / f"seed-{seed}"
        run_dir = Path(out) / f"seed-{seed}" / "runs"
        manifest = run_grid(replace(cfg, train=replace(cfg.train, seed=seed)), teacher, folder, run_dir,
                            only=points, progress=False).set_index("id")
        rows += [{"seed": seed, "id": point, **{m: manifest.loc[point, m] for m in METRICS}} for point in points]
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, tuple[float, float]]]:
    """mean and sd over seeds per point, and per sparsity the gap GS - stacked (paired by seed)."""
    table = rows.groupby("id")[list(METRICS)].agg(["mean", "std"])
    wide = rows.pivot(index="seed", columns="id", values="psnr")
    gaps = {}
    for gs in [c for c in wide.columns if c.startswith("gs-")]:
        stacked = gs.replace("gs-", "stacked-", 1)
        if stacked in wide:
            gap = wide[gs] - wide[stacked]
            gaps[f"{gs} - {stacked} (PSNR dB)"] = (gap.mean(), gap.std())
    return table, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--points", nargs="+",
                        default=["gs-s0.7-b8", "stacked-s0.7-b8", "gs-s0.85-b8", "stacked-s0.85-b8"])
    parser.add_argument("--teacher", default="checkpoints/teacher")
    parser.add_argument("--out", default="runs/seeds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse-grid", help="a grid folder trained with the preset's own seed: its points serve "
                        "for that seed (a point missing there is trained into it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = study(args.seeds, args.points, args.teacher, args.out, reuse_grid=args.reuse_grid)
    rows.to_csv(Path(args.out) / "seeds.csv", index=False)
    table, gaps = summary(rows)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for name, (mean, sd) in gaps.items():
        print(f"{name}: {mean:+.2f} ± {sd:.2f} over {len(args.seeds)} seeds")


if __name__ == "__main__":
    main()
