"""Fake quantization with a straight-through estimator (STE).

Weights: symmetric, per layer or per output channel, integer levels -(2^(b-1)-1) .. 2^(b-1)-1
(2^b - 1 levels, so that zero is exact and the range is symmetric).
Activations: the input of every conv but the first (the image itself is never quantized). The clip range
alpha is calibrated from data (a high quantile of |x| on a real batch) and then learned (PACT-style: the
gradient reaches alpha through the clamp). Unsigned inputs (after ReLU) use levels k * alpha / (2^b - 1),
k = 0 .. 2^b - 1, exactly 2^b levels (the official GS code's unsigned quantizer has 2^b + 1); inputs that can
be negative (CartoonGAN's residual trunk has no ReLU) use k * alpha / 2^(b-1), k = -2^(b-1) .. 2^(b-1) - 1,
again exactly 2^b levels with zero among them. bits = 32 means "not quantized".
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

FULL_PRECISION = 32
VALID_BITS = (2, 3, 4, 5, 6, 7, 8, FULL_PRECISION)
CALIBRATION_SAMPLE = 1_000_000  # values per quantizer the clip quantile is estimated from (torch.quantile's
# input is limited to 2^24 values; a full-width generator's activations on one 256 px batch are 10^7..10^8)


def calibration_quantile(bits: int) -> float:
    """The quantile of |x| a clip range of this bit width starts at (`calibrate_activations`' default).

    0.999 clipped too much at 8 bits: 8-bit post-training quantization of gs-s0.85-b32 (validation photos) kept
    30.14 dB of its 30.89 at 0.999 and 30.64 at 0.9999 (`benchmarks/calibration_quantile.py`), and GS-8 trained from
    0.9999 gained 0.17 +- 0.10 dB (85%, 3 seeds). Below 8 bits 0.999 stays: GS-4 trained from 0.9999 lost 0.16 +-
    0.04 dB (validation photos, 85%, 3 seeds), although post-training quantization at 4 bits prefers 0.9999."""
    return 0.9999 if bits >= 8 else 0.999


def check_bits(bits: int) -> int:
    if bits not in VALID_BITS:
        raise ValueError(f"bit width must be one of {VALID_BITS}, got {bits}")
    return bits


class _RoundWeights(torch.autograd.Function):
    """w rounded to integer multiples of `scale` within +-qmax; backward: the straight-through estimator (no
    weight is ever clipped, since scale = max |w| / qmax)."""

    @staticmethod
    def forward(ctx, w, scale, qmax: int):
        return (w / scale).round_().clamp_(-qmax, qmax).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def weight_scale(w: torch.Tensor, bits: int, channel_axis: int | None) -> torch.Tensor:
    """The step between weight levels: max |w| / (2^(b-1) - 1), per layer (a scalar) or per output channel
    (shaped to broadcast against `w`). Integer codes are round(w / scale), clamped to +-(2^(b-1) - 1)."""
    if channel_axis is None:
        max_abs = w.detach().abs().max()
    else:
        dims = [d for d in range(w.dim()) if d != channel_axis]
        max_abs = w.detach().abs().amax(dim=dims, keepdim=True)
    return max_abs.clamp(min=1e-12) / (2 ** (bits - 1) - 1)


def quantize_weight(w: torch.Tensor, bits: int, channel_axis: int | None) -> torch.Tensor:
    """Symmetric fake quantization on the levels of `weight_scale`."""
    if bits == FULL_PRECISION:
        return w
    return _RoundWeights.apply(w, weight_scale(w, bits, channel_axis), 2 ** (bits - 1) - 1)


def activation_levels(bits: int, signed: bool) -> tuple[int, int, int]:
    """(steps per alpha, lowest level, highest level): the levels are k * alpha / steps, k = lowest .. highest."""
    if signed:
        return 2 ** (bits - 1), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 2 ** bits - 1, 0, 2 ** bits - 1


class _ClipAndRound(torch.autograd.Function):
    """Forward: x / step rounded and clipped to the levels, in fp32 whatever x's dtype (explicit in-place ops: on
    CPU several times faster than PyTorch's fake-quantize kernel). Backward: the straight-through estimator
    inside the clip range, zero outside it, and PACT's gradient for alpha: a value clipped at the top level
    k_max * alpha / steps passes k_max / steps of its gradient to alpha (k_min / steps at the bottom)."""

    @staticmethod
    def forward(ctx, x, alpha, steps: int, lowest: int, highest: int):
        step = alpha.detach().float() / steps
        ctx.save_for_backward(x, step)
        ctx.levels = steps, lowest, highest
        return (x.float() / step).round_().clamp_(lowest, highest).mul_(step).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, step = ctx.saved_tensors
        steps, lowest, highest = ctx.levels
        below, above = x < lowest * step, x > highest * step
        grad_x = torch.where(below | above, 0, grad)
        grad_alpha = (highest * torch.where(above, grad, 0).sum(dtype=torch.float32)
                      + lowest * torch.where(below, grad, 0).sum(dtype=torch.float32)) / steps
        return grad_x, grad_alpha, None, None, None


def quantize_activation(x: torch.Tensor, bits: int, alpha: torch.Tensor, signed: bool) -> torch.Tensor:
    """x clipped to alpha's range and rounded to its 2^bits levels (see `activation_levels`)."""
    return _ClipAndRound.apply(x, alpha, *activation_levels(bits, signed))


def spread_sample(values: torch.Tensor, k: int) -> torch.Tensor:
    """At most k entries of a flat tensor, evenly spread over it. Integer index arithmetic: a float32
    linspace cannot address more than 2^24 entries exactly (its last index rounds past the end)."""
    n = values.numel()
    if n <= k:
        return values
    return values[torch.arange(k, device=values.device) * (n - 1) // (k - 1)]


class ActivationQuantizer(nn.Module):
    """Quantizes a conv's input. alpha is NaN until `calibrate_activations` has seen real data."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = check_bits(bits)
        self.alpha = nn.Parameter(torch.tensor(float("nan")))
        self.register_buffer("signed", torch.tensor(False))
        # While calibrating: (min, spread sample of |x|) per call; a sample, not the whole tensor, so that
        # calibrating a full-width generator on a real batch does not hold every activation map at once.
        self.observed: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observed is not None:
            x_flat = x.detach().flatten()
            self.observed.append((x_flat.min(), spread_sample(x_flat, CALIBRATION_SAMPLE).abs().float()))
            return x
        if torch.isnan(self.alpha):
            raise RuntimeError("activation quantizer used before calibration; call calibrate_activations first")
        return quantize_activation(x, self.bits, self.alpha, bool(self.signed))


class QuantConvMixin:
    """Adds weight and input fake quantization to a conv; `weight_bits` is what cost.size_bits reads."""

    weight_bits: int
    channel_axis: int | None
    act: ActivationQuantizer | None
    quantizing: bool = True  # False: weights and input pass through in full precision (`set_quantizing_`)

    def _setup(self, weight_bits: int, act_bits: int | None, per_channel: bool, out_axis: int):
        self.weight_bits = check_bits(weight_bits)
        self.channel_axis = out_axis if per_channel else None
        self.act = None if act_bits in (None, FULL_PRECISION) else ActivationQuantizer(act_bits)

    def quantized_inputs(self, x):
        if not self.quantizing:
            return x, self.weight
        return x if self.act is None else self.act(x), self._quantized_weight()

    def _quantized_weight(self) -> torch.Tensor:
        """In training, fake-quantize on every call (the STE needs the graph); at inference the weights do
        not change, so quantize once and reuse it until the weight tensor is modified (its version moves)."""
        if self.training or torch.is_grad_enabled():
            return quantize_weight(self.weight, self.weight_bits, self.channel_axis)
        key = (self.weight.data_ptr(), self.weight._version, self.weight_bits, self.channel_axis)
        if getattr(self, "_cached_key", None) != key:
            self._cached_weight = quantize_weight(self.weight.detach(), self.weight_bits, self.channel_axis)
            self._cached_key = key
        return self._cached_weight


class QuantConv2d(QuantConvMixin, nn.Conv2d):
    def forward(self, x):
        x, w = self.quantized_inputs(x)
        return self._conv_forward(x, w, self.bias)


class QuantConvTranspose2d(QuantConvMixin, nn.ConvTranspose2d):
    def forward(self, x):
        x, w = self.quantized_inputs(x)
        return F.conv_transpose2d(x, w, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)


def _quantized_copy(conv: nn.Module, weight_bits: int, act_bits: int | None, per_channel: bool) -> nn.Module:
    transposed = isinstance(conv, nn.ConvTranspose2d)
    cls = QuantConvTranspose2d if transposed else QuantConv2d
    kwargs = dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                  bias=conv.bias is not None)
    if transposed:
        kwargs["output_padding"] = conv.output_padding
    q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, **kwargs)
    q._setup(weight_bits, act_bits, per_channel, out_axis=1 if transposed else 0)
    q.load_state_dict(conv.state_dict(), strict=False)  # weight and bias; alpha is calibrated later
    return q


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every conv of a generator, in forward order (the order their modules were registered)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))}


def add_quantizers(model: nn.Module, bits: dict[str, int], act_bits: dict[str, int] | None = None,
                   per_channel: bool = True) -> nn.Module:
    """Replace the convs named in `bits` (in place) by fake-quantized copies.

    `act_bits` defaults to the weight bits of each layer; the first conv's input (the image) is never quantized.
    """
    convs = conv_layers(model)
    unknown = set(bits) - set(convs)
    if unknown:
        raise ValueError(f"no such conv layers: {sorted(unknown)}")
    first = next(iter(convs))
    for name, b in bits.items():
        a = (act_bits or bits).get(name, b)
        if name == first:
            a = None
        if b == FULL_PRECISION and a in (None, FULL_PRECISION):
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf,
                _quantized_copy(convs[name], b, a, per_channel))
    return model


def set_quantizing_(model: nn.Module, on: bool) -> None:
    """Switch every fake-quantized conv of `model` on or off (off: it computes in full precision, its clip ranges
    untouched)."""
    for m in model.modules():
        if isinstance(m, QuantConvMixin):
            m.quantizing = on


def layer_bits(model: nn.Module) -> dict[str, int]:
    """Weight bit width of every conv (32 where not quantized)."""
    return {n: getattr(m, "weight_bits", FULL_PRECISION) for n, m in conv_layers(model).items()}


@contextmanager
def _observing(quantizers: list[ActivationQuantizer]):
    for q in quantizers:
        q.observed = []
    try:
        yield
    finally:
        for q in quantizers:
            q.observed = None


@torch.no_grad()
def calibrate_activations(model: nn.Module, batch: torch.Tensor, quantile: float | None = None) -> None:
    """Set each activation quantizer's clip range from a real batch (native model input): the `quantile` of |x|,
    or where None `calibration_quantile` of the quantizer's bit width.

    The model runs in eval mode (restored afterwards): batch-norm running stats are left untouched and dropout
    does not distort the observed ranges.
    """
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    if not quantizers:
        return
    was_training = model.training
    model.eval()
    try:
        with _observing(quantizers):
            model(batch)
            stats = [(min(float(m) for m, _ in q.observed), torch.cat([s for _, s in q.observed]), q)
                     for q in quantizers]
    finally:
        model.train(was_training)
    for lowest, magnitudes, q in stats:
        q.signed.fill_(lowest < 0)
        at = calibration_quantile(q.bits) if quantile is None else quantile
        q.alpha.fill_(max(float(torch.quantile(spread_sample(magnitudes, CALIBRATION_SAMPLE), at)), 1e-6))
