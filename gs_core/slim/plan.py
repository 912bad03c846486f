"""The pruning plan: which channels of each group survive, and what that costs.

A plan is plain data, `{group name: list of bools}`, so it can be stored in a card, drawn by the app and replayed
by extraction. Costs of a plan are computed per conv from the dense model's per-layer numbers, without
building the slim model: a conv's MACs and weights scale with (kept inputs / inputs) * (kept outputs / outputs).
With a latency table (`gs_core.deploy.latency_table`) a plan is also priced in milliseconds, from each conv's
measured time at its kept widths.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from gs_core.models.base import Generator
from gs_core.slim.gates import ChannelGate
from gs_core.slim.quant import FULL_PRECISION, conv_layers

if TYPE_CHECKING:
    from gs_core.deploy.latency_table import LatencyTable

Plan = dict[str, list[bool]]


def plan_from_gates(model: Generator) -> Plan:
    """A channel survives if any gate of its group still has gamma != 0 there."""
    plan = {}
    for group in model.channel_groups():
        alive = None
        for name in group.gates:
            gate = model.get_submodule(name)
            if isinstance(gate, ChannelGate):
                mask = gate.alive().cpu()
            else:
                mask = torch.ones(gate_width(gate), dtype=torch.bool)
            alive = mask if alive is None else alive | mask
        plan[group.name] = alive.tolist()
    return plan


def gate_width(norm: torch.nn.Module) -> int:
    for attr in ("gamma", "scale", "weight", "running_mean"):
        if getattr(norm, attr, None) is not None:
            return getattr(norm, attr).numel()
    return norm.num_features


def dense_plan(model: Generator) -> Plan:
    return {name: [True] * width for name, width in model.widths.items()}


@dataclass(frozen=True)
class LayerCost:
    """One conv of the dense model: weight count, bias count and MACs at the reference resolution."""

    weights: int
    biases: int
    macs: int
    in_channels: int
    out_channels: int


def layer_costs(model: Generator, size: tuple[int, int] = (256, 256)) -> dict[str, LayerCost]:
    """Per-conv costs of a plain generator, measured with PyTorch's flop counter (MACs = FLOPs / 2, convolutions
    only) on a copy built on the meta device: shapes only, no arithmetic (a full-width model at 256 px would
    otherwise cost a real forward pass)."""
    from gs_core.models import create_generator

    with torch.device("meta"):
        shadow = create_generator(model.arch, **model.config())
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        shadow(torch.zeros(1, 3, *size, device="meta"))
    flops = counter.get_flop_counts()
    costs = {}
    for name, conv in conv_layers(model).items():
        costs[name] = LayerCost(conv.weight.numel(), 0 if conv.bias is None else conv.bias.numel(),
                                _module_flops(flops, f"{type(model).__name__}.{name}") // 2,
                                conv.in_channels, conv.out_channels)
    return costs


def _module_flops(flops: dict, key: str) -> int:
    """FlopCounterMode keys each module by its path, prefixed with the root module's class name."""
    if key not in flops:
        raise KeyError(f"flop counter saw no convolution in {key}")
    return int(sum(flops[key].values()))


def kept_channels(model: Generator, plan: Plan) -> dict[str, tuple[int, int]]:
    """(kept inputs, kept outputs) of every conv under `plan`; ungrouped axes keep all channels."""
    kept = {name: [conv.in_channels, conv.out_channels] for name, conv in conv_layers(model).items()}
    for group in model.channel_groups():
        n = sum(plan[group.name])
        for conv, _ in group.producers:
            kept[conv][1] = n
        for conv, _ in group.consumers:
            kept[conv][0] = n
    return {k: (v[0], v[1]) for k, v in kept.items()}


@dataclass(frozen=True)
class PlanCost:
    params: int
    macs: int
    size_bits: int
    latency: float | None = None  # milliseconds, when priced with a latency table


class CostModel(NamedTuple):
    """What budget mode prices plans with: the dense model's layer costs, the reference (teacher) cost the budget
    is a fraction of, the per-conv bits, and for a latency budget the measured latency table."""
    costs: dict[str, LayerCost]
    reference: PlanCost
    bits: dict[str, int] | None = None
    latency: LatencyTable | None = None


def plan_cost(model: Generator, plan: Plan, costs: dict[str, LayerCost], bits: dict[str, int] | None = None,
              latency: LatencyTable | None = None) -> PlanCost:
    """Params, MACs and size in bits of the slim model that `plan` (and per-conv `bits`) would give, and its
    latency in milliseconds when a `latency` table is given.

    Norm parameters (2 per kept channel) count at 32 bits; conv biases at 32 bits; conv weights at their bits.
    """
    kept = kept_channels(model, plan)
    params = macs = size = 0
    for name, cost in costs.items():
        cin, cout = kept[name]
        frac = (cin / cost.in_channels) * (cout / cost.out_channels)
        weights = round(cost.weights * frac)
        biases = cout if cost.biases else 0
        params += weights + biases
        macs += round(cost.macs * frac)
        size += weights * (bits or {}).get(name, FULL_PRECISION) + biases * FULL_PRECISION
    norm_params = sum(2 * sum(plan[g.name]) * len(g.gates) for g in model.channel_groups()
                      if _norm_has_params(model, g.gates[0]))
    milliseconds = None if latency is None else latency.plan_ms(kept)
    return PlanCost(params + norm_params, macs, size + norm_params * FULL_PRECISION, milliseconds)


def _norm_has_params(model: Generator, name: str) -> bool:
    return any(True for _ in model.get_submodule(name).parameters())


def enforce_budget(model: Generator, plan: Plan, costs: dict[str, LayerCost], target: float, metric: str,
                   bits: dict[str, int] | None = None, latency: LatencyTable | None = None) -> Plan:
    """Cut surviving channels with the smallest |gamma| until the plan's `metric` is at most `target`.

    A trunk channel's importance is its mean |gamma| over the group's gates: with the maximum, the trunk (five or
    more gates a channel) would outrank every other layer and the first and last layers would be cut to one
    channel. Every group keeps at least `min_keep(width)` channels, so no layer becomes a one-channel bottleneck.

    With `metric="latency"` (and its table), a cut that leaves a layer inside a channel block saves no time:
    afterwards each group gets back its strongest cut channels up to the table's next width wherever the plan
    still meets the target, so widths land on the block sizes the kernels run at.
    """
    candidates = []
    for group in model.channel_groups():
        gammas = torch.stack([model.get_submodule(g).gamma.detach().abs() for g in group.gates])
        importance = gammas.mean(dim=0).tolist()  # one transfer, not one per channel from a GPU
        candidates += [(importance[c], group.name, c) for c in range(len(importance)) if plan[group.name][c]]
    candidates.sort()

    def cut(k: int) -> Plan:
        """The plan after going through the k least important candidates (each cut unless at its floor)."""
        cut_plan = {name: list(mask) for name, mask in plan.items()}
        alive = {name: sum(mask) for name, mask in plan.items()}
        for _, group_name, channel in candidates[:k]:
            if alive[group_name] > min_keep(len(cut_plan[group_name])):
                cut_plan[group_name][channel] = False
                alive[group_name] -= 1
        return cut_plan

    # The cost only falls as k grows: bisect for the fewest candidates that meet the target (all, if none do),
    # pricing O(log n) plans instead of one per cut channel.
    def price(p: Plan) -> float:
        return getattr(plan_cost(model, p, costs, bits, latency), metric)

    low, high = 0, len(candidates)
    while low < high:
        middle = (low + high) // 2
        if price(cut(middle)) <= target:
            high = middle
        else:
            low = middle + 1
    chosen = cut(low)
    if metric == "latency":
        chosen = _refill_blocks(chosen, candidates, price, target, latency)
    return chosen


def _refill_blocks(chosen: Plan, candidates: list, price, target: float, latency: LatencyTable) -> Plan:
    """Per group, give back the strongest `candidates` (channels alive before the cut) that `chosen` cut, one table
    width at a time, for as long as the plan still meets `target`: a width the kernels round up anyway costs
    nothing."""
    cut_by_group: dict[str, list[int]] = {}
    for _, group_name, channel in reversed(candidates):  # strongest first
        if not chosen[group_name][channel]:
            cut_by_group.setdefault(group_name, []).append(channel)
    for group_name, channels in cut_by_group.items():
        widths = latency.widths(len(chosen[group_name]))
        while channels:
            kept = sum(chosen[group_name])
            room = next(w for w in widths if w > kept) - kept
            trial = {**chosen, group_name: list(chosen[group_name])}
            for channel in channels[:room]:
                trial[group_name][channel] = True
            if price(trial) > target:
                break
            chosen, channels = trial, channels[room:]
    return chosen


def min_keep(width: int) -> int:
    """Fewest channels a group keeps under a budget: a twelfth of its width, rounded up."""
    return -(-width // 12)


def describe_widths(model: Generator, reference: Generator) -> dict:
    """Per-group and per-conv channel survival of `model` against the dense `reference` (same architecture),
    with each conv's weight bits: what cards store and the app draws."""
    ref_convs = conv_layers(reference)
    groups = {name: [int(model.widths[name]), int(width)] for name, width in reference.widths.items()}
    layers = {name: {"in": [conv.in_channels, ref_convs[name].in_channels],
                     "out": [conv.out_channels, ref_convs[name].out_channels],
                     "bits": getattr(conv, "weight_bits", FULL_PRECISION)}
              for name, conv in conv_layers(model).items()}
    return {"groups": groups, "layers": layers,
            "channels_kept": sum(k for k, _ in groups.values()),
            "channels_total": sum(t for _, t in groups.values())}
