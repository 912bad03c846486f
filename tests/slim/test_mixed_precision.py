"""Layer sensitivity, bit allocation for a size budget, and packed storage of sub-8-bit weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gs_core.eval.cost import size_bits
from gs_core.slim.bit_allocation import allocate_bits, layer_sensitivity
from gs_core.slim.packing import _pack_codes, _unpack_codes, load_packed, save_packed
from gs_core.slim.quant import calibrate_activations, conv_layers, quantize_weight
from gs_core.slim.student import make_student


def test_sensitivity_grows_as_bits_shrink(tiny_generator):
    teacher = tiny_generator("cartoongan")
    inputs = torch.rand(2, 3, 32, 32) * 2 - 1
    table = layer_sensitivity(teacher, inputs, candidates=(2, 4, 8))
    assert set(table) == set(conv_layers(teacher))
    for name, by_bits in table.items():
        assert by_bits[2] >= by_bits[8] >= 0, name


def test_allocation_meets_the_budget_and_protects_sensitive_layers():
    sensitivity = {"a": {2: 10.0, 4: 1.0, 8: 0.0}, "b": {2: 0.01, 4: 0.001, 8: 0.0}, "c": {2: 0.5, 4: 0.1, 8: 0.0}}
    weights = {"a": 100, "b": 100, "c": 100}
    bits = allocate_bits(sensitivity, weights, average_bits=4.0)
    assert sum(weights[n] * b for n, b in bits.items()) / 300 <= 4.0
    assert bits["a"] > bits["b"]  # the sensitive layer keeps more bits
    with pytest.raises(ValueError, match="below the smallest"):
        allocate_bits(sensitivity, weights, average_bits=1.0)


@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_bit_packing_round_trips(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, 1001)
    packed = _pack_codes(codes, bits)
    assert packed.nbytes == -(-1001 * bits // 8)
    assert np.array_equal(_unpack_codes(packed, bits, 1001), codes)


def test_packed_file_loads_back_to_the_quantized_weights(tiny_generator, tmp_path):
    teacher = tiny_generator("cyclegan_instance")
    convs = list(conv_layers(teacher))
    student = make_student(teacher, bits={n: [2, 3, 4, 8][i % 4] for i, n in enumerate(convs)}, gated=False).eval()
    calibrate_activations(student, torch.rand(2, 3, 32, 32) * 2 - 1)
    stored_bits = save_packed(student, tmp_path / "packed.safetensors")
    state = load_packed(tmp_path / "packed.safetensors")
    for name, conv in conv_layers(student).items():
        expected = quantize_weight(conv.weight, conv.weight_bits, conv.channel_axis)
        assert torch.allclose(state[f"{name}.weight"], expected, atol=1e-6), name
    # The packed payload is what size_bits estimates, plus one fp32 scale per output channel and the clip ranges.
    assert size_bits(student) <= stored_bits < size_bits(student) * 1.2
