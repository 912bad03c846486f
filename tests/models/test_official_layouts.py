"""Official weight files (CartoonGAN, every CycleGAN variant, AnimeGANv2) load strictly; foreign layouts fail
clearly.

The layouts (every key and shape of the published files) come from tests/official_layouts/; the tensors
are random, so nothing is downloaded.
"""
import json
from pathlib import Path

import pytest
import torch

from gs_core.checkpoint import CheckpointError, load_model
from gs_core.eval.cost import count_macs, count_params
from gs_core.models import StateDictMismatch, create_generator, generator_from_state_dict

LAYOUTS = Path(__file__).resolve().parents[1] / "official_layouts"


def _layouts():
    """(id, json file, state-dict entries, params, macs_256) for each official layout and variant."""
    out = []
    for file in ("cartoongan.json", "cyclegan_resnet9_instance.json", "animeganv2.json"):
        path = LAYOUTS / file
        if not path.is_file():
            continue
        spec = json.loads(path.read_text())
        out.append((file.removesuffix(".json"), spec["state_dict"], int(spec["params"]), int(spec["macs_256"])))
        for name, variant in spec.get("variants", {}).items():
            out.append((f"{file.removesuffix('.json')}-{name}", variant["state_dict"], int(variant["params"]),
                        int(spec["macs_256"])))
    return out


LAYOUT_CASES = _layouts()


def random_state(entries, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in entries:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g)
    return state


def test_every_variant_is_covered():
    ids = {case[0] for case in LAYOUT_CASES}
    assert {"cartoongan", "animeganv2"} <= ids
    for variant in ("official_pretrained_file_layout", "use_dropout_true", "norm_batch", "norm_batch_dropout"):
        assert f"cyclegan_resnet9_instance-{variant}" in ids


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_official_layout_loads_strictly_from_pth(case, tmp_path):
    name, entries, params, _ = case
    state = random_state(entries)
    model = generator_from_state_dict(state)
    assert count_params(model) == params
    loaded = model.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    # Only the running stats of affine-free instance norms (which old PyTorch saved and the official loader
    # drops) may be left out; every other key of the file is in the model.
    dropped = set(state) - set(loaded)
    assert all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked") for k in dropped)
    if "norm_batch" in name:
        assert not dropped and model.norm == "batch"
    if "dropout" in name:
        assert model.use_dropout

    path = tmp_path / "net_G.pth"
    torch.save(state, path)
    from_file, card = load_model(path)
    assert card["architecture"]["name"] == model.arch
    assert not from_file.training
    for key, value in from_file.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("arch, file", [("cartoongan", "cartoongan.json"),
                                        ("resnet_generator", "cyclegan_resnet9_instance.json"),
                                        ("animeganv2", "animeganv2.json")])
def test_official_architecture_costs(arch, file):
    spec = json.loads((LAYOUTS / file).read_text())
    with torch.device("meta"):  # shapes only: no arithmetic, so full size at 256x256 is instant
        model = create_generator(arch)
    assert count_params(model) == spec["params"]
    assert count_macs(model, (256, 256)) == spec["macs_256"]


def test_an_unknown_layout_is_a_clear_mismatch(tmp_path):
    state = {"encoder.0.weight": torch.zeros(8, 3, 3, 3), "decoder.0.weight": torch.zeros(3, 8, 3, 3)}
    with pytest.raises(StateDictMismatch, match="unrecognised state dict"):
        generator_from_state_dict(state)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "other.pt" in str(info.value) and "unrecognised" in str(info.value)


def _tiny_cartoongan_state():
    torch.manual_seed(0)
    return create_generator("cartoongan", ngf=4, n_blocks=2).state_dict()


def test_wrong_checkpoint_lists_missing_unexpected_and_misshaped_keys(tmp_path):
    state = dict(_tiny_cartoongan_state())
    del state["in02_1.shift"]
    state["extra_layer.weight"] = torch.zeros(3)
    state["conv02_2.weight"] = torch.zeros(8, 8, 5, 5)
    with pytest.raises(StateDictMismatch) as info:
        generator_from_state_dict(state)
    message = str(info.value)
    assert "missing keys: in02_1.shift" in message
    assert "unexpected keys: extra_layer.weight" in message
    assert "conv02_2.weight: file (8, 8, 5, 5) vs model (8, 8, 3, 3)" in message

    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "broken.pth" in str(info.value) and "in02_1.shift" in str(info.value)


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_each_kind_of_mismatch_alone(damage):
    state = dict(_tiny_cartoongan_state())
    if damage == "missing":
        del state["deconv03_1.bias"]
        expected = "missing keys: deconv03_1.bias"
    elif damage == "unexpected":
        state["conv04_1.running_mean"] = torch.zeros(16)
        expected = "unexpected keys: conv04_1.running_mean"
    else:
        state["deconv03_1.bias"] = torch.zeros(4)
        expected = "deconv03_1.bias: file (4,) vs model (3,)"
    with pytest.raises(StateDictMismatch, match=expected.replace("(", r"\(").replace(")", r"\)")):
        generator_from_state_dict(state)


def test_module_prefix_and_wrapped_state_dict_are_accepted(tmp_path):
    state = _tiny_cartoongan_state()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model, _ = load_model(path)
    assert model.ngf == 4 and model.n_blocks == 2
