"""Cost metrics of a generator: parameters, convolution MACs, model size in bits, CPU latency."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from gs_core.device import synchronize

CONV_TYPES = (nn.Conv2d, nn.ConvTranspose2d)
VALID_WEIGHT_BITS = frozenset(range(2, 9)) | {32}

# Every aten op FlopCounterMode prices with its convolution formula. Only one of them is seen per
# convolution (the outermost call), so summing them does not double count.
_CONV_OPS = frozenset({
    torch.ops.aten.convolution,
    torch.ops.aten._convolution,
    torch.ops.aten.cudnn_convolution,
    torch.ops.aten._slow_conv2d_forward,
    torch.ops.aten.convolution_overrideable,
})


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int] = (256, 256)) -> int:
    """Multiply-accumulates of the convolutions in one `model.forward` on a 1 x 3 x H x W input.

    `forward` (the model's native [-1, 1] space) rather than `stylize` is run, on a zero tensor: the
    count depends only on shapes, and plain conv stacks without `stylize` can be measured too. The
    count comes from torch.utils.flop_counter.FlopCounterMode, keeping only convolution ops and
    halving its FLOPs (it prices a multiply-add as 2): norms, activations, padding, residual adds
    and resizing are not counted, matching the layout numbers in shared/official_layouts. Bias adds
    are not counted either. The input is made on the model's device, so a model built on the meta
    device is counted without any arithmetic.

    A normal convolution costs out_H * out_W * k_h * k_w * C_in * C_out / groups. A transposed
    convolution is priced on its *input* grid, in_H * in_W * k_h * k_w * C_in * C_out: every input
    pixel is multiplied into a full k x k x C_out patch, including the products that land in the
    cropped padding border, which is what the operation computes.
    """
    counter = FlopCounterMode(display=False)
    first_param = next(model.parameters(), None)
    x = torch.zeros(1, 3, *input_size, device=first_param.device if first_param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    flops = sum(n for op, n in counter.get_flop_counts()["Global"].items() if op in _CONV_OPS)
    return flops // 2


def weight_bits(layer: nn.Module) -> int:
    """Bit width of a conv layer's weight: its `weight_bits` attribute, 32 (float) when absent."""
    bits = getattr(layer, "weight_bits", 32)
    if not isinstance(bits, int) or bits not in VALID_WEIGHT_BITS:
        raise ValueError(f"{type(layer).__name__} has weight_bits={bits!r}; expected 2..8 or 32")
    return bits


def size_bits(model: nn.Module) -> int:
    """Storage size in bits: conv weights at their `weight_bits`, every other parameter (conv biases
    included) at 32 bits. Shared parameters are counted once."""
    total = 0
    seen: set[int] = set()
    for layer in model.modules():
        if isinstance(layer, CONV_TYPES) and id(layer.weight) not in seen:
            seen.add(id(layer.weight))
            total += layer.weight.numel() * weight_bits(layer)
    for p in model.parameters():
        if id(p) not in seen:
            total += p.numel() * 32
    return total


def compression(teacher_value: float, model_value: float) -> float:
    """How many times smaller the model is than the teacher on some cost (teacher / model)."""
    if model_value <= 0:
        raise ValueError(f"cost of the compressed model must be positive, got {model_value}")
    return teacher_value / model_value


def median_ms(runners: dict[str, Callable[[], object]], warmup: int = 3, repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of each runner (a no-argument callable) over `repeats` rounds after `warmup`.

    The one latency timer of the library (PyTorch models here, exported runtimes in gs_core.deploy). Each round
    calls every runner once, the first one rotating between rounds, so that load changes on a shared machine hit
    all of them alike: the ratios are more trustworthy than the absolute numbers.
    """
    if not runners or repeats < 1:
        raise ValueError("need at least one runner and one repeat")
    keys = list(runners)
    times: dict[str, list[float]] = {key: [] for key in keys}
    for round_index in range(warmup + repeats):
        shift = round_index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            runners[key]()
            if round_index >= warmup:
                times[key].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(values) for key, values in times.items()}


def measure_latency(models: dict[str, nn.Module], input_size: tuple[int, int] = (256, 256),
                    threads: int = 2, warmup: int = 3, repeats: int = 15,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Median wall time in milliseconds of one `forward` on a 1 x 3 x H x W input, per model, on `device`
    (the models must be there already; on a GPU each reading waits for the queued work).

    The models are timed round-robin by `median_ms`. Runs with a fixed `torch.set_num_threads(threads)` (restored
    afterwards), under inference_mode, with the models in eval mode (their previous mode is restored).
    """
    modes = {name: m.training for name, m in models.items()}
    device = torch.device(device)
    x = torch.rand(1, 3, *input_size, device=device) * 2 - 1
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            return median_ms({name: partial(_forward, m, x, device) for name, m in models.items()}, warmup, repeats)
    finally:
        torch.set_num_threads(previous_threads)
        for name, m in models.items():
            m.train(modes[name])


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device) -> None:
    model(x)
    synchronize(device)
