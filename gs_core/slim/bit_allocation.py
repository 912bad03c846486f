"""Mixed precision: how much each layer suffers from fewer bits, and a per-layer allocation for a size budget.

Sensitivity of a layer at b bits = MSE between the teacher's output and the output of the teacher with only that
layer quantized to b bits (its weights and, except for the first layer, its input activation). Allocation is
greedy: start every layer at the highest candidate width, then repeatedly lower the layer whose next step down
costs the least added sensitivity per bit saved, until the average bits per weight meets the budget.
"""
from __future__ import annotations

import copy

import torch

from gs_core.models import Generator
from gs_core.slim.quant import add_quantizers, calibrate_activations, conv_layers

CANDIDATE_BITS = (2, 3, 4, 5, 6, 8)


@torch.no_grad()
def layer_sensitivity(teacher: Generator, inputs: torch.Tensor,
                      candidates: tuple[int, ...] = CANDIDATE_BITS) -> dict[str, dict[int, float]]:
    """{conv: {bits: output MSE against the teacher when only that conv is quantized}} on native `inputs`."""
    teacher = teacher.eval()
    reference = teacher(inputs)
    result = {}
    for name in conv_layers(teacher):
        result[name] = {}
        for bits in candidates:
            probe = add_quantizers(copy.deepcopy(teacher), {name: bits})
            calibrate_activations(probe, inputs)
            result[name][bits] = float(torch.mean((probe(inputs) - reference) ** 2))
    return result


def allocate_bits(sensitivity: dict[str, dict[int, float]], weights: dict[str, int], average_bits: float) -> dict[str, int]:
    """Per-layer bits whose weight-weighted average is at most `average_bits`, losing as little as possible."""
    candidates = {name: sorted(table) for name, table in sensitivity.items()}
    if average_bits < min(min(c) for c in candidates.values()):
        raise ValueError(f"average of {average_bits} bits is below the smallest candidate width")
    bits = {name: c[-1] for name, c in candidates.items()}
    total = sum(weights.values())

    def average() -> float:
        return sum(weights[n] * b for n, b in bits.items()) / total

    while average() > average_bits + 1e-9:
        best, best_price = None, float("inf")
        for name, options in candidates.items():
            i = options.index(bits[name])
            if i == 0:
                continue
            lower = options[i - 1]
            saved = weights[name] * (bits[name] - lower)
            price = (sensitivity[name][lower] - sensitivity[name][bits[name]]) / saved
            if price < best_price:
                best, best_price = (name, lower), price
        if best is None:
            break
        bits[best[0]] = best[1]
    return bits
