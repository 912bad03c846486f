"""The scripted API, through gradio_client against the running app: /stylize and /compare."""
from __future__ import annotations

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def _pixels(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_stylize_returns_an_image_of_the_photo_size(client, photo_path):
    out = _pixels(client.predict(handle_file(str(photo_path)), "gs-s0.5-b8", api_name="/stylize"))
    with Image.open(photo_path) as photo:
        assert out.shape == (photo.height, photo.width, 3)
    assert out.std() > 0  # a picture, not a blank


def test_different_students_give_different_images(client, photo_path):
    a = _pixels(client.predict(handle_file(str(photo_path)), "gs-s0.25-b32", api_name="/stylize"))
    b = _pixels(client.predict(handle_file(str(photo_path)), "gs-s0.5-b8", api_name="/stylize"))
    assert np.abs(a.astype(int) - b).mean() > 1


def test_compare_snaps_sparsity_to_the_nearest_level(client, photo_path):
    teacher, student, card = client.predict(handle_file(str(photo_path)), 0.3, "8", api_name="/compare")
    assert "gs-s0.25-b8" in card
    assert "PSNR vs teacher, this photo" in card
    assert _pixels(teacher).shape == _pixels(student).shape
    *_, mixed_card = client.predict(handle_file(str(photo_path)), 1.0, "mixed", api_name="/compare")
    assert "gs-s0.5-bmixed" in mixed_card


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "bomb"])
def test_bad_upload_gives_a_message_and_the_server_keeps_serving(client, photo_path, tmp_path, kind):
    bad = tmp_path / f"{kind}.png"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("not a picture")
    elif kind == "truncated":
        bad.write_bytes(photo_path.read_bytes()[:2000])
    else:  # 100 megapixels declared in a few kilobytes
        Image.new("1", (10_000, 10_000)).save(bad)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(bad)), "teacher", api_name="/stylize")
    message = str(caught.value).lower()
    assert "traceback" not in message
    assert any(word in message for word in ("empty", "not an image", "corrupt", "truncated", "too large"))
    assert client.predict(handle_file(str(photo_path)), "teacher", api_name="/stylize")


def test_bad_arguments_are_explained(client, photo_path):
    with pytest.raises(AppError, match="Unknown student id"):
        client.predict(handle_file(str(photo_path)), "no-such-model", api_name="/stylize")
    with pytest.raises(AppError, match="bits must be one of"):
        client.predict(handle_file(str(photo_path)), 0.5, "3", api_name="/compare")
