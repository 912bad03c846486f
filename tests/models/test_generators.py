"""Every registered generator, in tiny configurations: trains, keeps the image size, speaks RGB [0, 1]."""
import pytest
import torch

from tiny_models import TINY_CONFIGS
from gs_core.models import GENERATORS, create_generator

VARIANTS = sorted(TINY_CONFIGS)


def test_tiny_configs_cover_every_registered_generator():
    assert {name for name, _ in TINY_CONFIGS.values()} == set(GENERATORS)


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_backward_is_finite(variant, tiny_generator):
    model = tiny_generator(variant).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(33, 47), (32, 32), (6, 10), (4, 4), (1, 50)])
def test_stylize_keeps_size_and_range(variant, size, tiny_generator, rgb_batch):
    model = tiny_generator(variant)
    x = rgb_batch(1, *size)
    with torch.no_grad():
        y = model.stylize(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    assert y.std() > 0  # not a constant image


def test_cartoongan_stylize_swaps_red_and_blue_around_native_forward(tiny_generator, rgb_batch):
    model = tiny_generator("cartoongan")
    assert model.channel_order == "BGR"
    x = rgb_batch(2, 32, 32)
    bgr = x[:, [2, 1, 0]] * 2 - 1
    with torch.no_grad():
        native = model(bgr)
        expected = ((native[:, [2, 1, 0]] + 1) / 2).clamp(0, 1)
        got = model.stylize(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # and it is not the same as feeding RGB straight in (the test would be vacuous otherwise)
    with torch.no_grad():
        wrong = ((model(x * 2 - 1) + 1) / 2).clamp(0, 1)
    assert (wrong - got).abs().max() > 1e-3


def test_cyclegan_stylize_is_plain_rgb(tiny_generator, rgb_batch):
    model = tiny_generator("cyclegan_instance")
    x = rgb_batch(1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.stylize(x), ((model(x * 2 - 1) + 1) / 2).clamp(0, 1), rtol=0, atol=1e-6)


def test_skip_input_adds_photo_and_colour_head_corrects_each_pixel(tiny_generator):
    model = tiny_generator("cartoongan_skip")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    plain = create_generator("cartoongan", **{**model.config(), "skip_input": False, "colour_head": 0})
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("colour_head.")})
    with torch.no_grad():
        y = x + plain.eval()(x)
        head = model.colour_head(torch.cat([x, y], 1))
        assert head.abs().mean() > 1e-3  # the head is active in this model
        torch.testing.assert_close(model(x), y + head)
    assert create_generator("cartoongan", **{**model.config(), "colour_head": 8}).colour_head[0].out_channels == 8


def test_colour_head_starts_as_a_no_op():
    model = create_generator("cartoongan", ngf=4, n_blocks=1, colour_head=4).eval()
    plain = create_generator("cartoongan", ngf=4, n_blocks=1).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("colour_head.")})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x))


def test_config_rebuilds_the_same_architecture(tiny_generator):
    for variant in VARIANTS:
        model = tiny_generator(variant)
        clone = create_generator(model.arch, **model.config())
        clone.load_state_dict(model.state_dict())  # strict: same keys and shapes


def test_unknown_generator_lists_supported_names():
    with pytest.raises(ValueError) as info:
        create_generator("nope")
    message = str(info.value)
    assert "nope" in message
    for name in [*GENERATORS, "cyclegan"]:
        assert name in message


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="norm"):
        create_generator("resnet_generator", norm="group")
    with pytest.raises(ValueError, match="residual blocks"):
        create_generator("cartoongan", n_blocks=9)
