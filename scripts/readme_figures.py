"""Draw the figures of docs/ from the shipped checkpoints: test photo | cartoon target | teacher | students.

    python scripts/readme_figures.py            # writes docs/teacher_strip.jpg and docs/students_strip.jpg
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from gs_core.checkpoint import load_model
from gs_core.data.cartoon_style import cartoonize
from gs_core.data.images import load_rgb, to_tensor, to_uint8
from gs_core.data.photoset import load_split

REPO = Path(__file__).resolve().parent.parent
SIDE = 192
#: Pillow's bundled scalable font: its default bitmap font squeezes spaces away ("MACscut").
LABEL_FONT = ImageFont.load_default(size=13)


def _square(path: Path) -> np.ndarray:
    rgb, _ = load_rgb(path)
    h, w = rgb.shape[:2]
    s = min(h, w)
    crop = rgb[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.asarray(Image.fromarray(crop).resize((SIDE, SIDE), Image.Resampling.LANCZOS))


@torch.inference_mode()
def _stylize(model, rgb: np.ndarray) -> np.ndarray:
    return to_uint8(model.stylize(to_tensor(rgb)[None])[0])


def _labelled_grid(rows: list[list[np.ndarray]], labels: list[str]) -> Image.Image:
    header = 18
    grid = Image.new("RGB", (SIDE * len(labels), header + SIDE * len(rows)), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(labels):
        draw.text((j * SIDE + 4, 2), label, fill="black", font=LABEL_FONT)
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            grid.paste(Image.fromarray(tile), (j * SIDE, header + i * SIDE))
    return grid


def main() -> None:
    photos = load_split("test")[:4]
    teacher, _ = load_model(REPO / "checkpoints" / "teacher")
    tiles = [_square(p) for p in photos]
    rows = [[t, cartoonize(t), _stylize(teacher, t)] for t in tiles]
    _labelled_grid(rows, ["test photo", "cartoon target", "teacher"]).save(REPO / "docs" / "teacher_strip.jpg",
                                                                           quality=88)
    manifest = json.loads((REPO / "checkpoints" / "manifest.json").read_text())
    chosen = [r for r in manifest if r["method"] == "gs" and r["bits"] == 8]
    chosen.sort(key=lambda r: r["sparsity_target"])
    students = [(f"GS {r['macs_removed']:.0%} MACs cut, 8-bit, {r['compression_size']:.0f}x",
                 load_model(REPO / "checkpoints" / r["path"])[0]) for r in chosen]
    rows = [[_stylize(teacher, t)] + [_stylize(m, t) for _, m in students] for t in tiles[:3]]
    _labelled_grid(rows, ["teacher"] + [name for name, _ in students]).save(
        REPO / "docs" / "students_strip.jpg", quality=88)


if __name__ == "__main__":
    main()
