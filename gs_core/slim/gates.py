"""Channel scale factors gamma: where GS's L1 penalty and proximal step act.

Each prunable norm of the teacher becomes a `ChannelGate`: an affine-free normalization followed by
`gamma * x + beta`. Where the teacher's norm has an affine scale (CartoonGAN's `scale`, BatchNorm's `weight`)
that scale is copied into gamma; where it has none (CycleGAN's affine-free InstanceNorm2d) gamma starts at 1
and beta is absent, so the student starts out computing exactly what the teacher computes.

A channel with gamma == 0 also drops its beta (`beta * (gamma != 0)`): its output is then exactly zero, so
removing the channel changes nothing even behind zero padding, where a constant channel could not be folded
into the next layer's bias.

A layer norm (AnimeGANv2's GroupNorm with one group) takes its mean and variance over all channels at once, so
removing a channel would change every other channel's output. Its gate therefore normalises over the channels
the slim model keeps, those alive in any gate of its channel group (`tied`, set by `add_gates`), and outputs
zero elsewhere: a channel pruned from the plan changes the gated student at once, not only after extraction.
Such a channel also gets no gradient, so unlike an instance or batch norm channel it cannot grow back before the
plan freezes.

Where a conv feeds the next conv with no norm between, the model marks a `ScalePoint` and the gate is a plain
scale, `gamma * x` (kind "scale", gamma starting at 1, no beta). Extraction folds it into the conv before it (filters
and bias times gamma), which fake quantization allows only per output channel: max-abs scales move with gamma, one
scale per layer does not. So a model with a conv quantized per layer gets no scale gates (`add_gates`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gs_core.models.cartoongan import InstanceNormScaleShift
from gs_core.models.base import Generator, ScalePoint


class ChannelGate(nn.Module):
    def __init__(self, channels: int, kind: str, eps: float, has_beta: bool, momentum: float = 0.1):
        super().__init__()
        if kind not in ("instance", "batch", "layer", "scale"):
            raise ValueError(f"unsupported norm kind {kind!r}")
        self.kind, self.eps, self.momentum = kind, eps, momentum
        self.relu = False  # a scale gate standing for a ScalePoint that is also its conv's ReLU
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels)) if has_beta else None
        # The gates of this gate's channel group: a plain tuple, not submodules, so state-dict keys are unchanged.
        self.tied: tuple[ChannelGate, ...] = (self,)
        if kind == "batch":
            self.register_buffer("running_mean", torch.zeros(channels))
            self.register_buffer("running_var", torch.ones(channels))

    @classmethod
    def from_norm(cls, norm: nn.Module) -> "ChannelGate":
        if isinstance(norm, ScalePoint):
            gate = cls(norm.num_features, "scale", 0.0, has_beta=False)
            gate.relu = norm.relu
            return gate
        if isinstance(norm, InstanceNormScaleShift):
            gate = cls(norm.scale.numel(), "instance", norm.eps, has_beta=True)
            weight, bias = norm.scale, norm.shift
        elif isinstance(norm, nn.BatchNorm2d):
            gate = cls(norm.num_features, "batch", norm.eps, has_beta=True, momentum=norm.momentum)
            gate.running_mean.copy_(norm.running_mean)
            gate.running_var.copy_(norm.running_var)
            weight, bias = norm.weight, norm.bias
        elif isinstance(norm, nn.InstanceNorm2d):
            gate = cls(norm.num_features, "instance", norm.eps, has_beta=norm.affine)
            weight, bias = (norm.weight, norm.bias) if norm.affine else (None, None)
        elif isinstance(norm, nn.GroupNorm) and norm.num_groups == 1:
            gate = cls(norm.num_channels, "layer", norm.eps, has_beta=norm.affine)
            weight, bias = norm.weight, norm.bias  # None when affine-free
        else:
            raise TypeError(f"cannot gate a {type(norm).__name__}")
        with torch.no_grad():
            if weight is not None:
                gate.gamma.copy_(weight)
            if bias is not None:
                gate.beta.copy_(bias)
        return gate

    def alive(self) -> torch.Tensor:
        return self.gamma.detach() != 0

    def effective_beta(self) -> torch.Tensor | None:
        return None if self.beta is None else self.beta * (self.gamma != 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layer":
            return self._layer_norm(x)
        if self.kind == "scale":
            y = x * self.gamma.view(1, -1, 1, 1).to(x.dtype)
            return F.relu(y) if self.relu else y
        # gamma and beta enter the norm's own kernel as its affine step: one pass over x, not three.
        if self.kind == "batch":
            return F.batch_norm(x, self.running_mean, self.running_var, self.gamma, self.effective_beta(),
                                training=self.training, momentum=self.momentum, eps=self.eps)
        return F.instance_norm(x, weight=self.gamma, bias=self.effective_beta(), eps=self.eps)

    def _layer_norm(self, x: torch.Tensor) -> torch.Tensor:
        """GroupNorm(1, C) over the channels the slim model keeps, zero on the others (their gamma is 0). The
        affine step runs inside F.group_norm, as in the slim model's nn.GroupNorm: the same kernel on the same
        numbers gives the same bits, which matters where fake quantization rounds the result."""
        kept = torch.stack([gate.alive() for gate in self.tied]).any(dim=0)
        beta = self.effective_beta()
        if kept.all():
            return F.group_norm(x, 1, self.gamma, beta, self.eps)
        out = torch.zeros_like(x)
        if kept.any():
            out[:, kept] = F.group_norm(x[:, kept], 1, self.gamma[kept], None if beta is None else beta[kept],
                                        self.eps)
        return out

    def export(self, keep: torch.Tensor, target: nn.Module) -> dict[str, torch.Tensor]:
        """State dict of `target` (the slim model's ordinary norm) holding the kept channels of this gate; empty
        for a scale gate, which extraction folds into the conv before it instead."""
        if self.kind == "scale":
            return {}
        gamma = self.gamma.detach()[keep]
        beta = self.effective_beta()
        beta = torch.zeros_like(gamma) if beta is None else beta.detach()[keep]
        if isinstance(target, InstanceNormScaleShift):
            return {"scale": gamma, "shift": beta}
        state = {"weight": gamma, "bias": beta}
        if isinstance(target, nn.BatchNorm2d):
            state.update(running_mean=self.running_mean[keep], running_var=self.running_var[keep],
                         num_batches_tracked=target.num_batches_tracked.clone())
        return state


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def add_gates(model: Generator) -> Generator:
    """Turn every prunable norm of `model` (in place) into a ChannelGate, tied to the other gates of its channel
    group, and every ScalePoint into a scale gate unless a conv is fake-quantized per layer (quantizers, where
    any, come first); returns the model."""
    per_layer = any(getattr(m, "channel_axis", 0) is None for m in model.modules())
    for group in model.channel_groups():
        points = [model.get_submodule(name) for name in group.gates]
        if per_layer and any(isinstance(p, ScalePoint) for p in points):
            continue
        gates = tuple(ChannelGate.from_norm(p) for p in points)
        for name, gate in zip(group.gates, gates):
            gate.tied = gates
            _replace(model, name, gate)
    return model


def gates_of(model: nn.Module) -> dict[str, ChannelGate]:
    return {name: m for name, m in model.named_modules() if isinstance(m, ChannelGate)}


def gamma_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [gate.gamma for gate in gates_of(model).values()]


@torch.no_grad()
def soft_threshold_(gammas: list[torch.Tensor], threshold: float) -> None:
    """Proximal operator of threshold * ||gamma||_1: shrink towards 0 and clamp to exactly 0."""
    for g in gammas:
        g.copy_(torch.sign(g) * torch.clamp(g.abs() - threshold, min=0))
