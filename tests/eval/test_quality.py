"""PSNR / SSIM / LPIPS / FID: known values, invariants, and the wiring to the reference packages."""
import inspect
from pathlib import Path

import lpips
import numpy as np
import pytest
import scipy.linalg
import torch
import torchvision
from PIL import Image
from pytorch_fid.inception import InceptionV3

from gs_core.eval.backbones import BACKBONES, weights_path
from gs_core.eval.quality import (FIDMetric, LPIPSMetric, _fid_inception_v3, fid_against_folder, fid_from_features,
                                  frechet_distance, load_image, load_image_folder, psnr, ssim,
                                  style_retained)


@pytest.fixture
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------ PSNR / SSIM

def test_psnr_of_constant_offset_has_closed_form(images):
    x = images * 0.9
    # MSE = 0.1^2, so PSNR = 10 log10(1 / 0.01) = 20 dB; offset 0.01 gives 40 dB; the batch averages.
    assert psnr(x, x + 0.1) == pytest.approx(20.0)
    assert psnr(x[:2], torch.cat([x[:1] + 0.1, x[1:2] + 0.01])) == pytest.approx(30.0)


def test_psnr_accepts_hwc_arrays_like_nchw_tensors(images):
    y = (images + 0.05).clamp(0, 1)
    as_arrays = psnr(images[0].permute(1, 2, 0).numpy(), y[0].permute(1, 2, 0).numpy())
    assert as_arrays == pytest.approx(psnr(images[:1], y[:1]))
    assert psnr(images, images) == float("inf")


def test_ssim_identity_and_closed_form_on_flat_images(images):
    assert ssim(images, images) == pytest.approx(1.0)
    # Flat images have no variance: SSIM is the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    c1 = 0.01 ** 2
    a, b = torch.full((1, 3, 16, 16), 0.2), torch.full((1, 3, 16, 16), 0.4)
    assert ssim(a, b) == pytest.approx((2 * 0.2 * 0.4 + c1) / (0.2 ** 2 + 0.4 ** 2 + c1), rel=1e-6)


def test_ssim_falls_with_noise(images):
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(1))
    slight, strong = (images + 0.02 * noise).clamp(0, 1), (images + 0.2 * noise).clamp(0, 1)
    assert 1.0 > ssim(images, slight) > ssim(images, strong) > 0.0


def test_shape_mismatch_is_an_error(images):
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(images, images[:, :, :16])


def test_style_retained_is_pooled_over_the_photos(images):
    photos = images * 0.5
    teacher = photos + 0.2  # the teacher's change: 0.2 on every value
    assert style_retained(teacher, teacher, photos) == 1.0
    assert style_retained(photos, teacher, photos) == 0.0
    assert style_retained(photos + 0.1, teacher, photos) == pytest.approx(1 - 0.1 ** 2 / 0.2 ** 2)
    assert style_retained(photos - 0.2, teacher, photos) == pytest.approx(-3.0)  # further away than the photo
    # Pooled, not a mean of per-photo ratios: photo 0 changed 3x as much as photo 1 weighs 9x as much.
    teacher = torch.cat([photos[:1] + 0.3, photos[1:2] + 0.1])
    half_of_first = torch.cat([photos[:1] + 0.15, photos[1:2]])
    assert style_retained(half_of_first, teacher, photos[:2]) == pytest.approx(1 - (0.15 ** 2 + 0.1 ** 2) / 0.1)
    with pytest.raises(ValueError, match="no style to retain"):
        style_retained(photos, photos, photos)
    with pytest.raises(ValueError, match="differ in shape"):
        style_retained(photos, teacher, photos[:2])


# ----------------------------------------------------------------------------------------- loading

def test_load_image_resizes_shorter_side_then_center_crops(tmp_path):
    # 40 x 20 image: red outer quarters, blue middle half. Shorter side 20 -> 16 makes it 32 x 16 and
    # the 16-wide center crop keeps only the blue middle.
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10, 0] = pixels[:, 30:, 0] = 255
    pixels[:, 10:30, 2] = 255
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png", 16)
    assert image.shape == (3, 16, 16)
    assert image[2, :, 2:-2].min() > 0.95 and image[0, :, 2:-2].max() < 0.05


def test_load_image_folder_is_sorted_and_batched(tmp_path):
    for name, value in [("b.png", 200), ("a.jpg", 0)]:
        Image.fromarray(np.full((24, 24, 3), value, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    batch = load_image_folder(tmp_path, 8)
    assert batch.shape == (2, 3, 8, 8)
    assert batch[0].max() < 0.05 and batch[1].mean() == pytest.approx(200 / 255, abs=0.01)


# ------------------------------------------------------------------------------------------ LPIPS

@pytest.fixture(scope="module")
def lpips_metric():
    return LPIPSMetric.with_random_trunk(seed=0)


def test_lpips_identity_symmetry_and_positivity(lpips_metric, images):
    other = images.flip(0)
    assert torch.allclose(lpips_metric(images, images), torch.zeros(4), atol=1e-7)
    forward, backward = lpips_metric(images, other), lpips_metric(other, images)
    assert forward.shape == (4,)
    assert torch.allclose(forward, backward)
    assert (forward > 0).all()


def test_lpips_batch_equals_one_by_one(lpips_metric, images):
    other = images.roll(1, dims=-1)
    one_by_one = torch.cat([lpips_metric(a[None], b[None]) for a, b in zip(images, other)])
    assert torch.allclose(lpips_metric(images, other), one_by_one, atol=1e-6)


def test_lpips_feeds_the_package_minus_one_to_one(lpips_metric, images):
    other = images.flip(0)
    direct = lpips_metric._model(images * 2 - 1, other * 2 - 1).flatten()
    assert torch.allclose(lpips_metric(images, other), direct)


def test_lpips_linear_heads_come_from_the_wheel(lpips_metric):
    wheel_file = Path(inspect.getfile(lpips.LPIPS)).parent / "weights" / "v0.1" / "alex.pth"
    heads = torch.load(wheel_file, map_location="cpu", weights_only=True)
    assert torch.equal(lpips_metric._model.lin0.model[-1].weight, heads["lin0.model.1.weight"])
    assert torch.equal(lpips_metric._model.lin4.model[-1].weight, heads["lin4.model.1.weight"])


def test_lpips_loads_torchvision_alexnet_file_into_the_trunk(tmp_path, monkeypatch):
    """A file shaped like torchvision's AlexNet checkpoint ends up layer by layer in lpips's slices."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    reference = torchvision.models.alexnet().state_dict()
    weights_path("alexnet").parent.mkdir(parents=True)
    torch.save(reference, weights_path("alexnet"))

    metric = LPIPSMetric("alex")
    trunk = metric._model.net
    loaded = dict(trunk.named_parameters())
    assert len(loaded) == 10  # 5 convs x (weight, bias)
    assert torch.equal(loaded["slice1.0.weight"], reference["features.0.weight"])
    assert torch.equal(loaded["slice5.10.bias"], reference["features.10.bias"])
    assert metric.trunk == "imagenet"


# -------------------------------------------------------------------------------------------- FID

def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    s1, s2 = rng.uniform(0.1, 2, size=5), rng.uniform(0.1, 2, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_symmetric_reference_on_samples():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 0.5
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # The textbook formula, with a general matrix square root (what pytorch-fid computes).
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_refuses_matrices_that_are_not_covariances():
    mu = np.zeros(3)
    with pytest.raises(ValueError, match="symmetric"):
        frechet_distance(mu, np.triu(np.ones((3, 3))), mu, np.eye(3))
    with pytest.raises(ValueError, match="not covariance"):
        frechet_distance(mu, np.eye(3), mu, -np.eye(3))


def test_fid_of_a_set_with_itself_is_zero_even_when_singular():
    features = np.random.default_rng(2).normal(size=(10, 64))  # 10 samples, 64 dims: rank-deficient
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(features[:1], features)


@pytest.fixture(scope="module")
def fid_metric():
    return FIDMetric.with_random_weights(seed=0)


def test_fid_features_shape_and_batch_independence(fid_metric, images):
    features = fid_metric.features(images[:2])
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    one_by_one = np.concatenate([fid_metric.features(image[None]) for image in images[:2]])
    np.testing.assert_allclose(features, one_by_one, rtol=1e-4, atol=1e-12)


def test_fid_against_folder_compares_with_the_folder_loaded_like_photos(fid_metric, images, tmp_path, monkeypatch):
    # FID itself is tested above; a 2048-d sqrtm costs ~30 s on 2 cores, so only the wiring is checked.
    for i, image in enumerate(images):
        pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    calls = []
    monkeypatch.setattr(fid_metric, "fid", lambda a, b: calls.append((a, b)) or 1.5)
    assert fid_against_folder(fid_metric, images[:2], tmp_path, 32) == 1.5
    [(generated, real)] = calls
    assert torch.equal(generated, images[:2])
    assert torch.equal(real, load_image_folder(tmp_path, 32))
    assert torch.allclose(real, images, atol=1 / 255)


def test_fid_network_matches_pytorch_fid_given_the_same_weight_file(tmp_path, monkeypatch, images):
    """Our download-free construction computes exactly what pytorch_fid's InceptionV3 computes."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(4)
    path = weights_path("fid_inception")
    path.parent.mkdir(parents=True)
    torch.save(_fid_inception_v3().state_dict(), path)
    assert path.name == BACKBONES["fid_inception"].file  # pytorch_fid finds it in the cache: no download

    ours = FIDMetric().features(images[:1])
    with torch.no_grad():
        theirs = InceptionV3([3]).eval()(images[:1])[0].flatten(1).double().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * np.abs(theirs).max())
