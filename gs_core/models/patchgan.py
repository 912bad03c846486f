"""PatchGAN discriminator (pix2pix's NLayerDiscriminator shape) for the LSGAN term: one score per patch."""
from __future__ import annotations

from torch import nn


class PatchDiscriminator(nn.Module):
    def __init__(self, ndf: int = 32, n_layers: int = 3):
        super().__init__()
        layers = [nn.Conv2d(3, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, n_layers + 1):
            stride = 2 if n < n_layers else 1
            nxt = ndf * min(2 ** n, 8)
            layers += [nn.Conv2d(width, nxt, 4, stride, 1), nn.InstanceNorm2d(nxt), nn.LeakyReLU(0.2, True)]
            width = nxt
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)
