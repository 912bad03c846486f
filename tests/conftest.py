"""Shared fixtures: tiny generators with non-trivial weights, a tiny photo folder, one CPU thread.

Every model here is a few thousand parameters (ngf 4, 1-2 residual blocks) and every image 32x32 or so, so that
the suite runs in well under a minute on a busy 2-core machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gs_core.models import create_generator
from gs_core.models.cartoongan import InstanceNormScaleShift

torch.set_num_threads(1)

# (registry name, constructor kwargs) of every tiny generator variant the tests exercise.
TINY_CONFIGS = {
    "cartoongan": ("cartoongan", dict(ngf=4, n_blocks=2)),
    "cartoongan_skip": ("cartoongan", dict(ngf=4, n_blocks=1, skip_input=True)),
    "cyclegan_instance": ("resnet_generator", dict(ngf=4, n_blocks=2, norm="instance")),
    "cyclegan_instance_dropout": ("resnet_generator", dict(ngf=4, n_blocks=2, norm="instance", use_dropout=True)),
    "cyclegan_instance_affine": ("resnet_generator", dict(ngf=4, n_blocks=1, norm="instance_affine")),
    "cyclegan_batch": ("resnet_generator", dict(ngf=4, n_blocks=2, norm="batch")),
    "cyclegan_batch_dropout": ("resnet_generator", dict(ngf=4, n_blocks=1, norm="batch", use_dropout=True)),
}


@torch.no_grad()
def randomize_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm non-default affine parameters and running stats, so that a test comparing two models
    cannot pass just because all scales are 1 and all shifts 0."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, InstanceNormScaleShift):
            scale, shift = module.scale, module.shift
        elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
            scale, shift = module.weight, module.bias
        else:
            continue
        scale.copy_(torch.empty(scale.shape).uniform_(0.3, 1.5, generator=g))
        shift.copy_(torch.randn(shift.shape, generator=g) * 0.2)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.2)
            module.running_var.copy_(torch.empty(module.running_var.shape).uniform_(0.5, 2.0, generator=g))
    return model


def build_tiny(variant: str, seed: int = 0):
    name, kwargs = TINY_CONFIGS[variant]
    torch.manual_seed(seed)
    return randomize_norms_(create_generator(name, **kwargs), seed).eval()


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
