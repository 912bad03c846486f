"""The cartoon target: deterministic, local, visibly different from the photo,
with dark outlines at edges and flat regions left flat."""

import numpy as np
import pytest

from gs_core.data.cartoon_style import cartoonize, soft_staircase


def _noisy_photo(height=64, width=80, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 3.0, y * 3.0, 120 + 40 * np.sin(x / 7.0)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _step_edge(dark=70, bright=200, size=64):
    image = np.full((size, size, 3), bright, np.uint8)
    image[:, : size // 2] = dark
    return image


def test_deterministic_and_shape_preserving():
    photo = _noisy_photo()
    first = cartoonize(photo)
    assert first.shape == photo.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, cartoonize(photo.copy()))


def test_output_differs_from_input():
    photo = _noisy_photo()
    difference = np.abs(cartoonize(photo).astype(int) - photo.astype(int))
    assert difference.mean() > 3


def test_outline_is_darker_than_both_sides_of_an_edge():
    out = cartoonize(_step_edge()).astype(int)
    row = out[32, :, 1]
    dark_side, bright_side = row[8], row[-8]
    line = row[26:38].min()
    assert line < dark_side - 20
    assert line < bright_side


def test_flat_region_stays_flat_and_unlined():
    out = cartoonize(_step_edge())
    for region in (out[:, :20], out[:, -20:]):
        assert region.astype(float).std(axis=(0, 1)).max() < 1.0


@pytest.mark.parametrize("shape", [(16, 16), (17, 33), (40, 16)])
def test_small_and_odd_sizes(shape):
    photo = _noisy_photo(*shape)
    assert cartoonize(photo).shape == photo.shape


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        cartoonize(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError):
        cartoonize(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        cartoonize(np.zeros((32, 32, 3), np.float32))


def test_soft_staircase_is_smooth_monotone_and_pulls_to_levels():
    x = np.linspace(0, 100, 10001)
    y = soft_staircase(x, step=20.0, pull=0.85)
    assert (np.diff(y) > 0).all()
    np.testing.assert_allclose(y[::2000], x[::2000], atol=1e-9)  # levels are fixed points
    # Halfway between levels a value moves towards a level, not away.
    assert soft_staircase(np.array([15.0]), 20.0, 0.85)[0] > 15.0
    assert soft_staircase(np.array([5.0]), 20.0, 0.85)[0] < 5.0
