"""The embedded teacher's pipeline (quick preset) and the distillation-target cache."""
from __future__ import annotations

import torch

from gs_core.checkpoint import load_model
from gs_core.data.photoset import load_split
from gs_core.data.teacher_cache import distillation_pairs
from gs_core.teacher import preset, train_teacher


def test_quick_teacher_trains_saves_and_reports(tmp_path):
    card = train_teacher(preset("quick"), tmp_path / "teacher", tmp_path / "run", progress=False)
    model, saved = load_model(tmp_path / "teacher")
    metrics = saved["metrics_vs_target"]
    assert metrics["test_photos"] == len(load_split("test"))
    for key in ("teacher_psnr", "identity_psnr", "teacher_ssim", "identity_ssim"):
        assert metrics[key] > 0
    assert saved["params"] == sum(p.numel() for p in model.parameters()) == card["params"]
    assert saved["training"]["steps"] == preset("quick").train.steps
    assert saved["history"][-1]["step"] == preset("quick").train.steps


def test_teacher_outputs_are_cached_and_rebuilt_when_the_teacher_changes(tmp_path, tiny_generator):
    teacher = tiny_generator("cartoongan_skip")
    photos = load_split("val")[:2]
    inputs, outputs = distillation_pairs(teacher, photos, 32, tmp_path)
    assert inputs.shape == (10, 3, 32, 32)  # five fixed crops per photo
    with torch.no_grad():
        assert torch.allclose(teacher(inputs), outputs, atol=1e-6)
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 1
    again = distillation_pairs(teacher, photos, 32, tmp_path)[1]
    assert torch.equal(again, outputs) and len(list(tmp_path.glob("teacher-*"))) == 1
    with torch.no_grad():
        teacher.deconv03_1.bias.add_(0.1)
    changed = distillation_pairs(teacher, photos, 32, tmp_path)[1]
    assert len(list(tmp_path.glob("teacher-*.safetensors"))) == 2
    assert not torch.allclose(changed, outputs)


def test_a_short_run_computes_only_the_teacher_outputs_it_draws(tmp_path, tiny_generator):
    from gs_core.methods import batches_from, drawn_rows

    teacher = tiny_generator("cartoongan_skip")
    photos = load_split("val")[:3]
    full_inputs, full = distillation_pairs(teacher, photos, 32, tmp_path / "full")
    needed = drawn_rows(len(full), batch_size=2, seed=0, steps=3)
    assert 0 < len(needed) < len(full)
    inputs, outputs = distillation_pairs(teacher, photos, 32, tmp_path / "lazy", needed=needed)
    rows = sorted(needed)
    assert torch.equal(inputs, full_inputs)
    # other batch compositions than the full run's: another kernel may sum in another order
    torch.testing.assert_close(outputs[rows], full[rows], rtol=0, atol=1e-6)
    assert outputs[[r for r in range(len(full)) if r not in needed]].isnan().all()  # never silently zero
    batches = batches_from(inputs, outputs, 2, seed=0)
    assert all(torch.isfinite(batches(step)[1]).all() for step in range(3))  # what the run reads is there
    # A later, longer run fills in the rest, in the same cache file.
    torch.testing.assert_close(distillation_pairs(teacher, photos, 32, tmp_path / "lazy")[1], full, rtol=0, atol=1e-6)
    assert len(list((tmp_path / "lazy").glob("teacher-*"))) == 1
