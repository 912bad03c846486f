"""Gates start out transparent; proximal steps make exact zeros; extraction removes them without changing outputs."""
import pytest
import torch

from gs_core.data.images import load_rgb, to_tensor
from gs_core.data.photoset import load_split
from gs_core.eval.cost import count_macs, count_params
from gs_core.models import StateDictMismatch
from gs_core.slim.extract import extract, narrowed, widen_student_
from gs_core.slim.gates import ChannelGate, gamma_parameters, gates_of, soft_threshold_
from gs_core.slim.plan import dense_plan, enforce_budget, layer_costs, min_keep, plan_cost, plan_from_gates
from gs_core.slim.quant import calibrate_activations
from gs_core.slim.student import build_from_spec, make_student, spec_of

ARCHS = ["cartoongan", "cartoongan_skip", "cyclegan_instance", "cyclegan_batch", "cyclegan_batch_dropout",
         "cyclegan_instance_affine", "animeganv2"]


@pytest.mark.parametrize("variant", ARCHS)
def test_student_starts_equal_to_teacher(variant, tiny_generator):
    teacher = tiny_generator(variant)
    student = make_student(teacher).eval()
    gates = gates_of(student)
    assert len(gates) == sum(len(g.gates) for g in teacher.channel_groups())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), rtol=0, atol=1e-5)
    # the teacher is untouched (make_student works on a copy)
    assert not any(isinstance(m, ChannelGate) for m in teacher.modules())


def test_soft_threshold_zeros_small_and_shrinks_the_rest():
    g = torch.tensor([0.5, -0.5, 0.05, -0.05, 0.1, 0.0, 2.0, -0.3])
    h = torch.tensor([0.09, -1.0])
    soft_threshold_([g, h], 0.1)
    torch.testing.assert_close(g, torch.tensor([0.4, -0.4, 0.0, 0.0, 0.0, 0.0, 1.9, -0.2]))
    torch.testing.assert_close(h, torch.tensor([0.0, -0.9]))
    assert (g[2:6] == 0).all() and h[0] == 0  # exact zeros, not tiny numbers


def _trunk(model):
    return max(model.channel_groups(), key=lambda group: len(group.gates))


@torch.no_grad()
def prune_some_(student) -> dict[str, list[bool]]:
    """Zero some gammas in every group; returns the plan that should result.

    In the residual trunk, channel 0 is zeroed in every gate (removable) and channel 1 in all gates but the
    last (some block still writes into it, so it must stay).
    """
    expected = {}
    for group in student.channel_groups():
        gates = [student.get_submodule(name) for name in group.gates]
        width = gates[0].gamma.numel()
        keep = [True] * width
        for c in range(0, width, 3):  # channels 0, 3, 6, ...
            keep[c] = False
            for gate in gates:
                gate.gamma[c] = 0
        if len(gates) > 1:
            for gate in gates[:-1]:
                gate.gamma[1] = 0
        expected[group.name] = keep
    return expected


def photo_tensor(max_side=40):
    rgb, _ = load_rgb(load_split("test")[0], max_side=max_side)
    return to_tensor(rgb)[None]


@pytest.mark.parametrize("variant", ARCHS)
def test_extract_removes_zero_channels_without_changing_outputs(variant, tiny_generator):
    student = make_student(tiny_generator(variant)).eval()
    expected = prune_some_(student)
    trunk = _trunk(student)
    assert len(trunk.gates) > 1
    plan = plan_from_gates(student)
    assert plan == expected
    assert plan[trunk.name][1] and not plan[trunk.name][0]

    slim = extract(student)
    assert not any(isinstance(m, ChannelGate) for m in slim.modules())
    assert slim.widths == {name: sum(mask) for name, mask in plan.items()}
    assert count_params(slim) < count_params(student)

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    photo = photo_tensor()
    with torch.no_grad():
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(slim.stylize(photo), student.stylize(photo), rtol=0, atol=1e-5)
        # the photo really goes through the network (not a blank output)
        assert slim.stylize(photo).std() > 0.01


@pytest.mark.parametrize("variant", ["cartoongan", "cartoongan_skip", "cyclegan_instance", "cyclegan_batch",
                                     "animeganv2"])
def test_extracted_cost_equals_plan_cost(variant, tiny_generator):
    teacher = tiny_generator(variant)
    student = make_student(teacher).eval()
    prune_some_(student)
    plan = plan_from_gates(student)
    slim = extract(student)
    costs = layer_costs(teacher, (32, 32))
    assert sum(c.macs for c in costs.values()) == count_macs(teacher, (32, 32))
    dense = plan_cost(teacher, dense_plan(teacher), costs)
    assert dense.params == count_params(teacher) and dense.macs == count_macs(teacher, (32, 32))
    cost = plan_cost(student, plan, costs)
    assert cost.params == count_params(slim)
    assert cost.macs == count_macs(slim, (32, 32))
    assert sum(c.macs for c in layer_costs(slim, (32, 32)).values()) == cost.macs
    assert cost.macs < dense.macs


def test_fully_pruned_group_is_a_clear_error(tiny_generator):
    student = make_student(tiny_generator("cartoongan")).eval()
    with torch.no_grad():
        student.get_submodule("in02_1").gamma.zero_()
    with pytest.raises(ValueError, match=r"every channel of \['in02_1'\] is pruned"):
        extract(student)


def test_extract_rejects_a_plan_of_the_wrong_width(tiny_generator):
    student = make_student(tiny_generator("cartoongan")).eval()
    plan = plan_from_gates(student)
    plan["in01_1"] = plan["in01_1"][:-1]
    with pytest.raises((ValueError, IndexError, StateDictMismatch)):
        extract(student, plan)


@pytest.mark.parametrize("variant", ["cartoongan", "cartoongan_skip", "cyclegan_instance", "animeganv2"])
def test_extract_keeps_quantizers(variant, tiny_generator):
    """A quantized student whose pruned weights are zero (as training leaves them after the freeze) extracts to
    a quantized slim model with the same outputs."""
    from gs_core.slim.train import _apply_plan_

    student = make_student(tiny_generator(variant), bits=8).eval()
    prune_some_(student)
    _apply_plan_(student, plan_from_gates(student))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    calibrate_activations(student, x)
    slim = extract(student)
    spec = spec_of(slim)
    assert set(spec["weight_bits"].values()) == {8}
    assert sum(b is not None for b in spec["act_bits"].values()) == len(spec["act_bits"]) - 1
    with torch.no_grad():
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ARCHS)
def test_narrowed_student_computes_the_same_and_writes_back_into_the_full_one(variant, tiny_generator):
    """What training fine-tunes after the freeze: the gated student with its kept channels only (gates, clip
    ranges and all), whose new weights go back into the full-width student where extraction finds them."""
    from gs_core.slim.train import _apply_plan_

    student = make_student(tiny_generator(variant), bits=8).train()
    prune_some_(student)
    plan = plan_from_gates(student)
    _apply_plan_(student, plan)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    calibrate_activations(student, x)
    slim = narrowed(student, plan)
    assert slim.training and len(gates_of(slim)) == len(gates_of(student))
    assert slim.widths == {name: sum(mask) for name, mask in plan.items()}
    with torch.no_grad():
        torch.testing.assert_close(slim.eval()(x), student.eval()(x), rtol=0, atol=1e-5)  # eval: no dropout
        for p in slim.parameters():  # train the narrowed copy a little (here: perturb it), then write it back
            p.add_(0.01 * torch.randn_like(p))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    widen_student_(student, slim, plan)
    with torch.no_grad():
        torch.testing.assert_close(extract(student)(x), slim(x), rtol=0, atol=1e-5)
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and plan_from_gates(student) == plan  # pruned channels stay pruned


def test_build_from_spec_rebuilds_the_same_keys(tiny_generator):
    for student in (make_student(tiny_generator("cartoongan"), bits=4),
                    make_student(tiny_generator("cyclegan_batch"), bits={"model.4": 6, "model.7": 32}),
                    extract(make_student(tiny_generator("cyclegan_instance")))):
        rebuilt = build_from_spec(spec_of(student))
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
               {k: v.shape for k, v in student.state_dict().items()}


def test_enforce_budget_meets_target_and_keeps_every_group(tiny_generator):
    teacher = tiny_generator("cartoongan")
    student = make_student(teacher)
    costs = layer_costs(teacher, (32, 32))
    dense = plan_cost(teacher, dense_plan(teacher), costs)
    plan = enforce_budget(student, plan_from_gates(student), costs, 0.3 * dense.macs, "macs")
    assert plan_cost(student, plan, costs).macs <= 0.3 * dense.macs
    assert all(any(mask) for mask in plan.values())
    # the smallest |gamma| go first
    gammas = student.get_submodule("in01_1").gamma.detach().abs()
    kept, cut = gammas[torch.tensor(plan["in01_1"])], gammas[~torch.tensor(plan["in01_1"])]
    if len(kept) and len(cut):
        assert cut.max() <= kept.min()


def test_gamma_parameters_are_the_gates(tiny_generator):
    student = make_student(tiny_generator("cyclegan_batch"))
    assert {id(p) for p in gamma_parameters(student)} == {id(g.gamma) for g in gates_of(student).values()}
    assert all(p.requires_grad for p in gamma_parameters(student))


def test_extract_of_an_ungated_model_is_a_clear_error(tiny_generator):
    for model in (tiny_generator("cartoongan"), make_student(tiny_generator("cyclegan_instance"), gated=False)):
        with pytest.raises(ValueError, match="no channel gates"):
            extract(model)


def test_budget_cuts_never_leave_a_group_below_its_floor(tiny_generator):
    teacher = tiny_generator("cartoongan")
    student = make_student(teacher)
    with torch.no_grad():  # make the first layer look unimportant: a global ranking would empty it first
        student.get_submodule("in01_1").gamma.mul_(0.01)
    costs = layer_costs(teacher, (32, 32))
    reference = plan_cost(teacher, dense_plan(teacher), costs)
    plan = enforce_budget(student, plan_from_gates(student), costs, 0.05 * reference.macs, "macs")
    for name, mask in plan.items():
        assert sum(mask) >= min_keep(len(mask)) >= 1, name
    assert min_keep(16) == 2 and min_keep(64) == 6 and min_keep(4) == 1
