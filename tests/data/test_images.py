"""The loader turns every common format into HxWx3 uint8 RGB and refuses bad
input with an ImageLoadError whose message says what is wrong."""

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from gs_core.data.images import ImageLoadError, list_images, load_rgb, to_tensor, to_uint8


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _gradient(width=48, height=32) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[None, :], x[::-1][None, :], 100 * np.ones((height, 1))), -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _assert_rgb(array, shape):
    assert array.dtype == np.uint8
    assert array.shape == shape


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_common_formats_from_a_path(tmp_path, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    _gradient().save(path, fmt)
    array, notices = load_rgb(path)
    _assert_rgb(array, (32, 48, 3))
    assert notices == []


def test_bytes_and_pil_sources_match_the_path_source(tmp_path):
    path = tmp_path / "photo.png"
    _gradient().save(path)
    from_path, _ = load_rgb(path)
    from_bytes, _ = load_rgb(path.read_bytes())
    from_pil, _ = load_rgb(Image.open(path))
    np.testing.assert_array_equal(from_path, from_bytes)
    np.testing.assert_array_equal(from_path, from_pil)


@pytest.mark.parametrize("mode", ["L", "P", "1"])
def test_gray_and_palette_images_become_rgb(mode):
    array, _ = load_rgb(_encode(_gradient().convert(mode), "PNG"))
    _assert_rgb(array, (32, 48, 3))


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (20, 10), (0, 255, 255, 0))  # pure red in CMYK
    array, notices = load_rgb(_encode(cmyk, "JPEG", quality=95))
    _assert_rgb(array, (10, 20, 3))
    assert np.abs(array[5, 10].astype(int) - [255, 0, 0]).max() < 12
    assert any("CMYK" in n for n in notices)


def test_16_bit_png_is_scaled_not_clipped():
    samples = np.array([[0, 257 * 128, 65535, 257 * 64]], dtype=np.uint16)
    array, notices = load_rgb(_encode(Image.fromarray(samples), "PNG"))
    _assert_rgb(array, (1, 4, 3))
    assert array[0, :, 0].tolist() == [0, 128, 255, 64]
    assert (array[..., 0] == array[..., 2]).all()
    assert any("16-bit" in n for n in notices)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparency_is_composited_on_white(mode):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # reddish (dark gray once converted to LA)
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    array, notices = load_rgb(_encode(image, "PNG"))
    _assert_rgb(array, (4, 4, 3))
    assert (array[2:] == 255).all()
    assert (array[:2] < 255).any()
    assert any("white" in n for n in notices)


def test_animated_gif_gives_its_first_frame():
    red, blue = Image.new("RGB", (8, 6), (255, 0, 0)), Image.new("RGB", (8, 6), (0, 0, 255))
    data = _encode(red, "GIF", save_all=True, append_images=[blue], duration=100)
    array, notices = load_rgb(data)
    _assert_rgb(array, (6, 8, 3))
    assert array[3, 4].tolist() == [255, 0, 0]
    assert any("first of 2 frames" in n for n in notices)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _encode(_gradient(48, 32), "JPEG", exif=exif.tobytes())
    array, notices = load_rgb(data)
    _assert_rgb(array, (48, 32, 3))
    assert any("EXIF" in n for n in notices)


def test_downscaling_keeps_aspect_and_reports_it():
    data = _encode(_gradient(400, 200), "JPEG")
    array, notices = load_rgb(data, max_side=100)
    _assert_rgb(array, (50, 100, 3))
    assert "downscaled from 400x200 to 100x50" in notices
    small, notices = load_rgb(data, max_side=1000)
    _assert_rgb(small, (200, 400, 3))
    assert notices == []


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size but carries almost no data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"\0" * 64)  # a few bytes of a never-decoded image
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "empty"),
        (np.random.default_rng(0).bytes(4096), "not an image"),
        (_png_claiming(100_000, 100_000), "too large"),
        (_png_claiming(9000, 9000), "too large"),  # 81 MP: under PIL's own limit, over ours
    ],
    ids=["empty", "random-bytes", "png-bomb", "png-81mp"],
)
def test_bad_bytes_raise_a_readable_error(data, words):
    with pytest.raises(ImageLoadError, match=words):
        load_rgb(data)


def test_truncated_jpeg():
    data = _encode(_gradient(256, 256), "JPEG")
    with pytest.raises(ImageLoadError, match="truncated"):
        load_rgb(data[: len(data) // 2])


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_rgb(tmp_path / "nope.jpg")
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(ImageLoadError, match="empty"):
        load_rgb(empty)


def test_tensor_round_trip():
    rgb = np.asarray(_gradient())
    tensor = to_tensor(rgb)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 32, 48)
    assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    np.testing.assert_array_equal(to_uint8(tensor), rgb)
    np.testing.assert_array_equal(to_uint8(tensor[None]), rgb)
    overshoot = torch.tensor([-0.5, 0.5, 1.5]).view(3, 1, 1)
    assert to_uint8(overshoot)[0, 0].tolist() == [0, 128, 255]


def test_list_images(tmp_path):
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="No images"):
        list_images(tmp_path)
    for name in ["b.PNG", "a.jpg", "c.webp"]:
        (tmp_path / name).touch()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
