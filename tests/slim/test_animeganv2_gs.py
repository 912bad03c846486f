"""GS on AnimeGANv2: channel groups that tie depthwise, expansion and residual channels; layer-norm gates; every
conv quantized (depthwise and pointwise too); training steps and exact extraction at full width (random weights,
32 px crops, seconds) and the methods on the narrow model."""
import pytest
import torch
from torch import nn

from tiny_models import build_tiny, randomize_norms_
from gs_core.eval.cost import count_macs
from gs_core.methods import SlimConfig, run_method, thinner
from gs_core.models import create_generator
from gs_core.slim.extract import extract
from gs_core.slim.gates import gates_of
from gs_core.slim.plan import dense_plan, layer_costs, plan_cost, plan_from_gates
from gs_core.slim.quant import QuantConv2d, activation_levels, calibrate_activations, conv_layers, layer_bits
from gs_core.slim.student import make_student, spec_of
from gs_core.slim.train import TrainConfig, _apply_plan_, fit


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return randomize_norms_(create_generator("animeganv2")).eval()


@pytest.fixture(scope="module")
def crops(teacher):
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        return x, teacher(x)


def _depthwise(model):
    return {name: conv for name, conv in conv_layers(model).items() if conv.groups > 1}


def test_channel_groups_cover_every_norm_and_agree_on_widths(teacher):
    groups = teacher.channel_groups()
    gates = [name for group in groups for name in group.gates]
    norms = [name for name, m in teacher.named_modules() if isinstance(m, nn.GroupNorm)]
    assert sorted(gates) == sorted(norms) and len(norms) == 24  # each GroupNorm gates exactly one group
    assert len(groups) == len(teacher.widths) == 17
    for group in groups:
        width = teacher.widths[group.name]
        assert all(teacher.get_submodule(name).num_channels == width for name in group.gates), group.name
        for conv, axis in (*group.producers, *group.consumers):
            assert teacher.get_submodule(conv).weight.shape[axis] == width, (group.name, conv)
    # Each depthwise conv produces the channels of its block's expansion, in the same group.
    depthwise = _depthwise(teacher)
    assert len(depthwise) == 4
    for name, conv in depthwise.items():
        block = name.removesuffix(".1.1")
        (group,) = [g for g in groups if (name, 0) in g.producers]
        assert (f"{block}.0.1", 0) in group.producers and conv.groups == teacher.widths[group.name]
    trunk = max(groups, key=lambda g: len(g.gates))
    assert trunk.gates == tuple(f"block_c.{k}.layers.3" for k in range(1, 5))


@pytest.mark.parametrize("bits", [8, 4])
def test_every_conv_is_quantized_depthwise_per_channel(teacher, bits):
    student = make_student(teacher, bits=bits)
    convs = conv_layers(student)
    assert len(convs) == 25 and all(isinstance(c, QuantConv2d) for c in convs.values())
    assert set(layer_bits(student).values()) == {bits}
    spec = spec_of(student)
    assert [name for name, a in spec["act_bits"].items() if a is None] == ["block_a.0.1"]  # only the image
    for name, conv in _depthwise(student).items():
        w, q = conv.weight.detach(), conv._quantized_weight().detach()
        assert q.shape == w.shape == (conv.out_channels, 1, 3, 3)
        # One scale per channel: each channel's largest weight is a level, and each channel has at most
        # 2^bits - 1 levels (a per-layer scale would round most channels' maxima off their levels). rtol 1e-6:
        # that level is qmax * (max / qmax), one fp32 rounding away from max.
        torch.testing.assert_close(q.abs().amax(dim=(1, 2, 3)), w.abs().amax(dim=(1, 2, 3)), rtol=1e-6, atol=0)
        assert max(len(torch.unique(channel)) for channel in q) <= 2 ** bits - 1


def _pruned_quantized_student(model, bits: int, x: torch.Tensor):
    """A quantized student with about 40% of each gate's channels pruned (the trunk's partly: a channel zero in
    some of its gates stays), its removed weights zeroed as the frozen plan does in training, then calibrated."""
    student = make_student(model, bits=bits).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for gate in gates_of(student).values():
            gate.gamma[torch.rand(gate.gamma.shape, generator=g) < 0.4] = 0
    _apply_plan_(student, plan_from_gates(student))
    calibrate_activations(student, x)
    return student


@torch.no_grad()
def _power_of_two_steps_(student) -> None:
    """Make every quantization step a power of two: each output channel's largest weight becomes qmax * 2^e, each
    clip range steps * 2^e, and conv biases multiples of the product step. Every product and partial sum of a conv
    is then an integer times one power of two, exact in fp32, so the summation order cannot change a result:
    wide and narrow convs agree bit for bit on any CPU, and only an extraction error could tell them apart."""
    for conv in conv_layers(student).values():
        qmax = 2 ** (conv.weight_bits - 1) - 1
        w = conv.weight.flatten(1)  # a view: every AnimeGANv2 conv has its output channels on axis 0
        peak = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)  # pruned channels are all zero
        step = torch.exp2(torch.floor(torch.log2(peak / qmax)))
        w.copy_(torch.round(w / peak * qmax) * step)
        x_step = torch.tensor(1 / 128)  # the image, made a multiple of 1/128 by the caller
        if conv.act is not None:
            steps, _, _ = activation_levels(conv.act.bits, bool(conv.act.signed))
            conv.act.alpha.copy_(steps * torch.exp2(torch.round(torch.log2(conv.act.alpha / steps))))
            x_step = conv.act.alpha / steps
        if conv.bias is not None:
            unit = step.flatten() * x_step
            conv.bias.copy_(torch.round(conv.bias / unit) * unit)


@pytest.mark.parametrize("bits", [8, 4])
def test_full_width_quantized_extraction_is_exact(teacher, crops, bits):
    """Full width, weights and activations quantized. With arbitrary steps the narrower convs sum in another
    order (about 5e-7 apart) and the odd activation lands on its neighbouring level (measured at 8 bits: mean
    difference 1e-3, max 0.02; CartoonGAN does the same); power-of-two steps take that noise away."""
    x = torch.round(crops[0] * 128) / 128
    student = _pruned_quantized_student(teacher, bits, x)
    _power_of_two_steps_(student)
    slim = extract(student)
    assert set(layer_bits(slim).values()) == {bits}
    with torch.no_grad():
        # 1e-5 although exact with power-of-two steps: the bound for extraction.
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)
        assert (slim(x) - teacher(x)).abs().mean() > 1e-3  # the pruning and quantization did change the output


def test_gs_steps_at_full_width_then_extraction(teacher, crops, tmp_path):
    """Two GS steps (distillation, LSGAN, proximal L1 under a 50% MAC budget) on 32 px crops, then extraction."""
    x, y = crops
    student = make_student(teacher)
    costs = layer_costs(teacher, (32, 32))
    reference = plan_cost(teacher, dense_plan(teacher), costs)
    cfg = TrainConfig(steps=2, budget=0.5, finetune_fraction=0.5, ndf=4, d_layers=1, checkpoint_every=2,
                      log_every=1)
    history = fit(student, lambda step: (x[2 * step:2 * step + 2], y[2 * step:2 * step + 2]), cfg, tmp_path,
                  cost_model=(costs, reference, layer_bits(student)), progress=False)
    assert history[-1]["step"] == 2 and history[-1]["cost_fraction"] <= 0.5
    plan = plan_from_gates(student)
    assert not all(plan["block_c.1.layers.3"])  # the residual trunk lost channels too
    slim = extract(student)
    assert count_macs(slim, (32, 32)) <= 0.5 * count_macs(teacher, (32, 32))
    assert [conv.groups for conv in _depthwise(slim).values()] == \
           [sum(plan[f"block_c.{k}.layers.0.2"]) for k in range(1, 5)]
    with torch.no_grad():
        # 1e-5: fp32, only the summation order of the narrower convs differs (measured ~1e-6).
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)
        assert slim(x).std() > 0.01  # a real picture, not a constant


@pytest.mark.parametrize("bits", [8, 4])
def test_narrow_quantized_student_extracts_exactly(bits):
    x = torch.round(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 256 - 128) / 128
    student = _pruned_quantized_student(build_tiny("animeganv2"), bits, x)
    _power_of_two_steps_(student)
    slim = extract(student)
    assert set(layer_bits(slim).values()) == {bits}
    with torch.no_grad():
        # In float64: the convs are exact either way (power-of-two steps, see _power_of_two_steps_), but in fp32 a
        # norm over the narrower tensor can round its last bit otherwise and tip one activation across a level
        # boundary (seen: 0.005 on 3% of the pixels, with every difference gone in float64). 1e-5: the bound.
        torch.testing.assert_close(slim.double()(x.double()), student.double()(x.double()), rtol=0, atol=1e-5)


def test_thinner_baselines_scale_ngf():
    teacher = build_tiny("animeganv2")
    thin = thinner(teacher, 0.25)
    assert thin.ngf == 2 and thin.widths == create_generator("animeganv2", ngf=2).widths


@pytest.mark.parametrize("method", ["gs", "stacked"])
def test_methods_on_the_narrow_teacher(method, tmp_path):
    teacher = build_tiny("animeganv2")
    inputs = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        outputs = teacher(inputs)
    cfg = SlimConfig(method=method, bits=8, sparsity=0.5, batch_size=2,
                     train=TrainConfig(steps=6, ndf=4, d_layers=1, log_every=1, checkpoint_every=3))
    slim, card = run_method(teacher, inputs, outputs, cfg, tmp_path, progress=False)
    assert slim.arch == "animeganv2" and set(layer_bits(slim).values()) == {8}
    assert count_macs(slim, (32, 32)) <= 0.55 * count_macs(teacher, (32, 32))
    assert set(card["plan"]["groups"]) == set(teacher.widths)
    photo = torch.rand(1, 3, 33, 47)
    with torch.no_grad():
        assert slim.stylize(photo).shape == photo.shape
