"""AnimeGANv2 generator in the layout of the PyTorch port (bryandlee/animegan2-pytorch, model.py).

The published weights (face_paint_512_v1, face_paint_512_v2, paprika, celeba_distill) load into `AnimeGANv2()`
with a strict key and shape match. Input is RGB in [-1, 1]. Every norm is GroupNorm with one group (a layer norm
over C, H, W with a per-channel affine scale and shift), and the two upsamplings are bilinear with
align_corners=True to the exact sizes saved on the way down (the port's default `forward` path, the one
torch.hub uses), so the output has the size of the input for any H, W >= 8. `ngf` (32 in the port) and `widths`
exist for narrow teachers and slim students.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gs_core.models.base import ChannelGroup, Generator
from gs_core.models.registry import register_generator

# ConvNormLReLU layers outside the inverted residual blocks, in forward order, with the conv that reads them.
_PLAIN_LAYERS = (("block_a.0", "block_a.1.1"), ("block_a.1", "block_a.2.1"), ("block_a.2", "block_b.0.1"),
                 ("block_b.0", "block_b.1.1"), ("block_b.1", "block_c.0.1"), ("block_c.0", "block_c.1.layers.0.1"),
                 ("block_c.5", "block_d.0.1"), ("block_d.0", "block_d.1.1"), ("block_d.1", "block_e.0.1"),
                 ("block_e.0", "block_e.1.1"), ("block_e.1", "block_e.2.1"), ("block_e.2", "out_layer.0"))
_N_BLOCKS = 4  # inverted residual blocks block_c.1 .. block_c.4
_TRUNK = "block_c.1.layers.3"  # the first norm writing into the residual trunk names its channel group
# Channel groups (named after their first norm) in forward order, with their width in units of ngf (32 in the port).
_WIDTHS = {"block_a.0.2": 1, "block_a.1.2": 2, "block_a.2.2": 2, "block_b.0.2": 4, "block_b.1.2": 4,
           "block_c.0.2": 4, "block_c.1.layers.0.2": 8, "block_c.2.layers.0.2": 16, "block_c.3.layers.0.2": 16,
           "block_c.4.layers.0.2": 16, _TRUNK: 8, "block_c.5.2": 4, "block_d.0.2": 4, "block_d.1.2": 4,
           "block_e.0.2": 2, "block_e.1.2": 2, "block_e.2.2": 1}


class ConvNormLReLU(nn.Sequential):
    """Reflection pad, conv, GroupNorm(1, C), LeakyReLU(0.2): keys `1.weight` (conv), `2.weight`/`2.bias` (norm).

    A stride-2 conv pads only right and bottom (the port's emulation of TensorFlow's 'SAME'), so it halves H, W
    (rounding down). Only the depthwise conv has a bias.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        pad = (0, 1, 0, 1) if stride == 2 else kernel // 2
        super().__init__(nn.ReflectionPad2d(pad), nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=groups > 1),
                         nn.GroupNorm(1, cout), nn.LeakyReLU(0.2))


class InvertedResBlock(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 projection + GroupNorm (no activation), plus the input if `residual`.

    `residual` is structural (the port adds the skip where in == out width, blocks 2 to 4), not read off the
    widths: a pruned first block may end up with as many inputs as outputs and must still have no skip.
    """

    def __init__(self, cin: int, bottleneck: int, cout: int, residual: bool):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvNormLReLU(cin, bottleneck, kernel=1),
                                    ConvNormLReLU(bottleneck, bottleneck, groups=bottleneck),
                                    nn.Conv2d(bottleneck, cout, 1, bias=False), nn.GroupNorm(1, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.layers(x)
        return x + y if self.residual else y


@register_generator
class AnimeGANv2(Generator):
    arch = "animeganv2"
    signature_key = "block_a.0.1.weight"
    channel_order = "RGB"
    size_multiple = 1  # the upsamplings target the saved sizes: any H, W >= min_side comes back unchanged

    def __init__(self, ngf: int = 32, widths: dict[str, int] | None = None):
        super().__init__()
        self.ngf = ngf
        self.widths = {**self.default_widths(), **(widths or {})}
        w = self.widths
        trunk = w[_TRUNK]
        self.block_a = nn.Sequential(ConvNormLReLU(3, w["block_a.0.2"], kernel=7),
                                     ConvNormLReLU(w["block_a.0.2"], w["block_a.1.2"], stride=2),
                                     ConvNormLReLU(w["block_a.1.2"], w["block_a.2.2"]))
        self.block_b = nn.Sequential(ConvNormLReLU(w["block_a.2.2"], w["block_b.0.2"], stride=2),
                                     ConvNormLReLU(w["block_b.0.2"], w["block_b.1.2"]))
        blocks = [InvertedResBlock(w["block_c.0.2"] if k == 1 else trunk, w[f"block_c.{k}.layers.0.2"], trunk,
                                   residual=k > 1) for k in range(1, _N_BLOCKS + 1)]
        self.block_c = nn.Sequential(ConvNormLReLU(w["block_b.1.2"], w["block_c.0.2"]), *blocks,
                                     ConvNormLReLU(trunk, w["block_c.5.2"]))
        # bilinear x2 (to block_a's output size) between block_c and block_d, and again (to the input size) before e
        self.block_d = nn.Sequential(ConvNormLReLU(w["block_c.5.2"], w["block_d.0.2"]),
                                     ConvNormLReLU(w["block_d.0.2"], w["block_d.1.2"]))
        self.block_e = nn.Sequential(ConvNormLReLU(w["block_d.1.2"], w["block_e.0.2"]),
                                     ConvNormLReLU(w["block_e.0.2"], w["block_e.1.2"]),
                                     ConvNormLReLU(w["block_e.1.2"], w["block_e.2.2"], kernel=7))
        self.out_layer = nn.Sequential(nn.Conv2d(w["block_e.2.2"], 3, 1, bias=False), nn.Tanh())

    def config(self) -> dict:
        return {"ngf": self.ngf, "widths": dict(self.widths)}

    def default_widths(self) -> dict[str, int]:
        return {name: units * self.ngf for name, units in _WIDTHS.items()}

    def channel_groups(self) -> list[ChannelGroup]:
        groups = [ChannelGroup(f"{layer}.2", (f"{layer}.2",), ((f"{layer}.1", 0),), ((reader, 1),))
                  for layer, reader in _PLAIN_LAYERS]
        blocks = [f"block_c.{k}.layers" for k in range(1, _N_BLOCKS + 1)]
        # Expansion channel i feeds depthwise channel i only, so the two are one group; the depthwise conv
        # (weight [C, 1, 3, 3], groups = C) is then a producer on axis 0, its input following its output.
        groups += [ChannelGroup(f"{b}.0.2", (f"{b}.0.2", f"{b}.1.2"), ((f"{b}.0.1", 0), (f"{b}.1.1", 0)),
                                ((f"{b}.2", 1),)) for b in blocks]
        # The residual trunk: block 1's projection starts it and blocks 2 to 4 add their projections into it.
        groups.append(ChannelGroup(_TRUNK, tuple(f"{b}.3" for b in blocks), tuple((f"{b}.2", 0) for b in blocks),
                                   (*((f"{b}.0.1", 1) for b in blocks[1:]), ("block_c.5.1", 1))))
        return groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block_a(x)
        half = y.shape[-2:]
        y = self.block_c(self.block_b(y))
        y = self.block_d(F.interpolate(y, half, mode="bilinear", align_corners=True))
        y = self.block_e(F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=True))
        return self.out_layer(y)

    @classmethod
    def from_state_dict_keys(cls, shapes: dict[str, tuple[int, ...]]) -> dict:
        """Constructor arguments read off a state dict: every group width is explicit (its first norm's shape);
        ngf is the nominal first width."""
        widths = {name: shapes[f"{name}.weight"][0] for name in _WIDTHS}
        return {"ngf": widths["block_a.0.2"], "widths": widths}
