"""Build a generator by name, or load a state dict and recognise its architecture from its keys.

An architecture registers itself: its model file decorates its Generator subclass with `register_generator`
(which reads the class's `arch`, `aliases` and `signature_key`), and one import line in `gs_core/models/__init__.py`
runs that file. Nothing else needs to know the list.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from gs_core.models.base import Generator

GENERATORS: dict[str, type[Generator]] = {}
ALIASES: dict[str, str] = {}


class StateDictMismatch(ValueError):
    """A state dict that does not fit the architecture; the message lists what differs."""


def register_generator(cls: type[Generator]) -> type[Generator]:
    """Class decorator: `cls` is built by its `arch` name and its `aliases`, and recognised by its `signature_key`."""
    if not cls.arch or not cls.signature_key:
        raise ValueError(f"{cls.__name__} needs an `arch` name and a `signature_key` (a state-dict key only its "
                         f"files have) to be registered")
    if cls.arch in GENERATORS:
        raise ValueError(f"a generator named {cls.arch!r} is registered already")
    GENERATORS[cls.arch] = cls
    ALIASES.update(dict.fromkeys(cls.aliases, cls.arch))
    return cls


def create_generator(name: str, **kwargs) -> Generator:
    """Generator by registry name (or alias). Arguments left as None keep the architecture's default."""
    key = ALIASES.get(name, name)
    if key not in GENERATORS:
        supported = ", ".join(sorted([*GENERATORS, *ALIASES]))
        raise ValueError(f"unknown generator {name!r}; supported: {supported}")
    return GENERATORS[key](**{k: v for k, v in kwargs.items() if v is not None})


def clean_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop what old PyTorch versions left in affine-free InstanceNorm2d layers of published CycleGAN files.

    Only running stats of norms that have no weight are dropped, so a batch-norm file keeps its statistics.
    """
    out = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf in ("running_mean", "running_var", "num_batches_tracked") and f"{prefix}.weight" not in state:
            continue
        out[key] = value
    return out


def detect_architecture(state: Mapping[str, torch.Tensor]) -> tuple[str, dict]:
    """(registry name, constructor kwargs) for a state dict, from its key names and shapes."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name, cls in GENERATORS.items():
        if cls.signature_key in shapes:
            try:
                return name, cls.from_state_dict_keys(shapes)
            except (KeyError, IndexError) as err:
                raise StateDictMismatch(f"state dict looks like a known generator but lacks key {err}") from None
    sample = ", ".join(list(shapes)[:5])
    known = ", ".join(f"{'/'.join((cls.__name__, *cls.aliases))} ({cls.signature_key}, ...)"
                      for cls in GENERATORS.values())
    raise StateDictMismatch(f"unrecognised state dict (first keys: {sample}); expected the keys of {known}")


def load_state_dict_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Strict load whose error lists missing, unexpected and wrongly shaped keys in plain words."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        def show(items):
            return ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "") or "none"
        raise StateDictMismatch(f"weights do not fit {type(model).__name__}: missing keys: {show(missing)}; "
                                f"unexpected keys: {show(unexpected)}; wrong shapes: {show(wrong)}")
    model.load_state_dict(state, strict=True)


def generator_from_state_dict(state: Mapping[str, torch.Tensor], **overrides) -> Generator:
    """Build the generator a (foreign or our) state dict describes and load it strictly."""
    state = clean_state_dict(state)
    name, kwargs = detect_architecture(state)
    model = create_generator(name, **{**kwargs, **overrides})
    load_state_dict_strict(model, state)
    return model.eval()
