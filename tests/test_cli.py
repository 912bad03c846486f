"""The command line: in-process through `main`, plus one real `python -m gs_core` smoke test."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gs_core.checkpoint import load_model, save_model
from gs_core.cli import main
from gs_core.slim.gates import ChannelGate
from gs_core.slim.student import make_student

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def teacher_ckpt(tiny_generator, tmp_path) -> Path:
    return save_model(tiny_generator("cartoongan"), tmp_path / "teacher", {"method": "teacher", "bits": 32})


@pytest.fixture
def official_pth(tiny_generator, tmp_path) -> Path:
    """A (tiny) CycleGAN file in the layout of the published ones: affine-free instance norms with the running
    stats old PyTorch versions saved."""
    model = tiny_generator("cyclegan_instance")
    state = dict(model.state_dict())
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            state[f"{name}.running_mean"] = torch.zeros(module.num_features)
            state[f"{name}.running_var"] = torch.ones(module.num_features)
            state[f"{name}.num_batches_tracked"] = torch.tensor(0)
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)).save(path)
    return path


def test_info_on_our_checkpoint(teacher_ckpt, capsys):
    assert main(["info", str(teacher_ckpt)]) == 0
    out = capsys.readouterr().out
    assert "cartoongan" in out and "params" in out and "method: \"teacher\"" in out


def test_info_json(teacher_ckpt, capsys, tiny_generator):
    assert main(["info", str(teacher_ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model = tiny_generator("cartoongan")
    assert info["architecture"]["name"] == "cartoongan"
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["size_bits"] == 32 * info["params"]
    assert info["macs_256"] > 0 and info["method"] == "teacher"


def test_info_on_an_official_layout_pth(official_pth, capsys):
    assert main(["info", str(official_pth), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["architecture"]["name"] == "resnet_generator"
    assert info["architecture"]["config"]["norm"] == "instance"
    assert info["name"] == "latest_net_G"


def test_stylize_writes_good_images_and_reports_bad_ones(teacher_ckpt, image, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("not an image")
    out = tmp_path / "styled"
    code = main(["stylize", "--model", str(teacher_ckpt), str(image), str(bad), "--out", str(out)])
    captured = capsys.readouterr()
    assert code != 0
    assert sorted(p.name for p in out.iterdir()) == ["in.png"]
    with Image.open(out / "in.png") as styled:
        assert styled.size == (47, 33) and styled.mode == "RGB"
    assert "bad.txt" in captured.err and "Traceback" not in captured.err
    assert "in.png" in captured.out


def test_stylize_takes_folders_and_overwrites_no_output(teacher_ckpt, image, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("in.jpg", "b.png"):  # in.jpg shares its stem with `image` (in.png)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / name)
    out = tmp_path / "styled"
    assert main(["stylize", "--model", str(teacher_ckpt), str(image), str(folder), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.png", "in-2.png", "in.png"]
    with Image.open(out / "in.png") as first, Image.open(out / "in-2.png") as second:
        assert first.size == (47, 33) and second.size == (24, 20)  # each input kept its own output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["stylize", "--model", str(teacher_ckpt), str(empty), "--out", str(out)]) == 2
    _one_line_error(capsys, "No images in")


def test_stylize_with_an_official_pth(official_pth, image, tmp_path):
    assert main(["stylize", "--model", str(official_pth), str(image), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "in.png").is_file()


def _one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, err


def test_unknown_model_path_is_exit_2_with_one_line(image, tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    assert main(["stylize", "--model", str(missing), str(image), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "no_such_model")
    assert main(["info", str(missing)]) == 2
    _one_line_error(capsys, "no_such_model")


def test_damaged_model_is_exit_2(teacher_ckpt, capsys):
    (teacher_ckpt / "weights.safetensors").write_bytes(b"\x00" * 10)
    assert main(["info", str(teacher_ckpt)]) == 2
    _one_line_error(capsys, "weights.safetensors")


def test_extract(tiny_generator, tmp_path, capsys):
    student = make_student(tiny_generator("cyclegan_batch")).eval()
    with torch.no_grad():
        for gate in (m for m in student.modules() if isinstance(m, ChannelGate)):
            gate.gamma[1::2] = 0
    folder = save_model(student, tmp_path / "student", {"method": "gs"})
    assert main(["extract", str(folder), "--out", str(tmp_path / "slim")]) == 0
    assert "saved" in capsys.readouterr().out
    slim, card = load_model(tmp_path / "slim")
    assert card["method"] == "gs"
    kept = card["plan"]["groups"]
    assert all(k == (t + 1) // 2 for k, t in kept.values())
    assert not any(isinstance(m, ChannelGate) for m in slim.modules())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(slim(x), student(x), rtol=0, atol=1e-5)


def test_extract_of_a_teacher_is_exit_2(teacher_ckpt, tmp_path, capsys):
    assert main(["extract", str(teacher_ckpt), "--out", str(tmp_path / "slim")]) == 2
    _one_line_error(capsys, "no channel gates")


def test_python_m_gs_core_smoke(teacher_ckpt):
    result = subprocess.run([sys.executable, "-m", "gs_core", "info", str(teacher_ckpt), "--json"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["architecture"]["name"] == "cartoongan"


def test_fetch_weights_offline_is_one_line(tmp_path, monkeypatch, capsys):
    from gs_core.eval.backbones import BACKBONES, Backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # A local port where nothing listens: refused at once, as an offline machine refuses, without any network.
    monkeypatch.setitem(BACKBONES, "alexnet", Backbone(BACKBONES["alexnet"].file, "http://127.0.0.1:9/a.pth", "test"))
    assert main(["fetch-weights", "alexnet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Could not download http://127.0.0.1:9/a.pth") and err.count("\n") == 1
