"""Robust image loading and tensor conversion.

Everything that reads an image (the photo set builder, the datasets, the
studio's upload box) goes through :func:`load_rgb`, so that every caller gets
the same answer for awkward files: palette and 16-bit PNGs, CMYK JPEGs,
transparent images, rotated phone photos, animated GIFs. Failures surface as a
single exception type, :class:`ImageLoadError`, whose message can be shown to a
person as is.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse images above this many pixels. 64 MP is larger than any camera
#: photo we expect, yet its RGB decode (~200 MB) still fits comfortably in
#: memory; anything bigger is far more likely a decompression bomb.
MAX_PIXELS = 64_000_000

#: Rec. 601 luma weights: how bright an RGB pixel reads (they sum to 1).
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

#: File extensions :func:`list_images` treats as images (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

# Modes that carry an alpha channel (or palette transparency, handled apart).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# What each EXIF orientation value other than 1 ("as stored") makes us do.
_ORIENTATION_NAMES = {
    2: "mirrored",
    3: "rotated 180 degrees",
    4: "flipped upside down",
    5: "transposed",
    6: "rotated 90 degrees clockwise",
    7: "transversed",
    8: "rotated 90 degrees counter-clockwise",
}
# Single-channel modes whose samples are wider than 8 bits.
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageLoadError(ValueError):
    """An image could not be loaded; the message is meant for a person."""


def load_rgb(source: ImageSource, max_side: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Load ``source`` as an ``HxWx3`` uint8 RGB array.

    ``source`` is a file path, the encoded bytes of a file, or a PIL image.
    When ``max_side`` is given, an image whose longer side exceeds it is
    downscaled (keeping its aspect ratio) with a Lanczos filter.

    Returns the array and a list of human-readable notices describing what
    was done to the image (format conversions, rotation, downscaling).
    Raises :class:`ImageLoadError` for anything that is not a loadable image.
    """
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    notices: list[str] = []
    if isinstance(source, Image.Image):
        _check_pixel_count(source.size)
        image = source
    else:
        image = _open(source)
    try:
        return _decode(image, max_side, notices, owned=image is not source), notices
    finally:
        # Only close what we opened: a PIL image passed in belongs to the caller.
        if image is not source:
            image.close()


def _open(source: ImageSource) -> Image.Image:
    """Open a path or bytes lazily (header only) and vet its size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageLoadError("The image data is empty (0 bytes).")
        stream, label = io.BytesIO(data), "The uploaded data"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"Image file not found: {path}")
        if not path.is_file():
            raise ImageLoadError(f"Not a file: {path}")
        if path.stat().st_size == 0:
            raise ImageLoadError(f"The image file is empty (0 bytes): {path}")
        stream, label = path, f"The file {path.name}"
    else:
        raise TypeError(f"Cannot load an image from a {type(source).__name__}")

    try:
        # PIL warns (and, past twice its limit, raises) on huge declared sizes;
        # treat both as errors so the pixels are never allocated.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageLoadError(
            f"{label} declares an image too large to load safely (a possible "
            f"decompression bomb); the limit is {MAX_PIXELS // 1_000_000} megapixels."
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{label} is not an image in a recognised format.") from None
    except OSError as err:
        raise ImageLoadError(f"{label} could not be read: {err}") from None
    try:
        _check_pixel_count(image.size)
    except ImageLoadError:
        image.close()
        raise
    return image


def _check_pixel_count(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageLoadError(
            f"The image is too large: {width}x{height} pixels "
            f"({width * height / 1e6:.0f} megapixels); the limit is "
            f"{MAX_PIXELS // 1_000_000} megapixels."
        )
    if width < 1 or height < 1:
        raise ImageLoadError(f"The image has no pixels ({width}x{height}).")


def _decode(image: Image.Image, max_side: int | None, notices: list[str], owned: bool) -> np.ndarray:
    """Decode pixels, normalise orientation and colour, then downscale.

    ``owned`` says whether we opened ``image`` ourselves and may therefore
    change its decoding settings.
    """
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.seek(0)
        notices.append(f"used the first of {frames} frames")
    width, height = image.size
    shrink = max_side is not None and max(width, height) > max_side
    if shrink and owned:
        # JPEG can decode directly at 1/2, 1/4 or 1/8 scale; this asks for the
        # smallest such scale that stays at least max_side on both sides, so
        # the Lanczos pass below still has enough resolution to work with.
        image.draft(None, (max_side, max_side))
    orientation = _orientation(image)
    try:
        image.load()
        # exif_transpose decodes the image again if it rotates, so keep it
        # inside the guard too.
        oriented = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(f"The image data is corrupt or truncated ({err}).") from None
    if orientation in _ORIENTATION_NAMES:
        notices.append(f"{_ORIENTATION_NAMES[orientation]} as its EXIF orientation asks")
        if orientation in (5, 6, 7, 8):  # these swap width and height
            width, height = height, width
    rgb = _to_rgb(oriented, notices)

    if shrink:
        scale = max_side / max(rgb.size)
        new_size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        # reducing_gap first box-reduces by an integer factor, then Lanczos
        # resamples: as good as plain Lanczos for these ratios and faster.
        rgb = rgb.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        notices.append(f"downscaled from {width}x{height} to {new_size[0]}x{new_size[1]}")
    return np.asarray(rgb, dtype=np.uint8).copy()


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(0x0112)
    except Exception:  # a malformed EXIF block only means "no orientation"
        return None


def _to_rgb(image: Image.Image, notices: list[str]) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency on white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _WIDE_GRAY_MODES:
        # Scale the full 16-bit range to 8 bits (65535 -> 255). PIL's own
        # convert("L") clips at 255 instead, turning most 16-bit images white.
        wide = np.asarray(image).astype(np.float64)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        notices.append(f"scaled 16-bit {mode} samples to 8 bits")
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if mode == "F":
        # Floating-point TIFFs: assume PIL's usual 0..255 sample range.
        gray = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8)
        notices.append("converted 32-bit float samples to 8 bits")
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if (mode == "P" and "transparency" in image.info) or mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notices.append("composited transparent areas on white")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "CMYK":
        notices.append("converted from CMYK to RGB")
    try:
        return image.convert("RGB")
    except ValueError as err:
        raise ImageLoadError(f"Unsupported colour mode {mode!r}: {err}") from None


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """``HxWx3`` uint8 RGB array -> float32 tensor ``(3, H, W)`` in [0, 1]."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    # astype copies, so the tensor never aliases (possibly read-only) input.
    planar = rgb.transpose(2, 0, 1).astype(np.float32, order="C")
    return torch.from_numpy(planar).div_(255.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """Float tensor ``(3, H, W)`` or ``(1, 3, H, W)`` in [0, 1] -> ``HxWx3`` uint8.

    Values outside [0, 1] (generators overshoot) are clamped, then rounded.
    """
    if tensor.ndim == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(tensor.shape)}")
    scaled = tensor.detach().to("cpu", torch.float32).clamp(0.0, 1.0).mul(255.0).round()
    return scaled.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside ``folder``, sorted by name.

    Raises FileNotFoundError when the folder does not exist and ValueError
    when it holds no file with one of :data:`IMAGE_EXTENSIONS`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder not found: {folder}")
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not images:
        raise ValueError(
            f"No images in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})."
        )
    return images
