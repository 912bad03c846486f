"""Shared fixtures: tiny generators with non-trivial weights, a tiny photo folder, one CPU thread.

Every model here is a few thousand parameters (ngf 4, 1-2 residual blocks) and every image 32x32 or so, so that
the suite runs in well under a minute on a busy 2-core machine.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_models import build_tiny

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def load_script():
    """Factory: load_script("steps_study") -> the module scripts/steps_study.py (scripts are not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "scripts"
                                                      / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture
def tiny_generator():
    """Factory: tiny_generator("cartoongan" | "cyclegan_batch" | ..., seed=0) -> eval-mode generator."""
    return build_tiny


@pytest.fixture
def rgb_batch():
    """Factory: rgb_batch(n, h, w, seed) -> RGB [0, 1] images with smooth structure plus noise."""
    def make(n: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([yy, xx, (yy + xx) / 2])[None].repeat(n, 1, 1, 1)
        return (0.7 * base + 0.3 * torch.rand(n, 3, h, w, generator=g)).clamp(0, 1)
    return make


@pytest.fixture
def photo_dir(tmp_path):
    """A folder of four small synthetic photos (PNG and JPEG), made with PIL."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        yy, xx = np.mgrid[0:40, 0:48]
        image = np.stack([(xx * 5 + 40 * i) % 256, (yy * 6) % 256, (xx + yy) * 2 % 256], axis=-1)
        image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / (f"photo{i}.png" if i % 2 else f"photo{i}.jpg"))
    return folder
