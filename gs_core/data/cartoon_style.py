"""The deterministic cartoon style that the generators learn to reproduce.

The target has to be learnable by a small convolutional generator (a few
hundred thousand parameters, a receptive field of a few dozen pixels,
instance norms) in under an hour of CPU training. Earlier probes showed what
breaks that:

* per-image decisions (k-means palettes, histogram operations) cannot be
  inferred from a local patch, so the network learns colour casts instead;
* hard quantisation steps are discontinuous, and L1 regression smears them.

So every step below is a fixed, local and smooth rule:

1. edge-preserving smoothing: a few small bilateral filter passes flatten
   texture while keeping edges (spatial radius 3 px per pass);
2. soft colour flattening: luminance is pulled towards evenly spaced levels
   by a smooth monotone staircase (never a hard rounding), and chroma gets a
   mild boost, both pointwise functions in Lab;
3. a colour grade: one fixed pointwise curve for every image (lifted
   blacks, a gentle contrast S-curve, warm highlights and cool shadows), the
   same for every photo, so it is a function of the pixel alone;
4. ink outlines: a difference of Gaussians on the smoothed luminance marks
   the dark side of every edge; the response is mapped through a smoothstep
   into a 2-3 px darkening.

The total spatial reach is about twenty pixels, well inside the receptive
field of the target networks (CartoonGAN's encoder alone sees about 40).
"""

from __future__ import annotations

import cv2
import numpy as np

from gs_core.data.images import LUMA

# 1. Edge-preserving smoothing.
BILATERAL_PASSES = 5
BILATERAL_DIAMETER = 7  # pixels; 3 px radius per pass
BILATERAL_SIGMA_COLOR = 0.15  # in [0, 1] RGB units: edges above this survive
BILATERAL_SIGMA_SPACE = 3.0

# 2. Soft colour flattening (Lab: L in [0, 100], a/b roughly [-128, 127]).
LUMA_STEP = 22.0  # distance between the luminance levels
LUMA_PULL = 0.95  # < 1 keeps the staircase smooth and strictly increasing
CHROMA_GAIN = 1.6

# 3. The colour grade (RGB in [0, 1]): out = BLACK_LIFT + (1 - BLACK_LIFT) * curve(x), then a tint weighted by
# how bright (HIGHLIGHT_TINT) or dark (SHADOW_TINT) the pixel is.
BLACK_LIFT = 0.09
CONTRAST = 0.45  # strength of the S-curve: 0 is the identity
HIGHLIGHT_TINT = np.array([0.12, 0.04, -0.11], np.float32)  # warm
SHADOW_TINT = np.array([-0.05, 0.02, 0.10], np.float32)  # cool

# 4. Ink outlines.
DOG_SIGMA = 1.4
DOG_RATIO = 1.6
INK_START = 0.6  # DoG response (L units) where ink starts ...
INK_FULL = 3.0  # ... and where it reaches full strength
INK_STRENGTH = 0.85  # fraction of brightness removed under full ink

MIN_SIDE = 16

#: Colourful test photos shown in the figure of docs/teacher-and-photos.md (docs/style_examples.jpg).
EXAMPLE_PHOTOS = ("mate_lady_bird", "opencv_squirrel", "opencv_pub", "opencv_butterfly", "lomiri_dragonfly")


def cartoonize(rgb: np.ndarray) -> np.ndarray:
    """Cartoon version of an ``HxWx3`` uint8 RGB image (same shape and dtype).

    Deterministic: the same input always gives the same output.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.dtype} {rgb.shape}")
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image is {rgb.shape[1]}x{rgb.shape[0]}; both sides must be >= {MIN_SIDE}")

    smooth = _smooth(rgb.astype(np.float32) / 255.0)
    lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2Lab)
    ink = _ink(lab[:, :, 0])
    lab[:, :, 0] = soft_staircase(lab[:, :, 0], LUMA_STEP, LUMA_PULL)
    lab[:, :, 1:] *= CHROMA_GAIN
    flat = colour_grade(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB))
    inked = flat * (1.0 - INK_STRENGTH * ink)[:, :, None]
    return np.clip(np.rint(inked * 255.0), 0, 255).astype(np.uint8)


def _smooth(image: np.ndarray) -> np.ndarray:
    """Repeated small bilateral filters: flat texture, kept edges."""
    for _ in range(BILATERAL_PASSES):
        # Reflect padding (OpenCV's default) keeps borders from darkening.
        image = cv2.bilateralFilter(image, BILATERAL_DIAMETER, BILATERAL_SIGMA_COLOR, BILATERAL_SIGMA_SPACE)
    return image


def colour_grade(rgb: np.ndarray) -> np.ndarray:
    """The fixed pointwise grade of an ``HxWx3`` float RGB image in [0, 1] (same shape, in [0, 1])."""
    x = np.clip(rgb, 0.0, 1.0)
    curved = x + CONTRAST * x * (1.0 - x) * (2.0 * x - 1.0)  # S-curve with fixed ends and middle
    graded = BLACK_LIFT + (1.0 - BLACK_LIFT) * curved
    luma = graded @ LUMA
    highlight = _smoothstep((luma - 0.45) / 0.5)[:, :, None]
    shadow = (1.0 - _smoothstep(luma / 0.55))[:, :, None]
    return np.clip(graded + highlight * HIGHLIGHT_TINT + shadow * SHADOW_TINT, 0.0, 1.0)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def soft_staircase(values: np.ndarray, step: float, pull: float) -> np.ndarray:
    """Pull ``values`` towards multiples of ``step`` without a hard jump.

    ``x - pull * step / (2 pi) * sin(2 pi x / step)`` has slope
    ``1 - pull * cos(2 pi x / step)``: flattest (``1 - pull``) on the levels,
    steepest between them, and positive everywhere while ``pull < 1``, so the
    mapping is a smooth, strictly increasing function a network can fit.
    """
    if not 0.0 <= pull < 1.0:
        raise ValueError(f"pull must be in [0, 1), got {pull}")
    phase = values * (2.0 * np.pi / step)
    return values - pull * step / (2.0 * np.pi) * np.sin(phase)


def _ink(luma: np.ndarray) -> np.ndarray:
    """Ink coverage in [0, 1] along the dark side of luminance edges."""
    narrow = cv2.GaussianBlur(luma, (0, 0), DOG_SIGMA)
    wide = cv2.GaussianBlur(luma, (0, 0), DOG_SIGMA * DOG_RATIO)
    # The narrow blur falls below the wide one just inside dark regions that
    # border brighter ones: that thin band becomes the outline.
    darkness = wide - narrow
    return _smoothstep((darkness - INK_START) / (INK_FULL - INK_START))  # no hard line boundary


def _main() -> None:
    """Report how far the style is from the photos and draw the figure of docs/teacher-and-photos.md.

    ``python -m gs_core.data.cartoon_style [--examples docs/style_examples.jpg]``
    """
    import argparse
    from pathlib import Path

    from PIL import Image

    from gs_core.data.images import load_rgb
    from gs_core.data.photoset import load_split

    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument("--examples", type=Path, help="write a photo | target figure here")
    args = parser.parse_args()

    pairs = {}
    for path in load_split("test"):
        photo, _ = load_rgb(path)
        pairs[path.stem] = (photo, cartoonize(photo))
    # PSNR of "output = input": the score a generator that learnt nothing gets.
    scores = [_psnr(photo, target) for photo, target in pairs.values()]
    print(f"PSNR(photo, target) on the test split: mean {np.mean(scores):.2f} dB "
          f"(min {min(scores):.2f}, max {max(scores):.2f}) over {len(scores)} photos")

    if args.examples:
        chosen = [name for name in EXAMPLE_PHOTOS if name in pairs]
        gap = 6
        rows = [np.concatenate([photo, np.full((photo.shape[0], gap, 3), 255, np.uint8), target], 1)
                for photo, target in (pairs[name] for name in chosen)]
        width = max(row.shape[1] for row in rows)
        figure = np.full((sum(r.shape[0] for r in rows) + gap * (len(rows) - 1), width, 3), 255, np.uint8)
        top = 0
        for row in rows:
            figure[top:top + row.shape[0], :row.shape[1]] = row
            top += row.shape[0] + gap
        args.examples.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(figure).save(args.examples, quality=88)
        print(f"wrote {args.examples} ({', '.join(chosen)})")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0**2 / mse))


if __name__ == "__main__":
    _main()
