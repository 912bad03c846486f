"""Photo by photo: where two grid points differ, over the seeds of a seeds study, and how each errs.

    python benchmarks/per_photo.py [--points gs-s0.85-b8 stacked-s0.85-b8] [--photos data/photos/test]
                                   [--grids checkpoints/grid runs/seeds/seed-1/grid runs/seeds/seed-2/grid]

For each photo: each point's PSNR against the teacher (mean over the grids, one per seed), the paired gap (first
point minus second, mean ± sd over the grids), and the share of pixels where a student is darker or brighter
than the teacher by more than 0.1 in luminance (Rec. 601 weights, images in [0, 1]): "darker" is ink the teacher
did not draw, "brighter" ink or shading it left out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from gs_core.checkpoint import load_model
from gs_core.data.images import LUMA, list_images
from gs_core.eval import quality
from gs_core.grid import TEACHER_FOLDER, grid_preset

INK_STEP = 0.1  # a luminance difference this large reads as a stroke, not a shade


def _outputs(model, photos: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.stylize(photo[None]) for photo in photos])


def per_photo(grids: list[Path], points: list[str], photos_dir: Path, teacher_path: Path,
              size: int) -> pd.DataFrame:
    """One row per (photo, grid, point): psnr, darker, brighter."""
    names = [p.name for p in list_images(photos_dir)]
    photos = quality.load_image_folder(photos_dir, size)
    reference = _outputs(load_model(teacher_path)[0].eval(), photos)
    weights = torch.from_numpy(LUMA)[:, None, None]
    luma = (reference * weights).sum(1)
    rows = []
    for grid in grids:
        for point in points:
            outputs = _outputs(load_model(grid / point)[0].eval(), photos)
            step = (outputs * weights).sum(1) - luma
            for i, name in enumerate(names):
                rows.append({"photo": name, "grid": str(grid), "point": point,
                             "psnr": quality.psnr(outputs[i], reference[i]),
                             "darker": float((step[i] < -INK_STEP).float().mean()),
                             "brighter": float((step[i] > INK_STEP).float().mean())})
    return pd.DataFrame(rows)


def summary(rows: pd.DataFrame, points: list[str]) -> pd.DataFrame:
    first, second = points
    by_point = rows.pivot_table(index="photo", columns="point", values=["psnr", "darker", "brighter"])
    by_point.columns = [f"{metric} {point}" for metric, point in by_point.columns]
    paired = rows.pivot_table(index=["photo", "grid"], columns="point", values="psnr")
    gap = (paired[first] - paired[second]).groupby("photo").agg(["mean", "std"])
    by_point["gap mean"], by_point["gap sd"] = gap["mean"], gap["std"]
    order = [f"psnr {p}" for p in points] + ["gap mean", "gap sd"]
    order += [f"{metric} {p}" for metric in ("darker", "brighter") for p in points]
    return by_point[order]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", nargs=2, default=["gs-s0.85-b8", "stacked-s0.85-b8"])
    parser.add_argument("--photos", default="data/photos/test")
    parser.add_argument("--grids", nargs="+",
                        default=["checkpoints/grid", "runs/seeds/seed-1/grid", "runs/seeds/seed-2/grid"])
    parser.add_argument("--teacher", default=f"checkpoints/{TEACHER_FOLDER}")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    grids = [Path(g) for g in args.grids]
    missing = [str(g / p) for g in grids for p in args.points if not (g / p).exists()]
    if missing:
        parser.error(f"no such model: {', '.join(missing)}")
    if not Path(args.photos).is_dir():
        parser.error(f"no such photo folder: {args.photos}")
    rows = per_photo(grids, args.points, Path(args.photos), Path(args.teacher), grid_preset("default").eval_size)
    print(f"{args.points[0]} against {args.points[1]}, {len(grids)} grids, on {args.photos}:")
    print(summary(rows, args.points).round(4).to_string())


if __name__ == "__main__":
    main()
