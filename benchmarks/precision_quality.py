"""Does bf16 training hold quality? The same grid points trained in fp32 and in bf16, measured against the teacher.

    python benchmarks/precision_quality.py [--points gs-s0.7-b8 ...] [--teacher checkpoints/teacher]
                                           [--out runs/precision] [--threads 2]

Each precision gets its own grid folder (the default preset's settings, only the precision differs), so reruns
resume; prints PSNR / SSIM / style retained against the teacher on the test photos and the training time.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from gs_core.checkpoint import read_card
from gs_core.grid import grid_preset, run_grid
from gs_core.slim.train import PRECISIONS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", default=["gs-s0.7-b8"])
    parser.add_argument("--teacher", default="checkpoints/teacher")
    parser.add_argument("--out", default="runs/precision")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = grid_preset("default")
    rows = []
    for precision in PRECISIONS:
        out = Path(args.out) / precision
        manifest = run_grid(replace(cfg, train=replace(cfg.train, precision=precision)), args.teacher, out,
                            out / "runs", only=args.points, progress=False).set_index("id")
        for point in args.points:
            history = read_card(out / "grid" / point)["history"]
            rows.append((point, precision, manifest.loc[point, "psnr"], manifest.loc[point, "ssim"],
                         manifest.loc[point, "style_retained"], history[-1]["seconds"]))
    print(f"\n{'point':<14} {'precision':<9} {'PSNR dB':>8} {'SSIM':>6} {'style':>6} {'train s':>8}")
    for point, precision, psnr, ssim, style, seconds in rows:
        print(f"{point:<14} {precision:<9} {psnr:>8.3f} {ssim:>6.3f} {style:>6.3f} {seconds:>8.0f}")


if __name__ == "__main__":
    main()
