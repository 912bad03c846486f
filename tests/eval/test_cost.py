"""Parameter, MAC, size and latency accounting."""
import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from gs_core.eval.cost import compression, count_macs, count_params, measure_latency, median_ms, size_bits
from gs_core.models import create_generator

LAYOUTS = Path(__file__).resolve().parents[1] / "official_layouts"


def small_generator() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 7, padding=3),                                 # 16x16 out
        nn.InstanceNorm2d(8, affine=True), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),                      # 8x8 out
        nn.Conv2d(16, 16, 3, padding=1, groups=4),                     # 8x8 out, grouped
        nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1),  # 8x8 in -> 16x16 out
        nn.Upsample(scale_factor=1), nn.Conv2d(8, 3, 1), nn.Tanh(),
    )


def test_count_params():
    model = small_generator()
    convs = (3 * 8 * 49 + 8) + (8 * 16 * 9 + 16) + (16 * 4 * 9 + 16) + (16 * 8 * 9 + 8) + (8 * 3 + 3)
    assert count_params(model) == convs + 2 * 8  # + instance norm affine
    model.add_module("tied", model[0])  # a shared module counts once
    assert count_params(model) == convs + 16


def test_count_macs_counts_only_convolutions_transposed_on_input_grid():
    expected = (
        16 * 16 * 49 * 3 * 8        # 7x7 conv at 16x16
        + 8 * 8 * 9 * 8 * 16        # stride-2 conv, output grid 8x8
        + 8 * 8 * 9 * 4 * 16        # grouped: C_in / groups = 4 per output channel
        + 8 * 8 * 9 * 16 * 8        # transposed conv, priced on its 8x8 *input* grid
        + 16 * 16 * 1 * 8 * 3       # 1x1 conv
    )
    model = small_generator().train()
    assert count_macs(model, (16, 16)) == expected
    assert model.training  # mode restored
    assert count_macs(small_generator().to("meta"), (16, 16)) == expected


@pytest.mark.parametrize("arch, layout", [("cartoongan", "cartoongan.json"),
                                          ("resnet_generator", "cyclegan_resnet9_instance.json")])
def test_official_generators_match_official_layout_numbers(arch, layout):
    official = json.loads((LAYOUTS / layout).read_text())
    with torch.device("meta"):  # shapes only: counting needs no real weights or arithmetic
        generator = create_generator(arch)
    assert count_params(generator) == official["params"]
    assert count_macs(generator, (256, 256)) == official["macs_256"]


def test_size_bits_uses_weight_bits_for_conv_weights_only():
    model = small_generator()
    assert size_bits(model) == 32 * count_params(model)
    model[0].weight_bits = 4
    model[5].weight_bits = 8  # the transposed conv
    expected = 32 * count_params(model) - (32 - 4) * model[0].weight.numel() - (32 - 8) * model[5].weight.numel()
    assert size_bits(model) == expected


@pytest.mark.parametrize("bits", [1, 9, 16, 4.0])
def test_size_bits_rejects_invalid_widths(bits):
    model = small_generator()
    model[0].weight_bits = bits
    with pytest.raises(ValueError, match="weight_bits"):
        size_bits(model)


def test_compression():
    assert compression(1000, 250) == 4.0
    with pytest.raises(ValueError):
        compression(1000, 0)


class Sleeper(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_measure_latency_times_every_model_and_restores_state():
    threads = torch.get_num_threads()
    slow, fast = Sleeper(0.01).train(), Sleeper(0.0).eval()
    result = measure_latency({"slow": slow, "fast": fast}, input_size=(8, 8), threads=1, warmup=1, repeats=5)
    assert set(result) == {"slow", "fast"}
    assert 10 <= result["slow"] < 200
    assert 0 <= result["fast"] < result["slow"] / 5
    assert torch.get_num_threads() == threads
    assert slow.training and not fast.training


def test_measure_latency_runs_models_round_robin():
    order = []

    class Recorder(nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, x):
            order.append(self.name)
            return x

    measure_latency({n: Recorder(n) for n in "abc"}, input_size=(4, 4), warmup=0, repeats=3)
    assert order == list("abc" "bca" "cab")


def test_median_ms_rotates_the_first_runner_and_skips_warmup():
    order = []
    timed = median_ms({name: (lambda name=name: order.append(name)) for name in "abc"}, warmup=1, repeats=3)
    assert order == list("abc" "bca" "cab" "abc")
    assert set(timed) == set("abc") and all(ms >= 0 for ms in timed.values())
    with pytest.raises(ValueError):
        median_ms({}, repeats=1)
