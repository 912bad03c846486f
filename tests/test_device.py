"""--device: resolving the user's choice, clear errors for devices that are not there, and (on a machine with a
GPU) the same GS run, cache and latency on CUDA. The CUDA tests skip on CPU-only machines."""
import contextlib

import pytest
import torch

from gs_core.cli import main
from gs_core.data.photoset import load_split
from gs_core.data.teacher_cache import distillation_pairs
from gs_core.device import resolve_device
from gs_core.eval.cost import measure_latency
from gs_core.methods import SlimConfig, run_method
from gs_core.models import create_generator
from gs_core.slim.train import TrainConfig, has_fast_bf16, resolve_precision


def cuda(test):
    """A test that needs a CUDA GPU: skipped without one, and marked `cuda` (scripts/gpu_check.sh runs these)."""
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))


def test_cpu_and_auto_without_a_gpu(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="not available.*no CUDA device"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu0", ""])
def test_unknown_device_names_are_refused(name):
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device(name)


def test_cli_with_a_missing_gpu_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["slim", "--out", str(tmp_path / "run"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: device 'cuda' is not available") and "\n" not in err


def test_precision_must_be_known():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("bf16_in_hardware", [True, False])
def test_auto_precision_takes_bf16_only_for_wide_models_on_a_cpu_that_computes_it(bf16_in_hardware, monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_in_hardware)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    with torch.device("meta"):
        full_width, narrow = create_generator("cyclegan", n_blocks=9), create_generator("cyclegan", ngf=8, n_blocks=2)
    assert resolve_precision("auto", full_width, cpu) == ("bf16" if bf16_in_hardware else "fp32")
    assert resolve_precision("auto", narrow, cpu) == "fp32"
    assert resolve_precision("bf16", narrow, cpu) == "bf16"  # asked for explicitly: obeyed


def test_a_gpu_that_only_emulates_bf16_does_not_count_as_fast(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    # is_bf16_supported() says True on a pre-Ampere GPU unless emulation is excluded
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert not has_fast_bf16(torch.device("cuda"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gs_in_both_precisions_returns_a_cpu_model_that_follows_the_teacher(precision, tiny_generator, tmp_path):
    teacher = tiny_generator("cyclegan_instance")
    inputs = torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        outputs = teacher(inputs)
    cfg = SlimConfig(bits=8, sparsity=0.3, batch_size=2,
                     train=TrainConfig(steps=4, ndf=4, d_layers=1, log_every=1, precision=precision))
    slim, card = run_method(teacher, inputs, outputs, cfg, tmp_path, progress=False)
    assert all(p.device.type == "cpu" and p.is_contiguous() for p in slim.parameters())
    assert card["training"]["train"]["precision"] == precision
    with torch.no_grad():
        assert torch.isfinite(slim(inputs)).all()


@cuda
def test_gs_run_teacher_cache_and_latency_on_cuda(tiny_generator, tmp_path):
    device = resolve_device("cuda")
    teacher = tiny_generator("cartoongan_skip")
    photos = load_split("val")[:2]
    inputs, outputs = distillation_pairs(teacher, photos, 32, tmp_path / "gpu", device=device)
    _, on_cpu = distillation_pairs(teacher, photos, 32, tmp_path / "cpu")
    assert outputs.device.type == "cpu"
    torch.testing.assert_close(outputs, on_cpu, rtol=0, atol=1e-4)  # GPU kernels round differently
    cfg = SlimConfig(bits=8, sparsity=0.5, batch_size=2, train=TrainConfig(steps=4, ndf=4, d_layers=1))
    slim, card = run_method(teacher, inputs, outputs, cfg, tmp_path / "run", progress=False, device=device)
    assert card["plan"]["channels_kept"] < card["plan"]["channels_total"]
    assert next(slim.parameters()).device.type == "cpu"
    latency = measure_latency({"slim": slim.to(device)}, (64, 64), warmup=1, repeats=3, device=device)
    assert latency["slim"] > 0
