"""CycleGAN / pix2pix ResnetGenerator in the official layout (junyanz/pytorch-CycleGAN-and-pix2pix).

Keys are `model.N....` because the official network is one nn.Sequential; the indices below are the ones the
published `latest_net_G.pth` files use. Input is RGB in [-1, 1]. `norm` is "instance" (affine-free, the
official CycleGAN default), "batch" (pix2pix) or "instance_affine" (what extraction produces from a gated
instance-norm student: the gate's gamma becomes the affine weight).
"""
from __future__ import annotations

from torch import nn

from gs_core.models.base import ChannelGroup, Generator
from gs_core.models.registry import register_generator

NORMS = ("instance", "batch", "instance_affine")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.InstanceNorm2d(channels, affine=kind == "instance_affine")


class ResnetBlock(nn.Module):
    """pad, conv, norm, relu, [dropout], pad, conv, norm; the caller adds the skip."""

    def __init__(self, dim: int, inner: int, norm: str, use_dropout: bool, bias: bool):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, inner, 3, bias=bias), _norm(norm, inner), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(inner, dim, 3, bias=bias), _norm(norm, dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


@register_generator
class ResnetGenerator(Generator):
    arch = "resnet_generator"
    aliases = ("cyclegan", "pix2pix")
    signature_key = "model.1.weight"
    channel_order = "RGB"

    def __init__(self, ngf: int = 64, n_blocks: int = 9, norm: str = "instance", use_dropout: bool = False,
                 widths: dict[str, int] | None = None):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.ngf, self.n_blocks, self.norm, self.use_dropout = ngf, n_blocks, norm, use_dropout
        self.widths = {**self.default_widths(), **(widths or {})}
        w = self.widths
        bias = norm != "batch"  # the official code drops conv biases before batch norm only
        trunk = w["model.8"]
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, w["model.2"], 7, bias=bias), _norm(norm, w["model.2"]),
                  nn.ReLU(True),
                  nn.Conv2d(w["model.2"], w["model.5"], 3, 2, 1, bias=bias), _norm(norm, w["model.5"]), nn.ReLU(True),
                  nn.Conv2d(w["model.5"], trunk, 3, 2, 1, bias=bias), _norm(norm, trunk), nn.ReLU(True)]
        layers += [ResnetBlock(trunk, w[f"model.{10 + k}.conv_block.2"], norm, use_dropout, bias)
                   for k in range(n_blocks)]
        up1 = f"model.{11 + n_blocks}"
        up2 = f"model.{14 + n_blocks}"
        layers += [nn.ConvTranspose2d(trunk, w[up1], 3, 2, 1, output_padding=1, bias=bias), _norm(norm, w[up1]),
                   nn.ReLU(True),
                   nn.ConvTranspose2d(w[up1], w[up2], 3, 2, 1, output_padding=1, bias=bias), _norm(norm, w[up2]),
                   nn.ReLU(True),
                   nn.ReflectionPad2d(3), nn.Conv2d(w[up2], 3, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def config(self) -> dict:
        return {"ngf": self.ngf, "n_blocks": self.n_blocks, "norm": self.norm, "use_dropout": self.use_dropout,
                "widths": dict(self.widths)}

    def slim_config(self, widths: dict[str, int]) -> dict:
        # A gated affine-free instance norm carries gamma (and a zero beta): the slim model needs affine norms.
        norm = "instance_affine" if self.norm == "instance" else self.norm
        return {**self.config(), "norm": norm, "widths": widths}

    def _block_norm(self, k: int, second: bool) -> str:
        index = (7 if self.use_dropout else 6) if second else 2
        return f"model.{10 + k}.conv_block.{index}"

    def _block_conv(self, k: int, second: bool) -> str:
        index = (6 if self.use_dropout else 5) if second else 1
        return f"model.{10 + k}.conv_block.{index}"

    def default_widths(self) -> dict[str, int]:
        ngf, n = self.ngf, self.n_blocks
        widths = {"model.2": ngf, "model.5": 2 * ngf, "model.8": 4 * ngf,
                  f"model.{11 + n}": 2 * ngf, f"model.{14 + n}": ngf}
        widths.update({f"model.{10 + k}.conv_block.2": 4 * ngf for k in range(n)})
        return widths

    def channel_groups(self) -> list[ChannelGroup]:
        n = self.n_blocks
        up1, up2 = 10 + n, 13 + n  # the two ConvTranspose2d layers; their norms follow them
        groups = [
            ChannelGroup("model.2", ("model.2",), (("model.1", 0),), (("model.4", 1),)),
            ChannelGroup("model.5", ("model.5",), (("model.4", 0),), (("model.7", 1),)),
            ChannelGroup("model.8", ("model.8", *(self._block_norm(k, True) for k in range(n))),
                         (("model.7", 0), *((self._block_conv(k, True), 0) for k in range(n))),
                         (*((self._block_conv(k, False), 1) for k in range(n)), (f"model.{up1}", 0))),
        ]
        groups += [ChannelGroup(self._block_norm(k, False), (self._block_norm(k, False),),
                                ((self._block_conv(k, False), 0),), ((self._block_conv(k, True), 1),))
                   for k in range(n)]
        # ConvTranspose2d weights are [in, out, kh, kw]: output channels are axis 1.
        groups += [
            ChannelGroup(f"model.{up1 + 1}", (f"model.{up1 + 1}",), ((f"model.{up1}", 1),), ((f"model.{up2}", 0),)),
            ChannelGroup(f"model.{up2 + 1}", (f"model.{up2 + 1}",), ((f"model.{up2}", 1),), ((f"model.{up2 + 4}", 1),)),
        ]
        return groups

    def forward(self, x):
        return self.model(x)

    @classmethod
    def from_state_dict_keys(cls, shapes: dict[str, tuple[int, ...]]) -> dict:
        """Constructor arguments read off a state dict (n_blocks, norm, dropout, widths)."""
        n_blocks = sum(1 for key in shapes if key.endswith(".conv_block.1.weight"))
        use_dropout = len(shapes.get("model.10.conv_block.6.weight", ())) == 4  # a conv there, not a norm
        if "model.2.weight" not in shapes:
            norm = "instance"  # old files may still carry running stats here: registry drops them
        elif "model.2.running_mean" in shapes:
            norm = "batch"
        else:
            norm = "instance_affine"
        up1, up2 = 10 + n_blocks, 13 + n_blocks
        # Every conv but the last feeds a norm, so all widths are explicit; ngf is the nominal first width.
        widths = {"model.2": shapes["model.1.weight"][0], "model.5": shapes["model.4.weight"][0],
                  "model.8": shapes["model.7.weight"][0],
                  f"model.{up1 + 1}": shapes[f"model.{up1}.weight"][1],
                  f"model.{up2 + 1}": shapes[f"model.{up2}.weight"][1]}
        widths.update({f"model.{10 + k}.conv_block.2": shapes[f"model.{10 + k}.conv_block.1.weight"][0]
                       for k in range(n_blocks)})
        return {"ngf": widths["model.2"], "n_blocks": n_blocks, "norm": norm, "use_dropout": use_dropout,
                "widths": widths}
