"""save_model / load_model: round trips, and damaged or hostile files give a CheckpointError naming the file."""
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from gs_core.checkpoint import CARD, WEIGHTS, CheckpointError, load_model, read_card, save_model
from gs_core.slim.extract import extract
from gs_core.slim.gates import ChannelGate
from gs_core.slim.quant import calibrate_activations, layer_bits
from gs_core.slim.student import make_student


def _pruned_student(teacher, bits=32):
    student = make_student(teacher, bits=bits).eval()
    with torch.no_grad():
        for gate in (m for m in student.modules() if isinstance(m, ChannelGate)):
            gate.gamma[::3] = 0
    return student


def _models(tiny_generator):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    cartoon, cycle = tiny_generator("cartoongan"), tiny_generator("cyclegan_batch")
    quantized = make_student(tiny_generator("cyclegan_instance"), bits=4)
    calibrate_activations(quantized, x)
    quantized_gated = _pruned_student(cartoon, bits=6)
    calibrate_activations(quantized_gated, x)
    return x, {
        "teacher": cartoon,
        "gated": _pruned_student(cartoon),
        "slim": extract(_pruned_student(cycle)),
        "quantized": quantized.eval(),
        "quantized_slim": extract(quantized_gated),
    }


@pytest.mark.parametrize("kind", ["teacher", "gated", "slim", "quantized", "quantized_slim"])
def test_round_trip_gives_the_same_outputs(kind, tiny_generator, tmp_path):
    x, models = _models(tiny_generator)
    model = models[kind]
    folder = save_model(model, tmp_path / kind, {"method": "test", "metrics": {"psnr": 30.5}})
    assert (folder / WEIGHTS).is_file() and (folder / CARD).is_file()
    loaded, card = load_model(folder)
    assert card["method"] == "test" and card["metrics"] == {"psnr": 30.5}
    assert card["architecture"]["name"] == model.arch
    assert not loaded.training
    assert type(loaded) is type(model)
    assert layer_bits(loaded) == layer_bits(model)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # the weights file alone carries the spec
    (folder / CARD).unlink()
    alone, _ = load_model(folder / WEIGHTS)
    with torch.no_grad():
        torch.testing.assert_close(alone(x), model(x), rtol=0, atol=0)


@pytest.fixture
def saved(tiny_generator, tmp_path) -> Path:
    return save_model(tiny_generator("cartoongan"), tmp_path / "ckpt")


def _expect_error(path: Path, *fragments: str):
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert path.name in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_truncated_weights(saved):
    weights = saved / WEIGHTS
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    _expect_error(saved, WEIGHTS)


def test_random_bytes(saved, tmp_path):
    (saved / WEIGHTS).write_bytes(os.urandom(5000))
    _expect_error(saved, WEIGHTS)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(5000))
    _expect_error(junk)


def test_empty_files(saved, tmp_path):
    (saved / WEIGHTS).write_bytes(b"")
    _expect_error(saved, "empty")
    empty = tmp_path / "empty.pth"
    empty.touch()
    _expect_error(empty, "empty")


def test_damaged_card(saved):
    (saved / CARD).write_text('{"architecture": {"name": "cartoongan", ')
    _expect_error(saved, CARD, "damaged")
    with pytest.raises(CheckpointError, match="damaged card"):
        read_card(saved)


def test_card_with_wrong_architecture(saved):
    card = json.loads((saved / CARD).read_text())
    card["architecture"]["config"]["ngf"] = 8
    (saved / CARD).write_text(json.dumps(card))
    _expect_error(saved, "wrong shapes")


def test_card_naming_an_unknown_architecture(saved):
    card = json.loads((saved / CARD).read_text())
    card["architecture"]["name"] = "nope"
    (saved / CARD).write_text(json.dumps(card))
    _expect_error(saved, "nope")


class Exploit:
    """Unpickling this would create a marker file: load_model must never unpickle arbitrary objects."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_object_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"
    for name, payload in (("evil.pth", Exploit(marker)), ("evil_in_dict.pt", {"conv01_1.weight": Exploit(marker)})):
        path = tmp_path / name
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
        _expect_error(path)
        torch.save(payload, path)  # the zip format too
        _expect_error(path)
    assert not marker.exists()


def test_pth_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    _expect_error(path, "expected a state dict")


def test_missing_paths(tmp_path):
    (tmp_path / "empty_folder").mkdir()
    _expect_error(tmp_path / "empty_folder", WEIGHTS)
    _expect_error(tmp_path / "nothing_here", "no such file")


def test_save_is_atomic_and_overwrites(tiny_generator, tmp_path):
    first = save_model(tiny_generator("cartoongan", seed=1), tmp_path / "m")
    second = save_model(tiny_generator("cartoongan", seed=2), tmp_path / "m")
    assert first == second
    assert sorted(p.name for p in first.iterdir()) == sorted([CARD, WEIGHTS])  # no temporary files left
    loaded, _ = load_model(first)
    expected = tiny_generator("cartoongan", seed=2)
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_card_without_architecture_falls_back_to_the_weights_metadata(saved):
    (saved / CARD).write_text(json.dumps({"method": "teacher"}))
    model, card = load_model(saved)
    assert card["method"] == "teacher"
    assert card["architecture"]["name"] == "cartoongan" and card["architecture"]["config"]["ngf"] == 4
