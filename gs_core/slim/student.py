"""A GS student is a teacher plus gates and quantizers; its `spec` is the data that rebuilds it from nothing.

spec = {"name": registry name, "config": constructor kwargs, "gated": bool,
        "weight_bits": {conv: bits}, "act_bits": {conv: bits or None}, "per_channel": bool}

Storage (gs_core.checkpoint) sits below the method, so this module registers `spec_of` and `build_from_spec` with
it instead of storage importing them.
"""
from __future__ import annotations

import copy

from torch import nn

from gs_core.checkpoint import register_spec
from gs_core.models import Generator, create_generator
from gs_core.slim.gates import ChannelGate, add_gates
from gs_core.slim.quant import FULL_PRECISION, add_quantizers, check_bits, conv_layers


def uniform_bits(model: nn.Module, bits: int) -> dict[str, int]:
    return {name: check_bits(bits) for name in conv_layers(model)}


def make_student(teacher: Generator, bits: int | dict[str, int] = FULL_PRECISION, per_channel: bool = True,
                 gated: bool = True) -> Generator:
    """A copy of the teacher with a gamma gate on every prunable norm and fake-quantized convs."""
    student = copy.deepcopy(teacher).train()
    weight_bits = uniform_bits(student, bits) if isinstance(bits, int) else dict(bits)
    add_quantizers(student, weight_bits, per_channel=per_channel)
    return add_gates(student) if gated else student  # after the quantizers: which gates exist depends on them


def spec_of(model: Generator) -> dict:
    convs = conv_layers(model)
    return {
        "name": model.arch,
        "config": model.config(),
        "gated": any(isinstance(m, ChannelGate) for m in model.modules()),
        "weight_bits": {n: getattr(m, "weight_bits", FULL_PRECISION) for n, m in convs.items()},
        "act_bits": {n: (m.act.bits if getattr(m, "act", None) is not None else None) for n, m in convs.items()},
        "per_channel": all(getattr(m, "channel_axis", 0) is not None for m in convs.values()),
    }


def build_from_spec(spec: dict) -> Generator:
    """An untrained model with exactly the modules (and so the state-dict keys) that `spec` describes."""
    model = create_generator(spec["name"], **spec["config"])
    bits = spec.get("weight_bits") or {}
    if any(b != FULL_PRECISION for b in bits.values()) or any(spec.get("act_bits", {}).values()):
        add_quantizers(model, bits, act_bits={k: v for k, v in spec.get("act_bits", {}).items() if v},
                       per_channel=spec.get("per_channel", True))
    return add_gates(model) if spec.get("gated") else model  # after the quantizers, as in make_student


register_spec(spec_of, build_from_spec)
