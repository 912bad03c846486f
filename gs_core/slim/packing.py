"""Packed storage of quantized weights: what "size in bits" counts.

A conv with b < 32 bits is stored as its integer codes (offset to be non-negative) packed b bits at a time into a
uint8 byte stream, plus one fp32 scale per output channel (or per layer); everything else stays fp32.
`unpack_state` gives back exactly the fake-quantized weights the model computes with.
"""
from __future__ import annotations

import json

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gs_core.files import atomic_path
from gs_core.slim.quant import FULL_PRECISION, conv_layers, quantize_weight


def _pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers < 2**bits -> bytes, least significant bit first."""
    bit_planes = ((codes[:, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bit_planes, bitorder="little")


def _unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    bit_planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    return (bit_planes.astype(np.int64) << np.arange(bits)).sum(axis=1)


@torch.no_grad()
def pack_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, layout) with every quantized conv weight packed; other tensors as they are."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    layout = {}
    for name, conv in conv_layers(model).items():
        bits = getattr(conv, "weight_bits", FULL_PRECISION)
        if bits == FULL_PRECISION:
            continue
        weight = quantize_weight(conv.weight, bits, conv.channel_axis)
        qmax = 2 ** (bits - 1) - 1
        axis = conv.channel_axis
        dims = [d for d in range(weight.dim()) if d != axis] if axis is not None else list(range(weight.dim()))
        scale = conv.weight.abs().amax(dim=dims, keepdim=True).clamp(min=1e-12) / qmax
        codes = torch.round(weight / scale).to(torch.int64) + qmax  # 0 .. 2*qmax
        del state[f"{name}.weight"]
        state[f"{name}.weight.packed"] = torch.from_numpy(_pack_codes(codes.flatten().numpy(), bits))
        state[f"{name}.weight.scale"] = scale.float()
        layout[name] = {"bits": bits, "shape": list(weight.shape)}
    return state, layout


def unpack_state(state: dict[str, torch.Tensor], layout: dict) -> dict[str, torch.Tensor]:
    """Inverse of pack_state: the model's state dict with dequantized weights."""
    out = {k: v for k, v in state.items() if not k.endswith((".weight.packed", ".weight.scale"))}
    for name, info in layout.items():
        bits, shape = info["bits"], info["shape"]
        qmax = 2 ** (bits - 1) - 1
        codes = _unpack_codes(state[f"{name}.weight.packed"].numpy(), bits, int(np.prod(shape)))
        values = torch.from_numpy(codes - qmax).float().reshape(shape)
        out[f"{name}.weight"] = values * state[f"{name}.weight.scale"]
    return out


def save_packed(model: torch.nn.Module, path) -> int:
    """Write the packed file; returns the bits of tensor payload stored (what size_bits estimates)."""
    state, layout = pack_state(model)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"layout": json.dumps(layout)})
    return sum(v.numel() * v.element_size() * 8 for v in state.values())


def load_packed(path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        layout = json.loads(f.metadata()["layout"])
    return unpack_state(load_file(str(path)), layout)
