"""Distillation pairs: fixed crops of the training photos and the teacher's outputs on exactly those crops.

The teacher runs once per (teacher weights, photos, size); the result is cached in `data/cache/` under a key
that hashes all three, so a retrained teacher or a changed photo set rebuilds it. Crops are fixed rather than
random because instance norm makes a teacher's output on a crop differ from the crop of its output on the whole
photo: the cached target must be computed on the very tensor the student will see.
"""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import load_file, save_file

from gs_core.checkpoint import atomic_path, weights_digest
from gs_core.data.cartoon_style import cartoonize
from gs_core.data.images import load_rgb, to_tensor, to_uint8
from gs_core.models import Generator

CACHE_VERSION = "1"


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
                       batch: int = 16, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, teacher outputs) on the CPU, both in the teacher's native space (channel order, [-1, 1]).
    The teacher runs on `device` (a copy goes there; the caller's teacher stays where it is), in batches."""
    cache = Path(cache_dir) / f"teacher-{_key(teacher, paths, size)}.safetensors"
    if cache.is_file():
        stored = load_file(str(cache))
        return stored["inputs"], stored["outputs"]
    inputs = teacher.preprocess(five_crops(paths, size))
    runner = copy.deepcopy(teacher).eval().to(device)
    outputs = torch.cat([runner(inputs[i:i + batch].to(device)).cpu() for i in range(0, len(inputs), batch)])
    with atomic_path(cache) as tmp:
        save_file({"inputs": inputs.contiguous(), "outputs": outputs.contiguous()}, tmp)
    return inputs, outputs


def task_targets(teacher: Generator, inputs: torch.Tensor) -> torch.Tensor:
    """The cartoon style itself on the same crops (for the `prune` baseline, which learns without a teacher)."""
    rgb = teacher.postprocess(inputs)  # back to RGB [0,1]
    styled = torch.stack([to_tensor(cartoonize(to_uint8(image))) for image in rgb])
    return teacher.preprocess(styled)
