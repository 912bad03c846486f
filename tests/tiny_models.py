"""Tiny generators with non-trivial weights, shared by the tests (imported by name: `from tiny_models import ...`).

A module of its own, not conftest.py: two conftest modules (tests/ and tests/app/) cannot both be imported as
`conftest`.
"""
from __future__ import annotations

import torch
from torch import nn

from gs_core.models import create_generator
from gs_core.models.cartoongan import InstanceNormScaleShift

# (registry name, constructor kwargs) of every tiny generator variant the tests exercise.
TINY_CONFIGS = {
    "cartoongan": ("cartoongan", dict(ngf=4, n_blocks=2)),
    "cartoongan_skip": ("cartoongan", dict(ngf=4, n_blocks=1, skip_input=True, colour_head=4)),
    "cyclegan_instance": ("resnet_generator", dict(ngf=4, n_blocks=2, norm="instance")),
    "cyclegan_instance_dropout": ("resnet_generator", dict(ngf=4, n_blocks=2, norm="instance", use_dropout=True)),
    "cyclegan_instance_affine": ("resnet_generator", dict(ngf=4, n_blocks=1, norm="instance_affine")),
    "cyclegan_batch": ("resnet_generator", dict(ngf=4, n_blocks=2, norm="batch")),
    "cyclegan_batch_dropout": ("resnet_generator", dict(ngf=4, n_blocks=1, norm="batch", use_dropout=True)),
    "animeganv2": ("animeganv2", dict(ngf=4)),
}


@torch.no_grad()
def randomize_norms_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every norm non-default affine parameters and running stats, so that a test comparing two models
    cannot pass just because all scales are 1 and all shifts 0."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, InstanceNormScaleShift):
            scale, shift = module.scale, module.shift
        elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and module.affine:
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
    model = randomize_norms_(create_generator(name, **kwargs), seed)
    with torch.no_grad():  # layers that start as no-ops (skip_input's last conv, colour_head's) must act in tests
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.any():
                module.weight.normal_(0, 0.3)
                module.bias.normal_(0, 0.1)
    return model.eval()
