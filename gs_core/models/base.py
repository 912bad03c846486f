"""What every generator shares: RGB-in / RGB-out wrapping and the channel-group description used for pruning."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ChannelGroup:
    """Feature-map channels that must be kept or removed together.

    `gates` are the norm layers whose per-channel scale is gamma for these channels. `producers` are
    (conv name, weight axis) pairs whose output channels are these channels; `consumers` are
    (conv name, weight axis) pairs that read them. A plain conv->norm->conv link has one gate; the
    residual trunk has one gate per tensor added into it, and a trunk channel may only be removed when
    every one of those gates is zero (otherwise some block still writes into it).
    """

    name: str
    gates: tuple[str, ...]
    producers: tuple[tuple[str, int], ...]
    consumers: tuple[tuple[str, int], ...] = field(default_factory=tuple)


class ScalePoint(nn.Module):
    """Where a conv's output channels meet the next conv with no norm between: the identity (or a ReLU) with no
    parameters, so published weights load as they are, and the place GS puts a scale gate (gamma * x) to prune
    those channels. A conv's output times gamma is the same conv with its filters and bias times gamma, so
    extraction folds the gate into the conv before it (`relu` comes after the gate, as the conv's own
    activation)."""

    def __init__(self, channels: int, relu: bool = False):
        super().__init__()
        self.num_features, self.relu = channels, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.relu else x


class Generator(nn.Module):
    """Base class: subclasses define `forward` in their native space and `channel_groups`.

    `forward` takes the model's native input (channel order `channel_order`, values in [-1, 1]);
    `stylize` is what callers use: RGB in [0, 1] in, RGB in [0, 1] out, any size.
    """

    arch: str = ""  # the registry name (create_generator, checkpoint specs)
    aliases: tuple[str, ...] = ()  # other names create_generator accepts
    signature_key: str = ""  # a state-dict key only this architecture's files have: how files are recognised
    channel_order: str = "RGB"  # "BGR" for CartoonGAN's official weights
    size_multiple: int = 4  # two stride-2 stages: H and W must divide by 4 for same-size output
    min_side: int = 8  # the 1/4-size feature map is reflect-padded by one pixel, which needs 2 pixels there

    def config(self) -> dict:
        """Constructor arguments that rebuild this exact architecture (saved in checkpoint cards)."""
        raise NotImplementedError

    @classmethod
    def from_state_dict_keys(cls, shapes: dict[str, tuple[int, ...]]) -> dict:
        """Constructor arguments of the model whose state dict has these key shapes (a file's layout)."""
        raise NotImplementedError

    def channel_groups(self) -> list[ChannelGroup]:
        raise NotImplementedError

    def default_widths(self) -> dict[str, int]:
        """Width of each channel group in the dense architecture."""
        raise NotImplementedError

    def slim_config(self, widths: dict[str, int]) -> dict:
        """Constructor arguments of the ordinary (gate-free) model with these group widths."""
        return {**self.config(), "widths": widths}

    def preprocess(self, rgb01: torch.Tensor) -> torch.Tensor:
        x = rgb01 * 2 - 1
        return x.flip(1) if self.channel_order == "BGR" else x

    def postprocess(self, y: torch.Tensor) -> torch.Tensor:
        y = y.flip(1) if self.channel_order == "BGR" else y
        return ((y + 1) / 2).clamp(0, 1)

    def stylize(self, rgb01: torch.Tensor) -> torch.Tensor:
        """RGB [0,1] NCHW -> RGB [0,1] NCHW of the same size (reflect-pads to a multiple of `size_multiple`
        and to at least `min_side`, then crops)."""
        h, w = rgb01.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (max(-(-n // m) * m, self.min_side) - n for n in (h, w))
        x = self.preprocess(rgb01)
        if pad_h or pad_w:
            mode = "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.postprocess(self(x))[..., :h, :w]
