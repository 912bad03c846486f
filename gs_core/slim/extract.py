"""Extraction: apply the plan (remove every channel whose gamma is zero) and get an ordinary, smaller model."""
from __future__ import annotations

import torch

from gs_core.models import Generator, create_generator, load_state_dict_strict
from gs_core.slim.gates import ChannelGate
from gs_core.slim.plan import Plan, plan_from_gates
from gs_core.slim.quant import add_quantizers
from gs_core.slim.student import spec_of


def _slice(tensor: torch.Tensor, axis: int, keep: torch.Tensor) -> torch.Tensor:
    return tensor.index_select(axis, keep.nonzero().flatten())


@torch.no_grad()
def extract(student: Generator, plan: Plan | None = None) -> Generator:
    """The slim model of a gated student; `plan` defaults to "keep where some gamma != 0".

    The slim model keeps the student's quantizers (same bits, same calibrated clip ranges), so in fp32 it
    computes what the gated student computes, only with fewer channels.
    """
    if not any(isinstance(m, ChannelGate) for m in student.modules()):
        raise ValueError(f"nothing to extract: this {student.arch} model has no channel gates "
                         "(extraction takes a gated GS student, as made by make_student)")
    plan = plan or plan_from_gates(student)
    keep = {name: torch.tensor(mask, dtype=torch.bool) for name, mask in plan.items()}
    if any(not mask.any() for mask in keep.values()):
        dead = [name for name, mask in keep.items() if not mask.any()]
        raise ValueError(f"every channel of {dead} is pruned: the network would be cut in two")
    spec = spec_of(student)
    slim = create_generator(spec["name"], **student.slim_config({n: int(m.sum()) for n, m in keep.items()}))
    add_quantizers(slim, spec["weight_bits"], act_bits={k: v for k, v in spec["act_bits"].items() if v},
                   per_channel=spec["per_channel"])

    state = {k: v.clone() for k, v in student.state_dict().items()}
    for group in student.channel_groups():
        mask = keep[group.name]
        for conv, axis in group.producers:
            state[f"{conv}.weight"] = _slice(state[f"{conv}.weight"], axis, mask)
            if f"{conv}.bias" in state:
                state[f"{conv}.bias"] = _slice(state[f"{conv}.bias"], 0, mask)
        for conv, axis in group.consumers:
            state[f"{conv}.weight"] = _slice(state[f"{conv}.weight"], axis, mask)
        for name in group.gates:
            gate = student.get_submodule(name)
            for key in [k for k in state if k.startswith(f"{name}.")]:
                del state[key]
            if isinstance(gate, ChannelGate):
                exported = gate.export(mask, slim.get_submodule(name))
                state.update({f"{name}.{leaf}": value for leaf, value in exported.items()})
    load_state_dict_strict(slim, state)
    return slim.eval()
