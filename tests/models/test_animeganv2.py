"""AnimeGANv2 at full width (the port's layout, random weights): `info` figures, any input size, RGB [-1, 1]."""
import json
from pathlib import Path

import pytest
import torch

from tiny_models import randomize_norms_
from gs_core.cli import main
from gs_core.models import create_generator

LAYOUT = Path(__file__).resolve().parents[1] / "official_layouts" / "animeganv2.json"


@pytest.fixture(scope="module")
def full_width():
    torch.manual_seed(0)
    return randomize_norms_(create_generator("animeganv2")).eval()


def test_info_detects_a_port_file_and_reports_its_figures(full_width, tmp_path, capsys):
    spec = json.loads(LAYOUT.read_text())
    path = tmp_path / "face_paint_512_v2.pt"
    torch.save(full_width.state_dict(), path)  # a plain state dict, as the port's weight files are
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"]["name"] == "animeganv2" and info["architecture"]["config"]["ngf"] == 32
    assert info["params"] == spec["params"] == 2_143_552
    assert info["macs_256"] == spec["macs_256"]
    assert round(info["macs_256"] / 1e9, 2) == 26.28


@pytest.mark.parametrize("size", [(8, 8), (37, 50), (66, 9)])
def test_output_has_the_input_size(full_width, size):
    # The upsamplings target the sizes saved on the way down; doubling instead would give 36 x 48 for 37 x 50.
    x = torch.rand(1, 3, *size) * 2 - 1
    with torch.no_grad():
        y = full_width(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all() and y.abs().max() <= 1


def test_stylize_is_the_ports_processing_without_padding(full_width):
    # RGB [0, 1] -> x * 2 - 1 -> network -> (y + 1) / 2, clipped; at 37 x 50 nothing is padded or cropped.
    rgb = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        expected = ((full_width(rgb * 2 - 1) + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(full_width.stylize(rgb), expected, rtol=0, atol=0)
        # and the channel order matters (the test would be vacuous otherwise)
        assert (full_width.stylize(rgb.flip(1)).flip(1) - expected).abs().max() > 1e-3


def test_first_inverted_residual_block_never_gets_a_skip():
    # Pruned so that block 1 has as many inputs as outputs: its skip must still be absent, as in the port.
    model = create_generator("animeganv2", ngf=4, widths={"block_c.0.2": 32})
    assert model.widths["block_c.1.layers.3"] == 32
    assert [block.residual for block in model.block_c[1:5]] == [False, True, True, True]
