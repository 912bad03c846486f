"""The pruning plan: which channels of each group survive, and what that costs.

A plan is plain data, `{group name: list of bools}`, so it can be stored in a card, drawn by the app and replayed
by extraction. Costs of a plan are computed per conv from the dense model's per-layer numbers, without
building the slim model: a conv's MACs and weights scale with (kept inputs / inputs) * (kept outputs / outputs).
With a latency pricer (`LatencyPricer`, implemented by `gs_core.deploy.latency_table.LatencyTable`) a plan is also
priced in milliseconds, from each conv's measured time at its kept widths.

Kernel-friendly widths: CPU convolution kernels compute channels in blocks (onnxruntime's NCHWc convs and OpenVINO's:
16 channels with AVX-512, 8 with AVX2), so a kept width of 27 runs as 32, or in a slower unblocked kernel. With
`channel_multiples` each group's kept width is rounded up to a multiple of its block, or to the whole layer, by
`round_plan`; the budget prices the rounded plan, so its MACs are what the runtime computes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

import torch
from torch.utils.flop_counter import FlopCounterMode

from gs_core.models import Generator, create_generator
from gs_core.slim.gates import ChannelGate
from gs_core.slim.quant import FULL_PRECISION, conv_layers

Plan = dict[str, list[bool]]


class LatencyPricer(Protocol):
    """All a plan needs of a latency table: the price of a set of kept widths, and the widths worth keeping. The
    table itself (gs_core.deploy.latency_table) is measured in deploy/, above this layer."""

    def plan_ms(self, kept: dict[str, tuple[int, int]]) -> float:
        """Milliseconds of the whole model whose convs keep `kept` (inputs, outputs) channels."""

    def widths(self, width: int) -> list[int]:
        """The widths, ascending, at which a group of `width` channels costs a different time."""


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


def conv_groups(model: Generator) -> dict[str, tuple[str | None, str | None]]:
    """Per conv: the channel group its inputs belong to and the one its outputs belong to (None: not prunable)."""
    groups: dict[str, list[str | None]] = {name: [None, None] for name in conv_layers(model)}
    for group in model.channel_groups():
        for conv, _ in group.producers:
            groups[conv][1] = group.name
        for conv, _ in group.consumers:
            groups[conv][0] = group.name
    return {name: (ins, outs) for name, (ins, outs) in groups.items()}


def kept_channels(model: Generator, plan: Plan) -> dict[str, tuple[int, int]]:
    """(kept inputs, kept outputs) of every conv under `plan`; ungrouped axes keep all channels."""
    convs = conv_layers(model)
    return {name: (convs[name].in_channels if ins is None else sum(plan[ins]),
                   convs[name].out_channels if outs is None else sum(plan[outs]))
            for name, (ins, outs) in conv_groups(model).items()}


@dataclass(frozen=True)
class PlanCost:
    params: int
    macs: int
    size_bits: int
    latency: float | None = None  # milliseconds, when priced with a latency table


class CostModel(NamedTuple):
    """What budget mode prices plans with: the dense model's layer costs, the reference (teacher) cost the budget
    is a fraction of, the per-conv bits, for a latency budget the measured latency table, and the blocks kept widths are
    rounded to."""
    costs: dict[str, LayerCost]
    reference: PlanCost
    bits: dict[str, int] | None = None
    latency: LatencyPricer | None = None
    multiples: dict[str, int] | None = None  # `channel_multiples`: kept widths rounded to these blocks


def plan_cost(model: Generator, plan: Plan, costs: dict[str, LayerCost], bits: dict[str, int] | None = None,
              latency: LatencyPricer | None = None) -> PlanCost:
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
    """Whether the slim model keeps a norm with parameters here (a scale gate is folded into its conv)."""
    module = model.get_submodule(name)
    return getattr(module, "kind", None) != "scale" and any(True for _ in module.parameters())


def _importance(model: Generator, group) -> list[float] | None:
    """Per channel of `group`, its mean |gamma| over the group's gates; None where the group has no gates."""
    gates = [model.get_submodule(g) for g in group.gates]
    if not all(isinstance(g, ChannelGate) for g in gates):
        return None
    return torch.stack([g.gamma.detach().abs() for g in gates]).mean(dim=0).tolist()  # one transfer from a GPU


CHANNEL_MULTIPLE_CHOICES = "auto or a whole number >= 1"
AUTO_MIN_BLOCKS = 8  # "auto" rounds a group only where it is at least this many blocks wide
AUTO_MIN_WIDTH = 128  # ... and at least this many channels wide (see channel_multiples)


def cpu_block(device: torch.device | str = "cpu") -> int:
    """Channels per kernel block on `device`: 16 with AVX-512, 8 with AVX2 (onnxruntime's NCHWc block; OpenVINO
    blocks alike), 8 on a GPU (tensor cores take channel counts in multiples of 8), 4 elsewhere (NEON: four fp32
    lanes)."""
    if torch.device(device).type == "cuda":
        return 8
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.startswith("AVX512"):
        return 16
    if capability == "AVX2":
        return 8
    return 4


def channel_multiples(model: Generator, setting: str | int = "auto",
                      device: torch.device | str = "cpu") -> dict[str, int]:
    """The multiple each channel group of `model` (a gated student: its gates tell a layer norm) keeps its width a
    multiple of (groups left out: 1).

    A number N applies to every group. "auto" takes N from `device` (`cpu_block`) and applies it only to groups at
    least AUTO_MIN_BLOCKS blocks and AUTO_MIN_WIDTH channels wide: rounding steps of at most an eighth of a layer,
    the granularity the latency table measures at. A narrower group keeps exact widths: rounding a 16-wide group
    to 16 would forbid pruning it, and one block or less of output channels runs no faster as a whole block
    (measured: a 3x3 conv at 256 px in onnxruntime, 13 channels 4.3 ms, 16 channels 5.2 ms; 27 channels 16.3 ms,
    32 channels 14.8 ms). The width floor is a quality measurement: the embedded teacher's 64-wide groups rounded
    to 8 (what 8 blocks alone gives on AVX2) cost its 85% / 8-bit student 0.25 +- 0.08 dB on the validation
    photos, 3 seeds paired, against a seed spread of 0.07 to 0.15 (docs/deployment.md), so "auto" leaves them be.
    A layer norm's group (AnimeGANv2) is never rounded: its statistics span the kept channels, so a zero channel
    kept only for its width would change every other channel's output.
    """
    multiple = parse_channel_multiple(setting)
    block = cpu_block(device) if multiple == "auto" else multiple
    out = {}
    min_width = max(AUTO_MIN_BLOCKS * block, AUTO_MIN_WIDTH)
    for group in model.channel_groups():
        kinds = {getattr(model.get_submodule(g), "kind", None) for g in group.gates}
        width = model.widths[group.name]
        if block > 1 and "layer" not in kinds and (multiple != "auto" or width >= min_width):
            out[group.name] = block
    return out


def parse_channel_multiple(setting: str | int) -> str | int:
    """"auto", or the whole number >= 1 that `setting` spells; a ValueError naming the choices otherwise."""
    text = str(setting).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"channel multiple must be {CHANNEL_MULTIPLE_CHOICES}, got {setting!r}")
    return int(text)


def round_plan(model: Generator, plan: Plan, multiples: dict[str, int] | None) -> Plan:
    """`plan` with each group of `multiples` keeping a multiple of its block (or the whole layer): the width rounded
    up, with the strongest channels it does not keep (by mean |gamma|; among equals the first). A channel taken
    back whose gamma the proximal step has made exactly 0 outputs zeros (a gate drops its beta with its gamma), so
    the slim model computes what the gated student computes: it pads the width the kernels run at anyway."""
    rounded = {name: list(mask) for name, mask in plan.items()}
    for group in model.channel_groups():
        block = (multiples or {}).get(group.name, 1)
        mask = rounded[group.name]
        want = min(len(mask), -(-sum(mask) // block) * block)
        if want == sum(mask):
            continue
        importance = _importance(model, group) or [0.0] * len(mask)
        spare = sorted((c for c in range(len(mask)) if not mask[c]), key=lambda c: (-importance[c], c))
        for c in spare[:want - sum(mask)]:
            mask[c] = True
    return rounded


def enforce_budget(model: Generator, plan: Plan, costs: dict[str, LayerCost], target: float, metric: str,
                   bits: dict[str, int] | None = None, latency: LatencyPricer | None = None,
                   multiples: dict[str, int] | None = None) -> Plan:
    """Cut surviving channels with the smallest |gamma| until the plan's `metric` is at most `target`, pricing each
    plan with its widths rounded to `multiples` (`round_plan`), which is the plan returned.

    A trunk channel's importance is its mean |gamma| over the group's gates: with the maximum, the trunk (five or
    more gates a channel) would outrank every other layer and the first and last layers would be cut to one
    channel. Every group keeps at least `min_keep(width)` channels, so no layer becomes a one-channel bottleneck.

    With `metric="latency"` (and its table), a cut that leaves a layer inside a channel block saves no time:
    afterwards each group gets back its strongest cut channels up to the table's next width wherever the plan
    still meets the target, so widths land on the block sizes the kernels run at.
    """
    candidates = []
    for group in model.channel_groups():
        importance = _importance(model, group)
        if importance is not None:
            candidates += [(importance[c], group.name, c) for c in range(len(importance)) if plan[group.name][c]]
    candidates.sort()

    def cut(k: int) -> Plan:
        """The plan after going through the k least important candidates (each cut unless at its floor), its
        widths rounded to `multiples`."""
        cut_plan = {name: list(mask) for name, mask in plan.items()}
        alive = {name: sum(mask) for name, mask in plan.items()}
        for _, group_name, channel in candidates[:k]:
            if alive[group_name] > min_keep(len(cut_plan[group_name])):
                cut_plan[group_name][channel] = False
                alive[group_name] -= 1
        return round_plan(model, cut_plan, multiples)

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
        chosen = _refill_blocks(chosen, candidates, price, target, latency, multiples or {})
    return chosen


def _refill_blocks(chosen: Plan, candidates: list, price, target: float, latency: LatencyPricer,
                   multiples: dict[str, int]) -> Plan:
    """Per group, give back the strongest `candidates` (channels alive before the cut) that `chosen` cut, one table
    width at a time, for as long as the plan still meets `target`: a width the kernels round up anyway costs
    nothing."""
    cut_by_group: dict[str, list[int]] = {}
    for _, group_name, channel in reversed(candidates):  # strongest first
        if not chosen[group_name][channel]:
            cut_by_group.setdefault(group_name, []).append(channel)
    for group_name, channels in cut_by_group.items():
        block, width = multiples.get(group_name, 1), len(chosen[group_name])
        widths = [w for w in latency.widths(width) if w % block == 0 or w == width]
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
