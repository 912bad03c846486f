"""Datasets: (photo, cartoon target) crops for training, whole photos for evaluation."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gs_core.data.cartoon_style import cartoonize
from gs_core.data.images import list_images, load_rgb, to_tensor


class PairedCrops(Dataset):
    """Random aligned crops of photos and their cartoon targets.

    Every photo is loaded and cartoonised once, up front, and kept in memory
    as uint8 (the embedded set is a few megabytes). Item ``i`` is photo
    ``i % n_photos``; ``repeats`` lets one epoch visit each photo several
    times. The crop position and horizontal flip are drawn from a generator
    seeded with ``(seed, epoch, i)``, so a run is exactly reproducible and can
    resume mid-way: call :meth:`set_epoch` before iterating each epoch (with
    DataLoader workers, do not use ``persistent_workers``, since workers keep
    the copy of the dataset they were started with).

    Items are ``(photo, target)`` float tensors ``(3, crop, crop)`` in [0, 1].
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        crop: int = 128,
        seed: int = 0,
        repeats: int = 1,
        max_side: int | None = None,
        style: Callable[[np.ndarray], np.ndarray] = cartoonize,
    ):
        if not paths:
            raise ValueError("PairedCrops needs at least one photo")
        if crop < 1 or repeats < 1 or seed < 0:
            raise ValueError(f"need crop >= 1, repeats >= 1, seed >= 0; got {crop}, {repeats}, {seed}")
        self.crop = crop
        self.seed = seed
        self.repeats = repeats
        self.epoch = 0
        self.names = [Path(p).stem for p in paths]
        self.pairs = []
        for path in paths:
            photo, _ = load_rgb(path, max_side=max_side)
            # Upscale before styling so the target is drawn at the resolution
            # the generator will see, not stretched afterwards.
            photo = _cover(photo, crop)
            self.pairs.append((photo, style(photo)))

    def set_epoch(self, epoch: int) -> None:
        """Choose which epoch's crops ``__getitem__`` returns."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        photo, target = self.pairs[index % len(self.pairs)]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        height, width = photo.shape[:2]
        top = int(rng.integers(0, height - self.crop + 1))
        left = int(rng.integers(0, width - self.crop + 1))
        flip = bool(rng.random() < 0.5)
        window = (slice(top, top + self.crop), slice(left, left + self.crop))
        crops = [image[window] for image in (photo, target)]
        if flip:
            crops = [np.ascontiguousarray(image[:, ::-1]) for image in crops]
        return to_tensor(crops[0]), to_tensor(crops[1])


def _cover(rgb: np.ndarray, side: int) -> np.ndarray:
    """Upscale (keeping aspect) so both sides are at least ``side`` pixels."""
    height, width = rgb.shape[:2]
    if min(height, width) >= side:
        return rgb
    scale = side / min(height, width)
    size = (max(side, math.ceil(width * scale)), max(side, math.ceil(height * scale)))
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))


class PhotoFolder(Dataset):
    """Whole photos for evaluation: items are ``(name, photo)``.

    ``source`` is a folder (its images, sorted) or a list of paths; ``name``
    is the file stem and ``photo`` a float tensor ``(3, H, W)`` in [0, 1].
    Both H and W are multiples of ``multiple`` so that encoder-decoder
    generators return an image of exactly the input size. With ``size``
    given, the photo is resized so that its shorter (``side="short"``) or
    longer (``side="long"``) side is ``size``, rounding each side to the
    nearest multiple; without it, the few rows and columns beyond the last
    multiple are cropped off the bottom and right.

    Photos differ in size, so batch them one at a time.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[str | os.PathLike],
        size: int | None = None,
        side: str = "short",
        multiple: int = 4,
    ):
        if side not in ("short", "long"):
            raise ValueError(f"side must be 'short' or 'long', got {side!r}")
        if size is not None and size < multiple:
            raise ValueError(f"size must be at least {multiple}, got {size}")
        if isinstance(source, (str, os.PathLike)):
            self.paths = list_images(source)
        else:
            self.paths = [Path(p) for p in source]
        self.size = size
        self.side = side
        self.multiple = multiple

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        path = self.paths[index]
        rgb, _ = load_rgb(path)
        return path.stem, to_tensor(self._fit(rgb))

    def _fit(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        m = self.multiple
        if self.size is None:
            if height < m or width < m:
                raise ValueError(f"image is {width}x{height}; both sides must be >= {m}")
            return rgb[: height - height % m, : width - width % m]
        reference = min(height, width) if self.side == "short" else max(height, width)
        scale = self.size / reference
        new_size = tuple(max(m, round(n * scale / m) * m) for n in (width, height))
        if new_size == (width, height):
            return rgb
        return np.asarray(Image.fromarray(rgb).resize(new_size, Image.Resampling.LANCZOS))
