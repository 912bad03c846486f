"""Distillation pairs: fixed crops of the training photos and the teacher's outputs on exactly those crops.

The teacher runs at most once per crop and (teacher weights, photos, size); the result is cached in `data/cache/`
under a key that hashes all three, so a retrained teacher or a changed photo set rebuilds it. A short run asks only
for the crops it will draw (`needed`): with a full-width teacher at 256 px, the teacher's pass over every crop was
nine tenths of a 12-step `slim`. Later runs compute only the crops still missing. Crops are fixed rather than
random because instance norm makes a teacher's output on a crop differ from the crop of its output on the whole
photo: the cached target must be computed on the very tensor the student will see.
"""
from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import load_file, save_file

from gs_core.data.cartoon_style import cartoonize
from gs_core.data.images import load_rgb, to_tensor, to_uint8
from gs_core.files import atomic_path, weights_digest
from gs_core.models import Generator

CACHE_VERSION = "2"  # 2: a `done` mask, so that a cache may hold the outputs of some crops only
CROPS_PER_PHOTO = 5  # five_crops: the four corners and the centre


def five_crops(paths: list[Path], size: int) -> torch.Tensor:
    """For each photo (shorter side resized to 1.5 * size): its four corner crops and its centre crop, RGB [0,1]."""
    crops = []
    for path in paths:
        rgb, _ = load_rgb(path)
        image = TF.resize(Image.fromarray(rgb), round(size * 1.5), interpolation=TF.InterpolationMode.BICUBIC)
        crops += [to_tensor(np.asarray(c)) for c in TF.five_crop(image, size)]
    return torch.stack(crops)


def _key(teacher: Generator, paths: list[Path], size: int) -> str:
    h = hashlib.sha256(CACHE_VERSION.encode() + str(size).encode() + weights_digest(teacher).encode())
    for path in paths:
        h.update(Path(path).name.encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()[:20]


@torch.inference_mode()
def distillation_pairs(teacher: Generator, paths: list[Path], size: int, cache_dir: str | Path,
                       batch: int = 16, device: torch.device | str = "cpu",
                       needed: Iterable[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, teacher outputs) on the CPU, both in the teacher's native space (channel order, [-1, 1]), one row
    per crop (CROPS_PER_PHOTO per photo). With `needed` (row indices), only those rows' outputs are guaranteed;
    the rows never computed are NaN, so reading one by mistake fails loudly. The teacher runs on `device` (a copy
    goes there; the caller's teacher stays where it is), in batches."""
    cache = Path(cache_dir) / f"teacher-{_key(teacher, paths, size)}.safetensors"
    if cache.is_file():
        stored = load_file(str(cache))
        inputs, outputs, done = stored["inputs"], stored["outputs"], stored["done"].bool()
    else:
        inputs = teacher.preprocess(five_crops(paths, size))
        outputs = torch.full_like(inputs, float("nan"))
        done = torch.zeros(len(inputs), dtype=torch.bool)
    rows = range(len(inputs)) if needed is None else sorted(set(needed))
    missing = torch.tensor([r for r in rows if not done[r]], dtype=torch.long)
    if len(missing):
        runner = copy.deepcopy(teacher).eval().to(device)
        for chunk in missing.split(batch):
            outputs[chunk] = runner(inputs[chunk].to(device)).cpu()
        done[missing] = True
        with atomic_path(cache) as tmp:
            save_file({"inputs": inputs.contiguous(), "outputs": outputs.contiguous(), "done": done.to(torch.uint8)},
                      tmp)
    return inputs, outputs


def task_targets(teacher: Generator, inputs: torch.Tensor) -> torch.Tensor:
    """The cartoon style itself on the same crops (for the `prune` baseline, which learns without a teacher)."""
    rgb = teacher.postprocess(inputs)  # back to RGB [0,1]
    styled = torch.stack([to_tensor(cartoonize(to_uint8(image))) for image in rgb])
    return teacher.preprocess(styled)
