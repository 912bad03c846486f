"""Extraction: apply the plan (remove every channel whose gamma is zero) and get an ordinary, smaller model.

`narrowed` does the same but keeps the gates: the gated student with only its kept channels, which computes what
the frozen student computes at a fraction of the cost. Training fine-tunes it after the plan freezes and writes
its weights back into the full-width student (`widen_into_`), so checkpoints and extraction see one model.
"""
from __future__ import annotations

from collections import defaultdict

import torch

from gs_core.models import Generator, create_generator, load_state_dict_strict
from gs_core.slim.gates import ChannelGate, add_gates, gates_of
from gs_core.slim.plan import Plan, plan_from_gates
from gs_core.slim.quant import add_quantizers
from gs_core.slim.student import spec_of

Slices = dict[str, list[tuple[int, torch.Tensor]]]  # state key -> the (axis, kept indices) it is narrowed along
GATE_STATE = ("gamma", "beta", "running_mean", "running_var")


def plan_slices(student: Generator, plan: Plan) -> Slices:
    """Every state entry of `student` that the plan narrows (conv weights and biases, gate parameters and
    statistics), with the axes and indices it keeps. A conv may be narrowed on two axes (it reads one group and
    writes another)."""
    dead = [name for name, mask in plan.items() if not any(mask)]
    if dead:
        raise ValueError(f"every channel of {dead} is pruned: the network would be cut in two")
    slices: Slices = defaultdict(list)
    for group in student.channel_groups():
        index = torch.tensor(plan[group.name], dtype=torch.bool).nonzero().flatten()
        for conv, axis in group.producers:
            slices[f"{conv}.weight"].append((axis, index))
            slices[f"{conv}.bias"].append((0, index))
        for conv, axis in group.consumers:
            slices[f"{conv}.weight"].append((axis, index))
        for name in group.gates:
            slices.update({f"{name}.{leaf}": [(0, index)] for leaf in GATE_STATE})
    return slices


def narrow(tensor: torch.Tensor, slices: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    for axis, index in slices:
        tensor = tensor.index_select(axis, index.to(tensor.device))
    return tensor


@torch.no_grad()
def widen_into_(full: torch.Tensor, part: torch.Tensor, slices: list[tuple[int, torch.Tensor]]) -> None:
    """The inverse of `narrow`: write `part` into the kept positions of `full` (the others are left as they are)."""
    if not slices:
        full.copy_(part)
        return
    (axis, index), rest = slices[0], slices[1:]
    index = index.to(full.device)
    inner = full.index_select(axis, index)
    widen_into_(inner, part, rest)
    full.index_copy_(axis, index, inner)


def _slim_shell(student: Generator, plan: Plan, gated: bool) -> Generator:
    """The untrained slim architecture of `plan`, with the student's quantizers (and its gates when `gated`)."""
    spec = spec_of(student)
    slim = create_generator(spec["name"], **student.slim_config({n: sum(m) for n, m in plan.items()}))
    add_quantizers(slim, spec["weight_bits"], act_bits={k: v for k, v in spec["act_bits"].items() if v},
                   per_channel=spec["per_channel"])
    if gated:  # after the quantizers, as in make_student: which gates exist depends on them
        for name, gate in gates_of(add_gates(slim)).items():
            if student.get_submodule(name).beta is None:  # an affine-free teacher norm: keep its gate beta-free
                gate.beta = None
    return slim


def _check_gated(student: Generator) -> None:
    if not any(isinstance(m, ChannelGate) for m in student.modules()):
        raise ValueError(f"nothing to extract: this {student.arch} model has no channel gates "
                         "(extraction takes a gated GS student, as made by make_student)")


@torch.no_grad()
def narrowed(student: Generator, plan: Plan) -> Generator:
    """The gated student with only the channels `plan` keeps (same gates, quantizers and clip ranges), on the
    student's device, in its train/eval mode."""
    _check_gated(student)
    slices = plan_slices(student, plan)
    slim = _slim_shell(student, plan, gated=True)
    load_state_dict_strict(slim, {k: narrow(v, slices.get(k, [])) for k, v in student.state_dict().items()})
    return slim.to(next(student.parameters()).device).train(student.training)


@torch.no_grad()
def widen_student_(student: Generator, slim: Generator, plan: Plan) -> None:
    """Write a narrowed student's state back into the full-width `student` (the inverse of `narrowed`)."""
    slices = plan_slices(student, plan)
    state = student.state_dict()
    for key, value in slim.state_dict().items():
        widen_into_(state[key], value, slices.get(key, []))


@torch.no_grad()
def extract(student: Generator, plan: Plan | None = None) -> Generator:
    """The slim model of a gated student; `plan` defaults to "keep where some gamma != 0".

    The slim model keeps the student's quantizers (same bits, same calibrated clip ranges), so in fp32 it
    computes what the gated student computes, only with fewer channels.
    """
    _check_gated(student)
    plan = plan or plan_from_gates(student)
    slices = plan_slices(student, plan)
    slim = _slim_shell(student, plan, gated=False)
    gates = gates_of(student)  # each becomes the slim model's ordinary norm, with only its kept channels
    state = {k: narrow(v, slices.get(k, [])) for k, v in student.state_dict().items()
             if k.rpartition(".")[0] not in gates}
    for group in student.channel_groups():
        keep = torch.tensor(plan[group.name], dtype=torch.bool)
        for name in (n for n in group.gates if n in gates):
            exported = gates[name].export(keep, slim.get_submodule(name))
            state.update({f"{name}.{leaf}": value for leaf, value in exported.items()})
            if gates[name].kind == "scale":
                _fold_scale_(state, group.producers, gates[name].gamma.detach()[keep])
    load_state_dict_strict(slim, state)
    return slim.eval()


def _fold_scale_(state: dict[str, torch.Tensor], producers: tuple[tuple[str, int], ...], gamma: torch.Tensor) -> None:
    """A scale gate right after its conv: the conv's filters and bias for each channel times its gamma. Exact with
    fake quantization per output channel (each channel's max |w| moves with its gamma); a zero gamma leaves a
    channel of zeros, which the plan keeps only to round a width."""
    for conv, axis in producers:
        shape = [1] * state[f"{conv}.weight"].dim()
        shape[axis] = -1
        state[f"{conv}.weight"] = state[f"{conv}.weight"] * gamma.view(shape)
        if f"{conv}.bias" in state:
            state[f"{conv}.bias"] = state[f"{conv}.bias"] * gamma
