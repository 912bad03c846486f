"""A new architecture is one decorated Generator subclass: then it is built by name and its files are recognised."""
import pytest
import torch
from torch import nn

from gs_core.models import ChannelGroup, Generator, StateDictMismatch, registry
from gs_core.models.registry import (create_generator, detect_architecture, generator_from_state_dict,
                                     register_generator)


class Toy(Generator):
    arch = "toy"
    aliases = ("toy-alias",)
    signature_key = "toy_in.weight"

    def __init__(self, ngf: int = 4, widths: dict[str, int] | None = None):
        super().__init__()
        self.ngf = ngf
        self.widths = {**self.default_widths(), **(widths or {})}
        self.toy_in = nn.Conv2d(3, self.widths["norm"], 3, padding=1)
        self.norm = nn.InstanceNorm2d(self.widths["norm"], affine=True)
        self.toy_out = nn.Conv2d(self.widths["norm"], 3, 3, padding=1)

    def forward(self, x):
        return torch.tanh(self.toy_out(torch.relu(self.norm(self.toy_in(x)))))

    def config(self) -> dict:
        return {"ngf": self.ngf, "widths": self.widths}

    def default_widths(self) -> dict[str, int]:
        return {"norm": self.ngf}

    def channel_groups(self) -> list[ChannelGroup]:
        return [ChannelGroup("norm", ("norm",), (("toy_in", 0),), (("toy_out", 1),))]

    @classmethod
    def from_state_dict_keys(cls, shapes):
        return {"ngf": shapes["toy_in.weight"][0]}


@pytest.fixture
def fresh_registry(monkeypatch):
    """Register into copies, so the toy never reaches other tests."""
    monkeypatch.setattr(registry, "GENERATORS", dict(registry.GENERATORS))
    monkeypatch.setattr(registry, "ALIASES", dict(registry.ALIASES))


def test_a_registered_architecture_is_built_by_name_and_recognised_by_its_keys(fresh_registry):
    register_generator(Toy)
    model = create_generator("toy-alias", ngf=6)
    assert isinstance(model, Toy) and model.widths == {"norm": 6}
    assert detect_architecture(model.state_dict()) == ("toy", {"ngf": 6})
    loaded = generator_from_state_dict(model.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.stylize(x), model.eval().stylize(x))


def test_registration_refuses_a_taken_name_or_a_missing_signature(fresh_registry):
    register_generator(Toy)
    with pytest.raises(ValueError, match="'toy' is registered already"):
        register_generator(Toy)
    unsigned = type("Unsigned", (Toy,), {"arch": "toy2", "signature_key": ""})
    with pytest.raises(ValueError, match="signature_key"):
        register_generator(unsigned)
    assert "toy2" not in registry.GENERATORS


def test_an_unknown_file_names_every_registered_layout():
    with pytest.raises(StateDictMismatch) as info:
        detect_architecture({"mystery.weight": torch.zeros(1)})
    assert all(cls.signature_key in str(info.value) for cls in registry.GENERATORS.values())
