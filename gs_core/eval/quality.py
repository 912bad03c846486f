"""Image quality metrics: PSNR, SSIM, LPIPS, FID and style retained on RGB images in [0, 1].

PSNR and SSIM delegate to scikit-image; LPIPS uses the `lpips` package and FID pytorch_fid's
InceptionV3, both with their ImageNet trunks read from the torch cache (see backbones.py) instead of
being downloaded on first use. When a trunk is missing the metric raises MissingWeightsError: no
other network is ever substituted under these names.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from gs_core.data.images import list_images, load_rgb, to_tensor
from gs_core.eval.backbones import load_weights

# ----------------------------------------------------------------------------------------- loading

def load_image(path: str | Path, size: int) -> torch.Tensor:
    """One image as RGB [0,1] 3 x size x size: shorter side resized to `size` (bicubic), then center crop.

    Cropping rather than squashing keeps the aspect ratio, so generators see undistorted content.
    Decoding (EXIF rotation, alpha, odd modes) is gs_core.data.images.load_rgb's.
    """
    rgb, _notices = load_rgb(path)
    img = TF.resize(Image.fromarray(rgb), size, interpolation=TF.InterpolationMode.BICUBIC)
    return to_tensor(np.asarray(TF.center_crop(img, size)))


def load_image_folder(folder: str | Path, size: int) -> torch.Tensor:
    """All images of `folder` (sorted by name) as an N x 3 x size x size batch (see load_image)."""
    return torch.stack([load_image(p, size) for p in list_images(folder)])


# ------------------------------------------------------------------------------------ PSNR / SSIM

def _as_hwc_batch(x) -> np.ndarray:
    """N x H x W x 3 float64 array from an NCHW/CHW tensor or an HxWx3 / NxHxWx3 array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double()
        x = x.unsqueeze(0) if x.dim() == 3 else x
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an N x 3 x H x W tensor, got shape {tuple(x.shape)}")
        return x.permute(0, 2, 3, 1).numpy()
    x = np.asarray(x, dtype=np.float64)
    x = x[None] if x.ndim == 3 else x
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected an H x W x 3 array, got shape {x.shape}")
    return x


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_hwc_batch(a), _as_hwc_batch(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def psnr(a, b) -> float:
    """Mean over the batch of per-image PSNR in dB (data range 1); inf when every pair is identical."""
    a, b = _paired(a, b)
    with np.errstate(divide="ignore"):  # identical images: log10(1/0) is the documented inf
        return float(np.mean([peak_signal_noise_ratio(x, y, data_range=1.0) for x, y in zip(a, b)]))


def ssim(a, b) -> float:
    """Mean over the batch of per-image SSIM (data range 1, colour channels averaged).

    Uses the settings of Wang et al. 2004 (11x11 Gaussian window, sigma 1.5, population statistics),
    which is what most published SSIM numbers use, rather than scikit-image's 7x7 uniform default.
    Images must be at least 11 pixels on each side.
    """
    a, b = _paired(a, b)
    scores = [
        structural_similarity(x, y, data_range=1.0, channel_axis=-1,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for x, y in zip(a, b)
    ]
    return float(np.mean(scores))


def style_retained(outputs, reference, photos) -> float:
    """The fraction of the reference's change to the photos that `outputs` reproduce:

        1 - sum (outputs - reference)^2 / sum (photos - reference)^2

    both sums pooled over every pixel, channel and photo of the batch (RGB in [0, 1]), so a photo the reference
    barely changes weighs little. 1 for the reference itself, 0 for "output = the photo"; below 0 for outputs
    further from the reference than the photos are.
    """
    outputs, reference, photos = _as_hwc_batch(outputs), _as_hwc_batch(reference), _as_hwc_batch(photos)
    if not outputs.shape == reference.shape == photos.shape:
        raise ValueError(f"images differ in shape: {outputs.shape}, {reference.shape}, {photos.shape}")
    change = np.sum((photos - reference) ** 2)
    if change == 0:
        raise ValueError("the reference returns these photos unchanged: there is no style to retain")
    return float(1 - np.sum((outputs - reference) ** 2) / change)


# ------------------------------------------------------------------------------------------ LPIPS

LPIPS_TRUNKS = {"alex": "alexnet", "vgg": "vgg16"}  # lpips net name -> backbone in backbones.BACKBONES


def _build_lpips(net: str) -> nn.Module:
    """The lpips package's model with its calibrated linear heads and a randomly initialised trunk.

    pretrained=True loads the linear heads from the lpips wheel itself (weights/v0.1/<net>.pth, no
    download); pnet_rand=True stops it from asking torchvision to download the trunk.
    """
    import lpips  # deferred: importing it pulls in all of torchvision.models

    with warnings.catch_warnings():
        # lpips still calls torchvision's pre-0.13 `pretrained=False` API; the warning is not ours to fix.
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        return lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False).eval()


def _check_lpips_net(net: str) -> None:
    if net not in LPIPS_TRUNKS:
        raise ValueError(f"LPIPS net must be one of {sorted(LPIPS_TRUNKS)}, got {net!r}")


def _load_lpips_trunk(trunk: nn.Module, torchvision_state: dict[str, torch.Tensor]) -> None:
    """Copy a torchvision AlexNet/VGG16 state dict into lpips's sliced trunk.

    lpips splits torchvision's `features` Sequential into slices (slice1, slice2, ...) and re-adds each
    layer under its original index, so `features.<i>.<param>` becomes `slice<k>.<i>.<param>`.
    """
    mapped = {}
    for slice_name, slice_module in trunk.named_children():
        for index, layer in slice_module.named_children():
            for param_name, _ in layer.named_parameters():
                mapped[f"{slice_name}.{index}.{param_name}"] = torchvision_state[f"features.{index}.{param_name}"]
    trunk.load_state_dict(mapped, strict=True)


class LPIPSMetric:
    """LPIPS distance (v0.1, linear heads calibrated on human judgements) between RGB [0,1] batches."""

    def __init__(self, net: str = "alex"):
        """Raises MissingWeightsError, without touching the network, when the ImageNet trunk is absent."""
        _check_lpips_net(net)
        trunk_state = load_weights(LPIPS_TRUNKS[net])  # first, so a missing file fails before any work
        self.net = net
        self.trunk = "imagenet"
        self._model = _build_lpips(net)
        _load_lpips_trunk(self._model.net, trunk_state)

    @classmethod
    def with_random_trunk(cls, net: str = "alex", seed: int = 0) -> "LPIPSMetric":
        """TEST ONLY: same wiring with a seeded random trunk, for tests on machines without the weights.

        Its scores are not LPIPS and must never be reported as such.
        """
        _check_lpips_net(net)
        metric = cls.__new__(cls)
        metric.net = net
        metric.trunk = "random (test only)"
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            metric._model = _build_lpips(net)
        return metric

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-image distances, shape [N], for two N x 3 x H x W batches in [0, 1]; differentiable (a loss)."""
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
        return self._model(a, b, normalize=True).flatten()  # normalize=True maps [0,1] -> [-1,1]

    @torch.inference_mode()
    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(a, b)


# -------------------------------------------------------------------------------------------- FID

def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):

        ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    Tr (sigma1 sigma2)^(1/2) equals Tr (sigma1^(1/2) sigma2 sigma1^(1/2))^(1/2), whose matrix is symmetric
    positive semi-definite: two symmetric eigendecompositions give it, real by construction and exact for the
    singular covariances of fewer samples than dimensions. At 2048 dimensions that takes seconds, where a general
    matrix square root (scipy.linalg.sqrtm) takes most of a minute on 2 cores.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two Gaussians have different dimensions")
    for sigma in (sigma1, sigma2):
        if not np.allclose(sigma, sigma.T, rtol=1e-6, atol=1e-9):
            raise ValueError("a covariance matrix must be symmetric; these inputs are not covariances")
    values, vectors = np.linalg.eigh(sigma1)
    root1 = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    for spectrum in (values, middle):  # rounding leaves tiny negative eigenvalues; large ones are an error
        if spectrum.min() < -1e-6 * max(np.abs(spectrum).max(), 1e-12):
            raise ValueError(f"eigenvalue {spectrum.min():.3g} < 0: the inputs are not covariance matrices")
    trace_covmean = np.sqrt(np.clip(middle, 0, None)).sum()

    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_covmean)


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two sets of feature vectors (rows), each needing at least 2 rows for a covariance."""
    for feats in (features_a, features_b):
        if len(feats) < 2:
            raise ValueError(f"FID needs at least 2 images per set, got {len(feats)}")
    return frechet_distance(features_a.mean(0), np.cov(features_a, rowvar=False),
                            features_b.mean(0), np.cov(features_b, rowvar=False))


def _fid_inception_v3() -> nn.Module:
    """The TensorFlow-FID InceptionV3 architecture exactly as pytorch_fid builds it, random weights.

    pytorch_fid's own constructor always fetches its weights with load_state_dict_from_url, so the
    architecture is assembled here from its patched blocks: torchvision's InceptionV3 with 1008
    classes and the Mixed_5b..7c blocks swapped for pytorch_fid's FIDInception* variants. Its
    state_dict keys are those of the FID weight file.
    """
    from pytorch_fid import inception as pf  # deferred: only FID needs it

    net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def _pool3_features(net: nn.Module) -> nn.Module:
    """Input -> 2048-d final average pool of `net`: the block sequence pytorch_fid uses (output block 3)."""
    return nn.Sequential(
        net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
        net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2),
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a,
        net.Mixed_6b, net.Mixed_6c, net.Mixed_6d, net.Mixed_6e,
        net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1)),
    ).eval()


class FIDMetric:
    """Frechet Inception Distance with the standard (TensorFlow-ported) InceptionV3 pool3 features.

    FID estimates a 2048 x 2048 covariance from the images given: with a few dozen images it is
    strongly biased upwards and noisy, so it is only comparable between runs using the same images
    and the same N, and N should be reported next to it.
    """

    def __init__(self, batch_size: int = 16):
        """Raises MissingWeightsError, without touching the network, when the Inception weights are absent."""
        state = load_weights("fid_inception")  # first, so a missing file fails before any work
        self.batch_size = batch_size
        self.weights = "fid_inception"
        net = _fid_inception_v3()
        net.load_state_dict(state, strict=True)
        self._net = _pool3_features(net)

    @classmethod
    def with_random_weights(cls, seed: int = 0, batch_size: int = 16) -> "FIDMetric":
        """TEST ONLY: same pipeline with seeded random Inception weights; its scores are not FID."""
        metric = cls.__new__(cls)
        metric.batch_size = batch_size
        metric.weights = "random (test only)"
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            metric._net = _pool3_features(_fid_inception_v3())
        return metric

    @torch.inference_mode()
    def features(self, images01: torch.Tensor) -> np.ndarray:
        """N x 2048 pool3 features of an N x 3 x H x W batch in [0, 1] (resized to 299 like pytorch_fid)."""
        chunks = []
        for batch in images01.split(self.batch_size):
            x = F.interpolate(batch.float(), size=(299, 299), mode="bilinear", align_corners=False)
            chunks.append(self._net(2 * x - 1).flatten(1).double().numpy())
        return np.concatenate(chunks)

    def fid(self, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
        return fid_from_features(self.features(images_a), self.features(images_b))


def fid_against_folder(metric: FIDMetric, images01: torch.Tensor, folder: str | Path, size: int) -> float:
    """FID between generated images and the real images of `folder` (e.g. target-domain art).

    The folder's images are loaded like the photos (load_image: shorter side `size`, center crop).
    """
    return metric.fid(images01, load_image_folder(folder, size))
