"""Latency budgets: the per-conv table, pricing a plan with it, and GS pruning to a latency target."""
import math

import numpy as np
import pytest
import torch

import gs_core.deploy.latency_table as lt
from gs_core.deploy.latency_table import LatencyTable, grid_widths, latency_table, prunable_axes
from gs_core.models import create_generator
from gs_core.slim.plan import dense_plan, enforce_budget, kept_channels, layer_costs, min_keep, plan_cost
from gs_core.slim.quant import conv_layers
from gs_core.slim.student import make_student
from gs_core.slim.train import TrainConfig, fit


def block_table(model, unit=1.0, offset=2.0) -> LatencyTable:
    """A synthetic table in which a conv costs `unit` per (8-channel input block x 8-channel output block): time
    falls only when a width crosses a block, as with onnxruntime's blocked kernels."""
    axes = prunable_axes(model)
    ins, outs, ms = {}, {}, {}
    for name, conv in conv_layers(model).items():
        ins[name] = grid_widths(conv.in_channels, axes[name][0])
        outs[name] = grid_widths(conv.out_channels, axes[name][1])
        ms[name] = [[unit * math.ceil(i / 8) * math.ceil(o / 8) for o in outs[name]] for i in ins[name]]
    dense = sum(rows[-1][-1] for rows in ms.values()) + offset
    return LatencyTable(size=64, threads=1, runtime="synthetic", dense_ms=dense, floor_ms=float("nan"), in_widths=ins,
                        out_widths=outs, ms=ms, offset_ms=offset)


def test_grid_widths():
    assert grid_widths(64, True) == [6, 8, 16, 24, 32, 40, 48, 56, 64]  # from the floor, min_keep(64) = 6
    assert grid_widths(16, True) == [2, 4, 8, 16]
    assert grid_widths(20, True) == [2, 4, 8, 16, 20]
    assert grid_widths(4, True) == [1, 2, 4]
    assert grid_widths(3, False) == [3]
    assert grid_widths(256, True) == [22, 32, 64, 96, 128, 160, 192, 224, 256]  # coarser past 64 channels


def test_lookup_rounds_up_to_the_next_measured_width():
    model = create_generator("cartoongan", ngf=16, n_blocks=1)
    table = block_table(model)
    assert table.conv_ms("conv04_1", 64, 64) == 64
    assert table.conv_ms("conv04_1", 57, 64) == 64  # a partial block costs a whole one
    assert table.conv_ms("conv04_1", 56, 64) == 56
    assert table.conv_ms("conv04_1", 6, 6) == 1 and table.conv_ms("conv04_1", 7, 7) == 1


def test_dense_plan_prices_at_the_measured_dense_latency():
    model = create_generator("cartoongan", ngf=16, n_blocks=1)
    table = block_table(model)
    costs = layer_costs(model, (64, 64))
    assert plan_cost(model, dense_plan(model), costs, latency=table).latency == pytest.approx(table.dense_ms)
    assert plan_cost(model, dense_plan(model), costs).latency is None


def test_latency_budget_is_met_with_widths_on_block_boundaries():
    teacher = create_generator("cartoongan", ngf=16, n_blocks=1)
    student = make_student(teacher)
    torch.manual_seed(0)
    for module in student.modules():  # distinct |gamma| so the cut order is well defined
        if hasattr(module, "gamma"):
            module.gamma.data.uniform_(0.1, 1.0)
    table = block_table(teacher)
    costs = layer_costs(teacher, (64, 64))
    target = 0.4 * table.dense_ms
    plan = enforce_budget(student, dense_plan(student), costs, target, "latency", latency=table)
    assert plan_cost(student, plan, costs, latency=table).latency <= target
    # A width inside a block saves nothing: after the refill no group stops short of a block it could fill
    # for free, i.e. each kept width is a grid width or refilling it would break the budget.
    for name, mask in plan.items():
        kept = sum(mask)
        widths = grid_widths(len(mask), True)
        if kept not in widths:
            up = next(w for w in widths if w > kept)
            trial = {**plan, name: [True] * up + [False] * (len(mask) - up)}
            assert plan_cost(student, trial, costs, latency=table).latency > target
    assert sum(map(sum, plan.values())) < sum(map(len, plan.values()))


def test_measured_table_of_a_tiny_generator(tiny_generator, tmp_path, monkeypatch):
    model = tiny_generator("cartoongan")
    table = latency_table(model, size=32, threads=1, cache_dir=tmp_path, progress=False)
    for name, conv in conv_layers(model).items():
        rows = np.array(table.ms[name])
        assert rows.shape == (len(table.in_widths[name]), len(table.out_widths[name]))
        assert (rows > 0).all() and (np.diff(rows, axis=0) >= 0).all() and (np.diff(rows, axis=1) >= 0).all()
        assert table.in_widths[name][-1] == conv.in_channels and table.out_widths[name][-1] == conv.out_channels
    # the line from the convs' sum to whole-model time passes through both measured models
    assert table.plan_ms(kept_channels(model, dense_plan(model))) == pytest.approx(table.dense_ms)
    floor = {name: [c < min_keep(len(mask)) for c in range(len(mask))] for name, mask in dense_plan(model).items()}
    if table.scale != 1.0:
        assert table.plan_ms(kept_channels(model, floor)) == pytest.approx(table.floor_ms)
    # measured once: a second call reads the cache instead of timing again
    monkeypatch.setattr(lt, "measure_table", lambda *a, **k: pytest.fail("measured again"))
    assert latency_table(model, size=32, threads=1, cache_dir=tmp_path, progress=False) == table


def test_a_latency_budget_needs_a_table(tiny_generator, tmp_path):
    student = make_student(tiny_generator("cartoongan"))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    cfg = TrainConfig(steps=2, budget=0.5, budget_metric="latency", gan_weight=0, ndf=4, d_layers=1)
    costs = layer_costs(student, (32, 32))
    with pytest.raises(ValueError, match="latency table"):
        fit(student, lambda step: (x, x), cfg, tmp_path, cost_model=(costs, plan_cost(student, dense_plan(student),
                                                                                       costs), None), progress=False)


def test_gs_latency_prunes_to_a_share_of_the_teachers_latency(tmp_path, monkeypatch):
    from gs_core.methods import COST_SIZE, LATENCY_THREADS, SlimConfig, run_method

    monkeypatch.setattr(lt, "CACHE_DIR", tmp_path / "cache")
    torch.manual_seed(0)
    teacher = create_generator("cartoongan", ngf=8, n_blocks=1).eval()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        y = teacher(x)
    cfg = SlimConfig(method="gs-latency", bits=32, sparsity=0.15, batch_size=2,
                     train=TrainConfig(steps=4, gan_weight=0, ndf=4, d_layers=1, precision="fp32"))
    slim, card = run_method(teacher, x, y, cfg, tmp_path / "run", progress=False)
    assert card["method"] == "gs-latency" and card["training"]["train"]["budget_metric"] == "latency"
    table = latency_table(teacher, COST_SIZE[0], LATENCY_THREADS)  # the one the run measured, from the cache
    kept = kept_channels(slim, dense_plan(slim))
    assert table.plan_ms(kept) <= 0.85 * table.dense_ms + 1e-9
    assert kept != kept_channels(teacher, dense_plan(teacher))
