"""The ground floor: writing files so that a crash never leaves half of one, fingerprints, and the error for a file
that cannot be used.

Every layer above writes files (caches, checkpoints, ONNX graphs, latency tables), so this module imports nothing
of gs_core: anything may import it without creating a cycle.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A file that cannot be loaded as a model; the message says which file and why."""


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary name beside `path`; rename it to `path` once the block succeeds, delete it otherwise.
    A crash never leaves half a file where a reader (or a resumed run) would find it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def weights_digest(model: torch.nn.Module) -> str:
    """A short fingerprint of the architecture and every weight: equal digests mean the same model. Students
    record their teacher's, so work distilled from an older teacher is recognised as stale."""
    h = hashlib.sha256(getattr(model, "arch", type(model).__name__).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
