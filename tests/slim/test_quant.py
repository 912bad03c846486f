"""Fake quantization: level counts, symmetry, per-channel scales, STE, calibration."""
import pytest
import torch
from torch import nn

from gs_core.slim.quant import (ActivationQuantizer, QuantConv2d, QuantConvTranspose2d, _observing,
                                activation_levels, add_quantizers, calibrate_activations, check_bits, conv_layers,
                                layer_bits, quantize_activation, quantize_weight, set_quantizing_)
from gs_core.slim.student import make_student

BITS = range(2, 9)


@pytest.mark.parametrize("bits", BITS)
def test_unsigned_activation_has_exactly_2_to_the_bits_levels(bits):
    alpha = torch.tensor(1.7)
    ramp = torch.linspace(0, 1.7, 20_001)
    q = quantize_activation(ramp, bits, alpha, signed=False)
    levels = torch.unique(q)
    assert len(levels) == 2 ** bits  # not 2**bits + 1 as in the official GS code
    assert levels.min() == 0
    torch.testing.assert_close(levels.max(), alpha)
    steps = levels.diff()
    torch.testing.assert_close(steps, torch.full_like(steps, 1.7 / (2 ** bits - 1)))
    # values beyond the clip range land on the end levels
    outside = quantize_activation(torch.tensor([-3.0, 5.0]), bits, alpha, signed=False)
    torch.testing.assert_close(outside, torch.stack([torch.tensor(0.0), alpha]))


@pytest.mark.parametrize("bits", BITS)
def test_signed_activation_has_exactly_2_to_the_bits_levels_including_zero(bits):
    alpha = torch.tensor(0.9)
    ramp = torch.linspace(-0.9, 0.9, 20_001)
    levels = torch.unique(quantize_activation(ramp, bits, alpha, signed=True))
    assert len(levels) == 2 ** bits
    assert (levels == 0).any()
    torch.testing.assert_close(levels.min(), -alpha)
    assert (levels.abs() <= alpha).all()


@pytest.mark.parametrize("bits", BITS)
def test_weight_quantizer_is_symmetric_with_at_most_2_to_the_bits_minus_1_levels(bits):
    torch.manual_seed(bits)
    ramp = torch.linspace(-1.3, 1.3, 6 * 50 * 3 * 3)
    dense = ramp[torch.randperm(len(ramp))].view(6, 50, 3, 3)
    assert len(torch.unique(quantize_weight(dense, bits, channel_axis=None))) == 2 ** bits - 1
    w = torch.randn(6, 5, 3, 3)
    q = quantize_weight(w, bits, channel_axis=None)
    assert len(torch.unique(q)) <= 2 ** bits - 1
    torch.testing.assert_close(quantize_weight(-w, bits, None), -q)  # symmetric
    scale = w.abs().max() / (2 ** (bits - 1) - 1)
    torch.testing.assert_close(q / scale, torch.round(q / scale))  # integer multiples of one scale
    torch.testing.assert_close(q.abs().max(), w.abs().max())  # the largest weight is exact
    assert (q - w).abs().max() <= scale / 2 + 1e-6


def _channel_scales(q: torch.Tensor, axis: int, bits: int) -> torch.Tensor:
    dims = [d for d in range(q.dim()) if d != axis]
    return q.abs().amax(dim=dims) / (2 ** (bits - 1) - 1)


@pytest.mark.parametrize("transposed", [False, True])
def test_per_channel_scales_follow_output_channels(transposed):
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(4, 6, 3) if transposed else nn.Conv2d(4, 6, 3)
    with torch.no_grad():  # output channel k has magnitude 2**k
        out_axis = 1 if transposed else 0
        shape = [1, 1, 1, 1]
        shape[out_axis] = 6
        conv.weight.mul_(2.0 ** torch.arange(6.0).view(shape))
    model = add_quantizers(nn.Sequential(nn.Conv2d(3, 4, 1), conv), {"1": 4})
    qconv = model[1]
    assert isinstance(qconv, QuantConvTranspose2d if transposed else QuantConv2d)
    assert qconv.channel_axis == out_axis
    q = quantize_weight(qconv.weight, 4, qconv.channel_axis)
    scales = _channel_scales(q, out_axis, 4)
    assert len(torch.unique(scales)) == 6
    torch.testing.assert_close(scales, _channel_scales(conv.weight.detach(), out_axis, 4))
    # each output channel on its own grid: a small-magnitude channel keeps detail a per-layer scale would erase
    per_layer = quantize_weight(qconv.weight, 4, None)
    small = [slice(None)] * 4
    small[out_axis] = 0
    assert (per_layer[tuple(small)] == 0).float().mean() > (q[tuple(small)] == 0).float().mean()


def test_weight_ste_gradient_is_identity():
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    upstream = torch.randn(4, 3, 3, 3)
    (quantize_weight(w, 3, 0) * upstream).sum().backward()
    torch.testing.assert_close(w.grad, upstream)


def test_activation_ste_passes_gradient_inside_range_and_reaches_alpha():
    alpha = torch.tensor(1.0, requires_grad=True)
    x = torch.tensor([-0.5, 0.2, 0.7, 3.0], requires_grad=True)
    quantize_activation(x, 4, alpha, signed=False).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert alpha.grad is not None and alpha.grad > 0  # the clipped value 3.0 pulls alpha up (PACT)


def test_32_bits_leaves_weights_untouched(tiny_generator):
    w = torch.randn(3, 3, 3, 3)
    assert quantize_weight(w, 32, 0) is w
    teacher = tiny_generator("cartoongan")
    student = make_student(teacher, bits=32, gated=False)
    assert not any(isinstance(m, (QuantConv2d, QuantConvTranspose2d)) for m in student.modules())
    assert set(layer_bits(student).values()) == {32}
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(student.eval()(x), teacher(x), rtol=0, atol=0)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 33, -4])
def test_invalid_bits_raise(bits, tiny_generator):
    with pytest.raises(ValueError, match="bit width"):
        check_bits(bits)
    with pytest.raises(ValueError, match="bit width"):
        ActivationQuantizer(bits)
    with pytest.raises(ValueError, match="bit width"):
        make_student(tiny_generator("cartoongan"), bits=bits)


def test_unknown_conv_name_raises():
    with pytest.raises(ValueError, match="no such conv"):
        add_quantizers(nn.Sequential(nn.Conv2d(3, 3, 1)), {"7": 4})


def test_activation_quantizer_before_calibration_is_a_clear_error(tiny_generator):
    student = make_student(tiny_generator("cartoongan"), bits=4)
    with pytest.raises(RuntimeError, match="before calibration.*calibrate_activations"):
        student(torch.zeros(1, 3, 32, 32))


def _quantizers(model) -> dict[str, ActivationQuantizer]:
    return {name: conv.act for name, conv in conv_layers(model).items() if getattr(conv, "act", None) is not None}


def test_calibration_sets_alpha_from_data_and_sign(tiny_generator):
    teacher = tiny_generator("cartoongan")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    a, b = make_student(teacher, bits=8), make_student(teacher, bits=8)
    calibrate_activations(a, x)
    calibrate_activations(b, torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))  # other data
    qa, qb = _quantizers(a), _quantizers(b)
    assert set(qa) == set(conv_layers(teacher)) - {"conv01_1"}
    for name, q in qa.items():
        assert torch.isfinite(q.alpha) and q.alpha > 0, name
    assert qa["conv02_1"].alpha != qb["conv02_1"].alpha
    # CartoonGAN: conv02_2 reads a raw conv output and conv05_1 the residual trunk (no ReLU) -> signed;
    # conv02_1 and conv04_1 read ReLU outputs -> unsigned.
    assert bool(qa["conv02_2"].signed) and bool(qa["conv05_1"].signed)
    assert not bool(qa["conv02_1"].signed) and not bool(qa["conv04_1"].signed)
    # alpha is a high quantile of |x|: close to, not above, the largest observed magnitude
    observed = _largest_inputs(a, x)
    for name, q in qa.items():
        assert 0 < q.alpha <= observed[name] * 1.001, name


def _largest_inputs(model, x) -> dict[str, torch.Tensor]:
    """max |input| of each quantized conv of `model` on `x`, the activation quantizers passing their inputs
    through (as calibration sees them)."""
    observed = {}

    def record(name):
        def hook(module, inputs):
            observed[name] = inputs[0].abs().max()
        return hook

    hooks = [conv_layers(model)[n].register_forward_pre_hook(record(n)) for n in _quantizers(model)]
    with torch.no_grad(), _observing(list(_quantizers(model).values())):
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return observed


def test_calibration_quantile_sets_how_much_of_the_range_is_clipped(tiny_generator):
    teacher = tiny_generator("cartoongan")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    whole, default, half = (make_student(teacher, bits=8) for _ in range(3))
    calibrate_activations(whole, x, quantile=1.0)
    calibrate_activations(default, x)
    calibrate_activations(half, x, quantile=0.5)
    observed = _largest_inputs(whole, x)
    for name, q in _quantizers(whole).items():  # at 1.0: the largest magnitude seen
        assert float(q.alpha.detach()) == pytest.approx(float(observed[name]), rel=1e-6), name
    for name in _quantizers(whole):
        assert _quantizers(half)[name].alpha < _quantizers(default)[name].alpha <= _quantizers(whole)[name].alpha


def test_quantized_student_forward_after_calibration(tiny_generator):
    teacher = tiny_generator("cyclegan_batch")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    s8, s2 = make_student(teacher, bits=8), make_student(teacher, bits=2)
    for s in (s8, s2):
        calibrate_activations(s.eval(), x)
    with torch.no_grad():
        ref = teacher(x)
        err8, err2 = (s8(x) - ref).abs().mean(), (s2(x) - ref).abs().mean()
    assert 0 < err8 < err2


def test_quantizers_switched_off_compute_what_the_teacher_computes(tiny_generator):
    teacher = tiny_generator("cyclegan_instance").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    student = make_student(teacher, bits=4).eval()
    calibrate_activations(student, x)
    alphas = [q.alpha.item() for q in student.modules() if isinstance(q, ActivationQuantizer)]
    with torch.no_grad():
        set_quantizing_(student, False)
        torch.testing.assert_close(student(x), teacher(x), rtol=0, atol=1e-6)
        set_quantizing_(student, True)
        assert (student(x) - teacher(x)).abs().max() > 1e-3
    assert alphas == [q.alpha.item() for q in student.modules() if isinstance(q, ActivationQuantizer)]


def test_first_conv_input_is_never_quantized(tiny_generator):
    for variant, first in (("cartoongan", "conv01_1"), ("cyclegan_instance", "model.1"), ("animeganv2", "block_a.0.1")):
        teacher = tiny_generator(variant)
        assert next(iter(conv_layers(teacher))) == first
        student = make_student(teacher, bits=4)
        assert conv_layers(student)[first].act is None
        assert conv_layers(student)[first].weight_bits == 4  # its weights still are
        explicit = add_quantizers(tiny_generator(variant), {first: 4}, act_bits={first: 4})
        assert conv_layers(explicit)[first].act is None


def test_calibration_leaves_batch_norm_stats_and_mode_alone(tiny_generator):
    student = make_student(tiny_generator("cyclegan_batch_dropout"), bits=8).train()
    before = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.manual_seed(123)
    calibrate_activations(student, x)
    assert student.training
    for key, value in before.items():
        assert torch.equal(student.state_dict()[key], value), key
    # dropout is off while observing: the clip ranges do not depend on the random state
    first = {n: q.alpha.item() for n, q in _quantizers(student).items()}
    torch.manual_seed(456)
    calibrate_activations(student, x)
    assert {n: q.alpha.item() for n, q in _quantizers(student).items()} == first


def test_calibration_over_more_than_2_to_the_24_values():
    """A full-width generator on a 256 px batch feeds each quantizer 10^7..10^8 values: float32 index
    arithmetic and torch.quantile both break past 2^24, so calibration must not rely on either."""
    conv = add_quantizers(nn.Sequential(nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)), {"0": 8, "1": 8})
    with torch.no_grad():
        conv[0].weight.copy_(torch.eye(4, 3)[:, :, None, None])  # the second conv sees the input, padded by 0
        conv[0].bias.zero_()
    x = torch.rand(1, 3, 1200, 1200)
    x[0, 0, 0, 1] = -2.0  # one negative value, off the evenly spread sample: the sign must still be seen
    batch = torch.cat([x, x, x])  # the second conv's input: 3 x 4 x 1200 x 1200 = 17.3 M values > 2^24
    calibrate_activations(conv, batch)
    q = conv[1].act
    assert bool(q.signed)
    assert 0.99 < q.alpha.item() <= 1.0  # 99.9th percentile of |x|, uniform on [0, 1)


@pytest.mark.parametrize("signed", [False, True])
def test_fused_activation_quantizer_matches_its_autograd_definition(signed):
    """The fused kernel and hand-written backward give what clamp + round + STE give through autograd."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 3, 8, 8, generator=g) * 2).requires_grad_()
    alpha = torch.tensor(1.3, requires_grad=True)
    upstream = torch.randn(x.shape, generator=g)
    steps, lowest, highest = activation_levels(4, signed)
    x_ref, alpha_ref = x.detach().clone().requires_grad_(), alpha.detach().clone().requires_grad_()
    step = alpha_ref / steps
    clipped = torch.minimum(torch.maximum(x_ref, lowest * step), highest * step)
    reference = clipped + (torch.round(clipped / step) * step - clipped).detach()
    (reference * upstream).sum().backward()
    (quantize_activation(x, 4, alpha, signed) * upstream).sum().backward()
    torch.testing.assert_close(quantize_activation(x, 4, alpha, signed), reference, rtol=0, atol=1e-6)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(alpha.grad, alpha_ref.grad)
