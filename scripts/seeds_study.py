"""The headline comparison with its spread: GS against stacked at matched MACs, over several seeds.

    python scripts/seeds_study.py [--seeds 0 1 2] [--points gs-s0.7-b8 stacked-s0.7-b8 gs-s0.85-b8 stacked-s0.85-b8]
                                  [--teacher checkpoints/teacher] [--out runs/seeds] [--threads 2]
                                  [--reuse-grid checkpoints] [--set gan_weight=0 ...] [--photos data/photos/val]

Each seed is a grid of its own (`OUT/seed-N/`, the default preset with only `seed` changed: the discriminator's
initialisation, the batches drawn, a thinner network's weights), so reruns resume. `--reuse-grid DIR` takes the
preset's own seed from that grid (the shipped one was trained with exactly these settings) instead of training
it again. Prints mean ± sd of PSNR, SSIM
and style retained against the teacher per point, and the GS - stacked gap per sparsity with its spread, and writes
the per-seed rows to `OUT/seeds.csv`.

Choosing a setting: `--set KEY=VALUE` changes a training field of the preset (e.g. `gan_weight=0`; give it its own
`--out`), and `--photos DIR` measures on that folder instead of the test photos, so a setting is chosen on the
validation photos (`data/photos/val`) without looking at the test ones.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import torch

from gs_core.eval.evaluate import evaluate_models
from gs_core.grid import TEACHER_FOLDER, grid_preset, run_grid
from gs_core.slim.train import TrainConfig

METRICS = ("psnr", "ssim", "style_retained")


def study(seeds: list[int], points: list[str], teacher: str | Path, out: str | Path,
          preset: str = "default", reuse_grid: str | Path | None = None, train_changes: dict | None = None,
          photos: str | Path | None = None) -> pd.DataFrame:
    """One row per (seed, point) with its quality against the teacher: on the grid's test photos, or on the
    folder `photos`. `train_changes` overrides fields of the preset's TrainConfig."""
    cfg = grid_preset(preset)
    changes = dict(train_changes or {})
    unknown = set(changes) - {f.name for f in fields(TrainConfig)}
    if unknown:
        raise ValueError(f"not a training setting: {', '.join(sorted(unknown))} (see gs_core.slim.train.TrainConfig)")
    if changes and reuse_grid is not None:
        raise ValueError("--reuse-grid is a grid trained with the preset's own settings: it cannot stand for --set")
    rows = []
    for seed in seeds:
        reuse = reuse_grid is not None and seed == cfg.train.seed
        folder = Path(reuse_grid) if reuse else Path(out) / f"seed-{seed}"
        run_dir = Path(out) / f"seed-{seed}" / "runs"
        manifest = run_grid(replace(cfg, train=replace(cfg.train, seed=seed, **changes)), teacher, folder, run_dir,
                            only=points, progress=False).set_index("id")
        quality = manifest  # measured on the grid's test photos
        if photos is not None:
            quality = evaluate_models([folder / manifest.loc[p, "path"] for p in points], photos,
                                      folder / TEACHER_FOLDER, metrics=METRICS, size=cfg.eval_size,
                                      progress=False).assign(id=points).set_index("id")
        rows += [{"seed": seed, "id": point, **{m: quality.loc[point, m] for m in METRICS}} for point in points]
    return pd.DataFrame(rows)


def _setting(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON where it parses (numbers, true/false), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


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
    parser.add_argument("--set", type=_setting, nargs="+", default=[], metavar="KEY=VALUE",
                        help="training settings other than the preset's (TrainConfig fields), e.g. gan_weight=0")
    parser.add_argument("--photos", help="measure on this photo folder (e.g. data/photos/val), not the test photos")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        rows = study(args.seeds, args.points, args.teacher, args.out, reuse_grid=args.reuse_grid,
                     train_changes=dict(args.set), photos=args.photos)
    except ValueError as err:
        parser.error(str(err))
    rows.to_csv(Path(args.out) / "seeds.csv", index=False)
    table, gaps = summary(rows)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for name, (mean, sd) in gaps.items():
        print(f"{name}: {mean:+.2f} ± {sd:.2f} over {len(args.seeds)} seeds")


if __name__ == "__main__":
    main()
