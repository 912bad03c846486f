"""Where the ImageNet backbones behind LPIPS and FID come from, and how to get them.

The metrics packages (`lpips`, `pytorch_fid`) would silently download their trunk weights on first use,
which on a machine without internet either hangs on a socket or fails deep inside torch.hub. Here the
lookup is explicit: every file lives in the standard torch cache, `torch.hub.get_dir()/checkpoints/`
(so TORCH_HOME is honoured and files already fetched by torchvision are reused), `require_weights`
fails at once with instructions when a file is absent, and only `fetch_weights` (the CLI's
`fetch-weights`) ever touches the network, with a socket timeout.
"""
from __future__ import annotations

import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm


@dataclass(frozen=True)
class Backbone:
    file: str
    url: str
    used_by: str


# URLs as published by torchvision (AlexNet_Weights / VGG16_Weights.IMAGENET1K_V1) and pytorch_fid
# (inception.FID_WEIGHTS_URL); tests check they still match those packages.
BACKBONES: dict[str, Backbone] = {
    "alexnet": Backbone(
        file="alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        used_by="LPIPS (net='alex', the default)",
    ),
    "vgg16": Backbone(
        file="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        used_by="LPIPS (net='vgg')",
    ),
    "fid_inception": Backbone(
        file="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
        used_by="FID (InceptionV3 pool3 features)",
    ),
}

FETCH_COMMAND = "python -m gs_core fetch-weights"


class MissingWeightsError(RuntimeError):
    """A backbone's weight file is not in the torch cache; the message says how to get it."""

    def __init__(self, name: str, path: Path):
        backbone = BACKBONES[name]
        self.name = name
        self.path = path
        super().__init__(
            f"{backbone.used_by} needs the weight file {backbone.file}, expected at {path} "
            f"(the torch cache, TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')}). "
            f"Run `{FETCH_COMMAND} {name}` on a machine with internet access, "
            f"or download {backbone.url} elsewhere and copy it to {path}."
        )


def weights_path(name: str) -> Path:
    """Where the torch cache keeps backbone `name` (whether or not the file is there)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[name].file


def require_weights(name: str) -> Path:
    """Path of backbone `name`'s weights; raises MissingWeightsError at once (no network) if absent."""
    path = weights_path(name)
    if not path.is_file():
        raise MissingWeightsError(name, path)
    return path


def load_weights(name: str) -> dict[str, torch.Tensor]:
    """The state dict of backbone `name`, read from the cache on CPU."""
    return torch.load(require_weights(name), map_location="cpu", weights_only=True)


def fetch_weights(names: list[str] | None = None, timeout_s: float = 30) -> list[Path]:
    """Download the named backbones (default: all) into the torch cache; skips files already there.

    Each file is written to a temporary file in the target folder and renamed into place only when
    complete, so an interrupted download never leaves a truncated file that `require_weights` would
    accept. `timeout_s` bounds every socket operation, so a dead network fails instead of hanging.
    """
    paths = []
    for name in names or list(BACKBONES):
        path = weights_path(name)
        if not path.is_file():
            _download(BACKBONES[name].url, path, timeout_s)
        paths.append(path)
    return paths


def _download(url: str, path: Path, timeout_s: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
        if total is not None and tmp.stat().st_size != total:
            raise OSError(f"got {tmp.stat().st_size} of {total} bytes")
        os.replace(tmp, path)
    except OSError as exc:  # URLError and socket timeouts are both OSErrors
        raise RuntimeError(
            f"Could not download {url} to {path}: {exc}. This needs internet access; "
            f"otherwise download the file elsewhere and copy it to {path}."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
