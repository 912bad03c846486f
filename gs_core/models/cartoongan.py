"""CartoonGAN generator in the layout of the official PyTorch port (Yijunmaverick/CartoonGAN-Test-Pytorch-Torch).

Published style weights (Hayao, Hosoda, Paprika, Shinkai) load into `CartoonGAN()` with a strict key and shape
match. Input is BGR in [-1, 1]; `stylize` hides that. `ngf`, `n_blocks`, `widths` and `skip_input` exist for
small teachers and slim students; their defaults give the official network. `colour_head` adds a small pointwise
network after the output (see `forward`); it is off by default, so official weights load as they are.

Prunable channels: every norm's channels, and the outputs of the convs that feed another conv with no norm between
(each strided conv into the conv after it, each transposed conv into its 3x3 conv, the colour head's hidden
layers). Those carry a `ScalePoint` (no parameters, so official keys are unchanged) where GS puts a scale gate.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gs_core.models.base import ChannelGroup, Generator, ScalePoint
from gs_core.models.registry import register_generator


class InstanceNormScaleShift(nn.Module):
    """The port's own instance norm: parameters are called `scale` and `shift`, eps is 1e-9, no buffers."""

    def __init__(self, channels: int, eps: float = 1e-9):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x) * self.scale.view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)


def _block_index(k: int) -> str:
    """Residual block k (0-based) uses the official two-digit index 04, 05, ..."""
    return f"{k + 4:02d}"


@register_generator
class CartoonGAN(Generator):
    arch = "cartoongan"
    signature_key = "conv01_1.weight"
    channel_order = "BGR"
    max_blocks = 8  # decoder layers are named 12/13 after the 8 official blocks (04..11)

    def __init__(self, ngf: int = 64, n_blocks: int = 8, widths: dict[str, int] | None = None,
                 skip_input: bool = False, colour_head: int = 0):
        super().__init__()
        if not 1 <= n_blocks <= self.max_blocks:
            raise ValueError(f"CartoonGAN supports 1 to {self.max_blocks} residual blocks, got {n_blocks}")
        self.ngf, self.n_blocks, self.skip_input, self.colour_head_width = ngf, n_blocks, skip_input, colour_head
        self.widths = {**self.default_widths(), **(widths or {})}
        w = self.widths
        trunk = w["in03_1"]
        conv, deconv = nn.Conv2d, nn.ConvTranspose2d
        self.conv01_1 = conv(3, w["in01_1"], 7)
        self.in01_1 = InstanceNormScaleShift(w["in01_1"])
        self.conv02_1 = conv(w["in01_1"], w["mid02"], 3, 2, 1)
        self.mid02 = ScalePoint(w["mid02"])
        self.conv02_2 = conv(w["mid02"], w["in02_1"], 3, 1, 1)
        self.in02_1 = InstanceNormScaleShift(w["in02_1"])
        self.conv03_1 = conv(w["in02_1"], w["mid03"], 3, 2, 1)
        self.mid03 = ScalePoint(w["mid03"])
        self.conv03_2 = conv(w["mid03"], trunk, 3, 1, 1)
        self.in03_1 = InstanceNormScaleShift(trunk)
        for k in range(n_blocks):
            i = _block_index(k)
            inner = w[f"in{i}_1"]
            setattr(self, f"conv{i}_1", conv(trunk, inner, 3))
            setattr(self, f"in{i}_1", InstanceNormScaleShift(inner))
            setattr(self, f"conv{i}_2", conv(inner, trunk, 3))
            setattr(self, f"in{i}_2", InstanceNormScaleShift(trunk))
        self.deconv01_1 = deconv(trunk, w["up01"], 3, 2, 1, output_padding=1)
        self.up01 = ScalePoint(w["up01"])
        self.deconv01_2 = conv(w["up01"], w["in12_1"], 3, 1, 1)
        self.in12_1 = InstanceNormScaleShift(w["in12_1"])
        self.deconv02_1 = deconv(w["in12_1"], w["up02"], 3, 2, 1, output_padding=1)
        self.up02 = ScalePoint(w["up02"])
        self.deconv02_2 = conv(w["up02"], w["in13_1"], 3, 1, 1)
        self.in13_1 = InstanceNormScaleShift(w["in13_1"])
        self.deconv03_1 = conv(w["in13_1"], 3, 7)
        if skip_input:  # start as the identity: training then only has to learn the change to the photo
            nn.init.zeros_(self.deconv03_1.weight)
            nn.init.zeros_(self.deconv03_1.bias)
        if colour_head:
            # The ReLUs are ScalePoints (ReLU after the gate): the module indices, and so the keys, stay those of
            # heads trained before these layers were prunable.
            h1, h2 = w["head1"], w["head2"]
            self.colour_head = nn.Sequential(conv(6, h1, 1), ScalePoint(h1, relu=True), conv(h1, h2, 1),
                                             ScalePoint(h2, relu=True), conv(h2, 3, 1))
            nn.init.zeros_(self.colour_head[-1].weight)  # starts as a no-op
            nn.init.zeros_(self.colour_head[-1].bias)

    def config(self) -> dict:
        """Only the widths that differ from ngf's and colour_head's defaults: a copy with another ngf or colour head
        then gets that one's defaults."""
        defaults = self.default_widths()
        return {"ngf": self.ngf, "n_blocks": self.n_blocks,
                "widths": {k: v for k, v in self.widths.items() if v != defaults[k]},
                "skip_input": self.skip_input, "colour_head": self.colour_head_width}

    def default_widths(self) -> dict[str, int]:
        ngf = self.ngf
        widths = {"in01_1": ngf, "mid02": 2 * ngf, "in02_1": 2 * ngf, "mid03": 4 * ngf, "in03_1": 4 * ngf,
                  "up01": 2 * ngf, "in12_1": 2 * ngf, "up02": ngf, "in13_1": ngf}
        widths.update({f"in{_block_index(k)}_1": 4 * ngf for k in range(self.n_blocks)})
        if self.colour_head_width:
            widths.update(head1=self.colour_head_width, head2=self.colour_head_width)
        return widths

    def channel_groups(self) -> list[ChannelGroup]:
        blocks = [_block_index(k) for k in range(self.n_blocks)]
        groups = [
            ChannelGroup("in01_1", ("in01_1",), (("conv01_1", 0),), (("conv02_1", 1),)),
            ChannelGroup("mid02", ("mid02",), (("conv02_1", 0),), (("conv02_2", 1),)),
            ChannelGroup("in02_1", ("in02_1",), (("conv02_2", 0),), (("conv03_1", 1),)),
            ChannelGroup("mid03", ("mid03",), (("conv03_1", 0),), (("conv03_2", 1),)),
            # The residual trunk: conv03_2 and every block's second conv add into the same channels.
            ChannelGroup("in03_1", ("in03_1", *(f"in{i}_2" for i in blocks)),
                         (("conv03_2", 0), *((f"conv{i}_2", 0) for i in blocks)),
                         (*((f"conv{i}_1", 1) for i in blocks), ("deconv01_1", 0))),
        ]
        groups += [ChannelGroup(f"in{i}_1", (f"in{i}_1",), ((f"conv{i}_1", 0),), ((f"conv{i}_2", 1),))
                   for i in blocks]
        groups += [  # a transposed conv's weight is (inputs, outputs, kh, kw)
            ChannelGroup("up01", ("up01",), (("deconv01_1", 1),), (("deconv01_2", 1),)),
            ChannelGroup("in12_1", ("in12_1",), (("deconv01_2", 0),), (("deconv02_1", 0),)),
            ChannelGroup("up02", ("up02",), (("deconv02_1", 1),), (("deconv02_2", 1),)),
            ChannelGroup("in13_1", ("in13_1",), (("deconv02_2", 0),), (("deconv03_1", 1),)),
        ]
        if self.colour_head_width:
            groups += [ChannelGroup("head1", ("colour_head.1",), (("colour_head.0", 0),), (("colour_head.2", 1),)),
                       ChannelGroup("head2", ("colour_head.3",), (("colour_head.2", 0),), (("colour_head.4", 1),))]
        return groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in01_1(self.conv01_1(F.pad(x, (3, 3, 3, 3), mode="reflect"))))
        y = F.relu(self.in02_1(self.conv02_2(self.mid02(self.conv02_1(y)))))
        y = F.relu(self.in03_1(self.conv03_2(self.mid03(self.conv03_1(y)))))
        for k in range(self.n_blocks):
            i = _block_index(k)
            t = F.pad(y, (1, 1, 1, 1), mode="reflect")
            t = F.relu(getattr(self, f"in{i}_1")(getattr(self, f"conv{i}_1")(t)))
            t = F.pad(t, (1, 1, 1, 1), mode="reflect")
            y = y + getattr(self, f"in{i}_2")(getattr(self, f"conv{i}_2")(t))
        y = F.relu(self.in12_1(self.deconv01_2(self.up01(self.deconv01_1(y)))))
        y = F.relu(self.in13_1(self.deconv02_2(self.up02(self.deconv02_1(y)))))
        y = torch.tanh(self.deconv03_1(F.pad(y, (3, 3, 3, 3), mode="reflect")))
        # skip_input: the network predicts a change to the photo, so absolute colour survives instance norm.
        y = x + y if self.skip_input else y
        if self.colour_head_width:
            # Instance norms leave the trunk blind to absolute colour, so pointwise rules on it (a lightness
            # staircase, a chroma gain) are out of its reach. This head sees the photo and the output unnormalised,
            # pixel by pixel, and corrects the output.
            y = y + self.colour_head(torch.cat([x, y], 1))
        return y

    @classmethod
    def from_state_dict_keys(cls, shapes: dict[str, tuple[int, ...]]) -> dict:
        """Constructor arguments (ngf, n_blocks, widths, colour_head) read off a state dict's shapes. ngf is the
        transposed conv's output width, which only a pruned file makes narrower than ngf: every width is read too."""
        ngf = shapes["deconv02_1.weight"][1]
        n_blocks = sum(1 for k in range(cls.max_blocks) if f"conv{_block_index(k)}_1.weight" in shapes)
        widths = {name: shapes[f"{name}.scale"][0] for name in
                  ["in01_1", "in02_1", "in03_1", "in12_1", "in13_1"]
                  + [f"in{_block_index(k)}_1" for k in range(n_blocks)] if f"{name}.scale" in shapes}
        outputs = {"mid02": ("conv02_1", 0), "mid03": ("conv03_1", 0), "up01": ("deconv01_1", 1),
                   "up02": ("deconv02_1", 1), "head1": ("colour_head.0", 0), "head2": ("colour_head.2", 0)}
        widths.update({name: shapes[f"{conv}.weight"][axis] for name, (conv, axis) in outputs.items()
                       if f"{conv}.weight" in shapes})
        colour_head = shapes["colour_head.0.weight"][0] if "colour_head.0.weight" in shapes else 0
        return {"ngf": ngf, "n_blocks": n_blocks, "widths": widths, "colour_head": colour_head}
