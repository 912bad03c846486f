"""The one way models are saved and loaded.

Our checkpoint is a folder: `weights.safetensors` (tensors only, never pickled) and `card.json` (the model spec
that rebuilds the architecture, plus training config, metrics, per-layer plan). The spec is also stored in the
safetensors metadata so the weights file alone is enough to rebuild the model. Foreign `.pth`/`.pt` files
(official CartoonGAN / CycleGAN weights) load with `torch.load(weights_only=True)` and are recognised by their keys.
"""
from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from gs_core.files import CheckpointError, atomic_path
from gs_core.models import Generator, StateDictMismatch, generator_from_state_dict, load_state_dict_strict

WEIGHTS = "weights.safetensors"
CARD = "card.json"
FORMAT_VERSION = 1

# How a model is described as plain data (its spec) and rebuilt from it. Storage knows generators; what a GS
# student adds to one (gates, quantizers) is the method's business, so gs_core.slim.student registers both
# functions here, and gs_core/__init__.py imports it before any module of the package runs: storage never imports
# the method, and the hooks are always in place.
_spec_hooks: dict[str, Callable] = {}


def register_spec(describe: Callable[[Generator], dict], rebuild: Callable[[dict], Generator]) -> None:
    """Install `describe(model) -> spec` and `rebuild(spec) -> untrained model with the same state-dict keys`."""
    _spec_hooks.update(describe=describe, rebuild=rebuild)


def write_card(folder: Path, card: dict) -> None:
    with atomic_path(Path(folder) / CARD) as tmp:
        Path(tmp).write_text(json.dumps(card, indent=1, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a card")


def save_model(model: Generator, folder: str | Path, card: dict | None = None) -> Path:
    """Save `model` as `folder/weights.safetensors` + `folder/card.json`; returns the folder."""
    folder = Path(folder)
    spec = _spec_hooks["describe"](model)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, tmp, metadata={"gs_spec": json.dumps(spec), "format_version": str(FORMAT_VERSION)})
    write_card(folder, {"format_version": FORMAT_VERSION, **(card or {}), "architecture": spec})
    return folder


def read_card(path: str | Path) -> dict:
    """The card of one of our checkpoints (folder or its weights file)."""
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    card_path = folder / CARD
    if not card_path.is_file():
        raise CheckpointError(f"{folder}: no {CARD} here; is this a GS Studio checkpoint folder?")
    try:
        return json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{card_path}: damaged card ({err})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (damaged or truncated?): {err}") from None


def _read_foreign(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a PyTorch weights file, or it holds objects other than tensors; such "
                              f"files are refused because loading them could run arbitrary code") from None
    except Exception as err:  # torch raises many types for damaged or truncated files
        raise CheckpointError(f"{path}: cannot read as a PyTorch weights file, damaged or truncated? "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_model(path: str | Path) -> tuple[Generator, dict]:
    """(model in eval mode, card) from our folder / safetensors file, or a foreign .pth/.pt state dict."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise CheckpointError(f"{path}: no {WEIGHTS} in this folder")
    if weights.stat().st_size == 0:
        raise CheckpointError(f"{weights}: empty file")
    try:
        if weights.suffix == ".safetensors":
            state, metadata = _read_safetensors(weights)
            card = read_card(weights) if (weights.parent / CARD).is_file() else {}
            spec = card.get("architecture") or json.loads(metadata.get("gs_spec", "null") or "null")
            if spec:
                model = _spec_hooks["rebuild"](spec)
                load_state_dict_strict(model, state)
                return model.eval(), {**card, "architecture": spec}
            model = generator_from_state_dict(state)
        else:
            model = generator_from_state_dict(_read_foreign(weights))
    except (StateDictMismatch, ValueError, KeyError, TypeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{weights}: {err}") from None
    return model, {"name": weights.stem, "source": str(weights), "architecture": _spec_hooks["describe"](model)}
