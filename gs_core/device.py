"""Where models run: the one place a `--device` string becomes a torch.device.

The CLI and the app resolve the user's choice once and pass the device down; library functions take it as an
argument (default CPU) and never pick one themselves.
"""
from __future__ import annotations

import re

import torch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' (the first GPU when CUDA is present, else the CPU), 'cpu', 'cuda' or 'cuda:N'.

    A device this machine does not have is a ValueError that says what it does have.
    """
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ValueError(f"unknown device {name!r}; choose {DEVICE_CHOICES}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(match.group(1) or 0)
    if index >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device (use --device cpu or auto)"
        raise ValueError(f"device {name!r} is not available: this machine has {have}")
    return torch.device("cuda", index)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock reading covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
