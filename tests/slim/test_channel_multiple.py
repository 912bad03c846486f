"""Kernel-friendly widths (`channel_multiple`) and the layers that became prunable with scale gates (issue 28).

Rounded plans keep multiples of the block (or the whole layer) and are what the budget prices and extraction
builds; channels kept only for their width have gamma exactly 0 and change nothing; every exactly prunable
CartoonGAN layer extracts exactly on every registered architecture; cards written before those layers were
prunable still load and replay whole.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_CONFIGS

from gs_core.checkpoint import load_model
from gs_core.eval.cost import count_macs
from gs_core.methods import SlimConfig
from gs_core.models import create_generator, detect_architecture
from gs_core.slim.extract import extract
from gs_core.slim.gates import gates_of, soft_threshold_
from gs_core.slim.plan import (channel_multiples, cpu_block, enforce_budget, layer_costs, plan_cost,
                               plan_from_gates, round_plan)
from gs_core.slim.quant import calibrate_activations
from gs_core.slim.student import make_student
from gs_core.slim.train import _apply_plan_

NEW_GROUPS = ("mid02", "mid03", "up01", "up02", "head1", "head2")
#: The shipped gs-s0.85-b8 of the grid before NEW_GROUPS were prunable (commit 4124717), as it was saved.
BEFORE_NEW_GROUPS = Path(__file__).resolve().parents[1] / "fixtures" / "gs-s0.85-b8-before-new-groups"


@torch.no_grad()
def _spread_gammas_(student, seed: int = 0, threshold: float = 0.4) -> None:
    """Gammas of different sizes in every gate, then one proximal step: some become exactly 0."""
    g = torch.Generator().manual_seed(seed)
    gammas = [gate.gamma for gate in gates_of(student).values()]
    for gamma in gammas:
        gamma.mul_(torch.empty(gamma.shape).uniform_(0.05, 1.5, generator=g))
    soft_threshold_(gammas, threshold)
    for group in student.channel_groups():  # no group emptied: the network would be cut in two
        gates = [student.get_submodule(n) for n in group.gates if n in gates_of(student)]
        if gates and not any(bool(gate.alive().any()) for gate in gates):
            for gate in gates:
                gate.gamma[0] = 1.0


def _gated(variant: str, bits: int = 32, per_channel: bool = True, seed: int = 0):
    from tiny_models import build_tiny

    student = make_student(build_tiny(variant, seed), bits, per_channel)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    calibrate_activations(student, x)
    return student.eval(), x


def _teacher16():
    """The embedded teacher's shape (ngf 16, 4 blocks, colour head 32), random weights."""
    return create_generator("cartoongan", ngf=16, n_blocks=4, skip_input=True, colour_head=32)


def test_rounded_widths_are_multiples_or_the_whole_layer_and_keep_the_strongest():
    student = make_student(_teacher16(), 32)
    _spread_gammas_(student)
    plan = plan_from_gates(student)
    multiples = {name: 8 for name in plan}
    rounded = round_plan(student, plan, multiples)
    changed = 0
    for group in student.channel_groups():
        mask, before = rounded[group.name], plan[group.name]
        assert sum(mask) % 8 == 0 or sum(mask) == len(mask), group.name
        assert all(m or not b for m, b in zip(mask, before))  # nothing kept is dropped
        added = [c for c in range(len(mask)) if mask[c] and not before[c]]
        left = [c for c in range(len(mask)) if not mask[c]]
        importance = torch.stack([student.get_submodule(g).gamma.abs() for g in group.gates]).mean(0)
        if added and left:
            assert importance[added].min() >= importance[left].max()  # the strongest come back first
        changed += bool(added)
    assert changed  # the rounding did something in this test
    assert round_plan(student, plan, None) == plan  # 1: today's behaviour


def test_budget_prices_the_rounded_widths_and_the_extracted_model_computes_them():
    teacher = _teacher16()
    student = make_student(teacher, 8)
    _spread_gammas_(student, threshold=0.1)
    calibrate_activations(student, torch.rand(2, 3, 32, 32) * 2 - 1)
    costs = layer_costs(teacher, (64, 64))
    reference = plan_cost(teacher, plan_from_gates(student) | {k: [True] * len(v) for k, v in
                                                               plan_from_gates(student).items()}, costs)
    multiples = {"in03_1": 16, "in04_1": 16, "mid03": 16, "mid02": 8, "in02_1": 8}
    target = 0.3 * reference.macs
    plan = enforce_budget(student, plan_from_gates(student), costs, target, "macs", multiples=multiples)
    for name, block in multiples.items():
        assert sum(plan[name]) % block == 0 or sum(plan[name]) == len(plan[name]), name
    priced = plan_cost(student, plan, costs)
    assert priced.macs <= target
    _apply_plan_(student, plan)
    slim = extract(student, plan)
    assert count_macs(slim, (64, 64)) == priced.macs  # the plan's MACs are what the slim model computes
    weights = sum(p.numel() for name, p in slim.named_parameters() if not name.endswith(".alpha"))  # not clip ranges
    assert weights == priced.params


@pytest.mark.parametrize("bits", [32, 8])
def test_extraction_stays_exact_with_channels_kept_only_for_their_width(bits):
    student, x = _gated("cartoongan_skip", bits)
    _spread_gammas_(student)
    plan = round_plan(student, plan_from_gates(student), {name: 4 for name in plan_from_gates(student)})
    zero_but_kept = [(name, c) for name, gate in gates_of(student).items() for c, kept in enumerate(
        plan[next(g.name for g in student.channel_groups() if name in g.gates)]) if kept and gate.gamma[c] == 0]
    assert zero_but_kept  # the plan keeps channels whose gamma the proximal step made exactly 0
    _apply_plan_(student, plan)
    slim = extract(student, plan)
    assert all(w % 4 == 0 or w == student.widths[name] for name, w in slim.widths.items())
    with torch.no_grad():
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)


def test_auto_takes_the_block_from_the_cpu_and_rounds_only_where_it_pays(monkeypatch):
    embedded = make_student(_teacher16(), 32)
    with torch.device("meta"):
        full = make_student(create_generator("cartoongan"), 32)  # the official width: 64, 128 and 256 channels
    for capability, block in (("AVX512", 16), ("AVX512_BF16", 16), ("AVX2", 8), ("DEFAULT", 4)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert cpu_block() == block
        auto = channel_multiples(full, "auto")
        assert auto == {g: block for g, w in full.widths.items() if w >= max(8 * block, 128)}
        assert channel_multiples(embedded, "auto") == {}  # 64 channels at most: exact widths on every CPU
    assert cpu_block("cuda") == 8
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert channel_multiples(embedded, "auto") == {} == channel_multiples(embedded, "1")
    assert set(channel_multiples(full, "auto").values()) == {16} and "in01_1" not in channel_multiples(full, "auto")
    assert channel_multiples(embedded, 16) == {name: 16 for name in embedded.widths}
    anime = make_student(create_generator("animeganv2", ngf=4), 32)
    assert channel_multiples(anime, 4) == {}  # layer norms' groups are never rounded (see channel_multiples)


@pytest.mark.parametrize("value", ["0", "-8", "x", "1.5"])
def test_a_wrong_channel_multiple_is_refused_in_one_line(value):
    with pytest.raises(ValueError, match="channel multiple must be auto or a whole number"):
        SlimConfig(channel_multiple=value)


@pytest.mark.parametrize("bits,per_channel", [(32, True), (8, True), (8, False)])
@pytest.mark.parametrize("variant", sorted(TINY_CONFIGS))
def test_every_prunable_layer_extracts_exactly_on_every_registered_architecture(variant, bits, per_channel):
    student, x = _gated(variant, bits, per_channel)
    scale_gates = {name for name, gate in gates_of(student).items() if gate.kind == "scale"}
    if TINY_CONFIGS[variant][0] == "cartoongan" and (per_channel or bits == 32):
        groups = {g.name for g in student.channel_groups()}
        assert {"mid02", "mid03", "up01", "up02"} <= groups and len(scale_gates) == len(groups & set(NEW_GROUPS))
    if not per_channel:
        assert not scale_gates  # folding a gate into a conv quantized per layer would not be exact
    _spread_gammas_(student)
    plan = plan_from_gates(student)
    assert any(not all(mask) for mask in plan.values())
    _apply_plan_(student, plan)
    slim = extract(student, plan)
    assert not gates_of(slim)
    with torch.no_grad():
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)
    # A pruned file is recognised with its new widths (the slim model's config is read off its shapes).
    name, config = detect_architecture(slim.state_dict())
    assert create_generator(name, **config).widths == slim.widths


def test_cards_written_before_the_new_groups_load_whole_and_unchanged():
    card_path = BEFORE_NEW_GROUPS
    card = json.loads((card_path / "card.json").read_text())
    assert not set(NEW_GROUPS) & set(card["plan"]["groups"])  # written before these groups were prunable
    model, loaded = load_model(card_path)
    assert all(model.widths[g] == model.default_widths()[g] for g in NEW_GROUPS)  # kept whole
    assert sum(p.numel() for p in model.parameters()) == loaded["metrics"]["params"]
    assert count_macs(model, (256, 256)) == loaded["metrics"]["macs"]
    with torch.no_grad():
        assert torch.isfinite(model.stylize(torch.rand(1, 3, 32, 32))).all()


def test_a_gs_run_with_a_channel_multiple_ends_on_rounded_widths(tmp_path):
    from tiny_models import build_tiny

    from gs_core.methods import run_method
    from gs_core.slim.train import TrainConfig

    teacher = build_tiny("cartoongan_skip")
    inputs = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        outputs = teacher(inputs)
    cfg = SlimConfig(method="gs", bits=8, sparsity=0.6, channel_multiple="4", batch_size=2,
                     train=TrainConfig(steps=5, ndf=4, d_layers=1, checkpoint_every=5, log_every=1, precision="fp32"))
    slim, card = run_method(teacher, inputs, outputs, cfg, tmp_path, progress=False)
    assert any(w < teacher.widths[name] for name, w in slim.widths.items())  # it pruned
    assert all(w % 4 == 0 or w == teacher.widths[name] for name, w in slim.widths.items())
    assert card["training"]["channel_multiple"] == "4"


def test_the_grid_recipe_changes_with_a_channel_multiple_other_than_auto():
    from dataclasses import replace

    from gs_core.grid import grid_preset

    grid = grid_preset("default")
    point = next(p for p in grid.points() if p.id == "gs-s0.85-b8")
    groups = ("in01_1",)
    assert grid.recipe(point, groups) == replace(grid, channel_multiple="auto").recipe(point, groups)  # the default
    assert replace(grid, channel_multiple="1").recipe(point, groups) != grid.recipe(point, groups)
