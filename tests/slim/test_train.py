"""The GS training loop: proximal L1, budget mode, exact resume after a kill, clean stop on NaN."""
import math
import os
import runpy
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from gs_core.slim.gates import gamma_parameters, gates_of
from gs_core.slim.plan import dense_plan, layer_costs, plan_cost, plan_from_gates
from gs_core.slim.quant import calibrate_activations, conv_layers, layer_bits
from gs_core.slim.student import make_student
from gs_core.slim.train import STATE, TrainConfig, TrainingDiverged, fit

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def make_data(teacher, n=6, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    with torch.no_grad():
        return inputs, teacher.eval()(inputs)


def fixed_batches(inputs, targets, batch_size=2):
    def batches(step):
        i = (step * batch_size) % len(inputs)
        return inputs[i:i + batch_size], targets[i:i + batch_size]
    return batches


def quick_config(**kwargs):
    base = dict(steps=8, lr=1e-3, gan_weight=0.0, ndf=4, d_layers=1, checkpoint_every=4, log_every=2)
    return TrainConfig(**{**base, **kwargs})


def test_proximal_l1_gives_exact_zeros(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    before = torch.cat([g.detach().clone() for g in gamma_parameters(make_student(teacher))])

    pruned = make_student(teacher)
    history = fit(pruned, fixed_batches(inputs, targets), quick_config(rho=4.0, finetune_fraction=0.25), tmp_path / "l1",
                  progress=False)
    gammas = torch.cat([g.detach() for g in gamma_parameters(pruned)])
    zeros = int((gammas == 0).sum())
    assert 0 < zeros < len(gammas)
    assert history[-1]["alive"] < 1.0 and history[-1]["step"] == 8
    # the frozen plan is held: every group's pruned channels are zero in all of its gates
    plan = plan_from_gates(pruned)
    for group in pruned.channel_groups():
        dead = ~torch.tensor(plan[group.name])
        for name in group.gates:
            assert (pruned.get_submodule(name).gamma.detach()[dead] == 0).all()

    plain = make_student(teacher)
    fit(plain, fixed_batches(inputs, targets), quick_config(rho=0.0, lr_gamma=0.05), tmp_path / "plain",
        progress=False)
    gammas = torch.cat([g.detach() for g in gamma_parameters(plain)])
    assert (gammas != 0).all()
    assert not torch.equal(gammas, before)  # gammas are trained, just not thresholded


@pytest.mark.parametrize("variant", ["cartoongan", "cyclegan_instance", "animeganv2"])
def test_budget_mode_meets_the_budget(variant, tiny_generator, tmp_path):
    teacher = tiny_generator(variant)
    inputs, targets = make_data(teacher)
    student = make_student(teacher, bits=8)
    calibrate_activations(student, inputs)
    costs = layer_costs(teacher, (32, 32))
    reference = plan_cost(teacher, dense_plan(teacher), costs)
    bits = layer_bits(student)
    cfg = quick_config(budget=0.4, steps=8, lr_gamma=0.01)
    history = fit(student, fixed_batches(inputs, targets), cfg, tmp_path, cost_model=(costs, reference, bits),
                  progress=False)
    final = plan_cost(student, plan_from_gates(student), costs, bits)
    assert final.macs <= 0.4 * reference.macs
    assert history[-1]["cost_fraction"] <= 0.4
    assert all(any(mask) for mask in plan_from_gates(student).values())


RESUME_SCRIPT = """
import sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from tiny_models import build_tiny
from gs_core.slim.quant import calibrate_activations
from gs_core.slim.student import make_student
from gs_core.slim.train import TrainConfig, fit

run_dir, delay = sys.argv[1], float(sys.argv[2])
teacher = build_tiny("cartoongan")
g = torch.Generator().manual_seed(1)
inputs = torch.rand(6, 3, 32, 32, generator=g) * 2 - 1
with torch.no_grad():
    targets = teacher(inputs)
student = make_student(teacher, bits=8)
calibrate_activations(student, inputs)

def batches(step):
    time.sleep(delay)
    i = (step * 2) % 6
    return inputs[i:i + 2], targets[i:i + 2]

cfg = TrainConfig(steps=16, lr=1e-3, rho=1.0, lr_gamma=0.05, ndf=4, d_layers=1, checkpoint_every=2,
                  log_every=2, finetune_fraction=0.25, quant_delay=0.5)
fit(student, batches, cfg, run_dir, progress=False)
torch.save(student.state_dict(), run_dir + "/final.pt")
"""


def _saved_step(path: Path) -> int:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


# pruning, still in full precision (quantized from step 8); fine-tuning the narrowed student (frozen at step 12)
@pytest.mark.parametrize("kill_after", [4, 14])
def test_resume_after_kill_matches_uninterrupted_run(kill_after, tmp_path):
    script = tmp_path / "job.py"
    script.write_text(RESUME_SCRIPT.format(tests=str(TESTS)))
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    # 1. start, wait until a checkpoint at step >= kill_after exists, kill -9 mid-run
    job = subprocess.Popen([sys.executable, str(script), str(killed), "0.3"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while _saved_step(killed / STATE) < kill_after:
            assert job.poll() is None, f"training job ended early: {job.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
        os.kill(job.pid, signal.SIGKILL)
    finally:
        job.wait(timeout=30)
    assert job.returncode == -signal.SIGKILL
    step_at_kill = _saved_step(killed / STATE)
    assert kill_after <= step_at_kill < 16 and not (killed / "final.pt").exists()

    # 2. the same command again finishes the run from the checkpoint
    done = subprocess.run([sys.executable, str(script), str(killed), "0"], env=env, capture_output=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]

    # 3. an uninterrupted run (in this process: same code, same single thread)
    argv = sys.argv
    sys.argv = [str(script), str(straight), "0"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv

    resumed = torch.load(killed / "final.pt", weights_only=True)
    reference = torch.load(straight / "final.pt", weights_only=True)
    assert resumed.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(resumed[key], reference[key], rtol=0, atol=1e-6, msg=key)
    assert _saved_step(killed / STATE) == 16
    # the pruning really happened in both (the comparison is not between two untouched copies)
    assert any((v == 0).any() for k, v in reference.items() if k.endswith(".gamma"))


def test_a_quantization_delay_trains_in_full_precision_until_it_ends(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    cfg = quick_config(steps=12, log_every=1, budget=0.5, finetune_fraction=0.5)
    costs = layer_costs(teacher, (32, 32))
    reference = plan_cost(teacher, dense_plan(teacher), costs)
    runs = {}
    for name, bits, delay in (("b32", 32, 0.0), ("b8-delayed", 8, 0.75), ("b8", 8, 0.0)):
        student = make_student(teacher, bits=bits)
        calibrate_activations(student, inputs)
        history = fit(student, fixed_batches(inputs, targets), replace(cfg, quant_delay=delay), tmp_path / name,
                      cost_model=(costs, reference, layer_bits(student)), progress=False)
        runs[name] = student, [r["distill"] for r in history]
    full, delayed, quantized = runs["b32"][1], runs["b8-delayed"][1], runs["b8"][1]
    # steps 1-9 (pruning, the freeze at 6, fine-tuning) are the 32-bit run's; from step 10 the quantizers count
    torch.testing.assert_close(delayed[:9], full[:9], rtol=1e-4, atol=1e-6)
    assert delayed[9:] != full[9:] and quantized[:9] != full[:9]
    # and it comes back quantizing, with clip ranges calibrated at the switch
    student = runs["b8-delayed"][0]
    assert all(m.quantizing for m in student.modules() if hasattr(m, "quantizing"))
    with torch.no_grad():
        assert (student(inputs) - runs["b32"][0](inputs)).abs().max() > 1e-4


def test_the_clip_ranges_start_at_the_configured_quantile_when_the_quantizers_come_on(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    alphas = {}
    for quantile in (0.5, 1.0):  # the switch is the last step: one Adam step moves alpha by about lr at most
        student = make_student(teacher, bits=8)
        calibrate_activations(student, inputs, quantile=0.9)
        cfg = quick_config(steps=4, quant_delay=0.75, calibration_quantile=quantile)
        fit(student, fixed_batches(inputs, targets), cfg, tmp_path / str(quantile), progress=False)
        alphas[quantile] = {name: float(conv.act.alpha.detach()) for name, conv in conv_layers(student).items()
                            if conv.act is not None}
    assert all(alphas[0.5][n] < alphas[1.0][n] - 0.01 for n in alphas[1.0])


def test_nan_targets_stop_training_and_keep_the_last_checkpoint(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    clean = fixed_batches(inputs, targets)

    def batches(step):
        x, y = clean(step)
        return (x, torch.full_like(y, float("nan"))) if step == 5 else (x, y)

    student = make_student(teacher)
    cfg = quick_config(steps=10, gan_weight=1.0, checkpoint_every=2, rho=0.5, lr_gamma=0.01)
    with pytest.raises(TrainingDiverged) as info:
        fit(student, batches, cfg, tmp_path, progress=False)
    message = str(info.value)
    assert "nan" in message and "step 6" in message
    assert str(tmp_path / STATE) in message and "kept" in message

    state = torch.load(tmp_path / STATE, map_location="cpu", weights_only=True)
    assert state["step"] == 4
    assert all(record["step"] <= 4 for record in state["history"])
    fresh = make_student(teacher)
    fresh.load_state_dict(state["model"])
    assert all(torch.isfinite(v).all() for v in fresh.state_dict().values() if v.is_floating_point())

    # with clean data the same command resumes from step 4 and finishes
    history = fit(fresh, clean, cfg, tmp_path, progress=False)
    assert history[-1]["step"] == 10
    assert torch.load(tmp_path / STATE, weights_only=True)["step"] == 10


def test_nan_in_first_steps_says_there_is_no_checkpoint(tiny_generator, tmp_path):
    teacher = tiny_generator("cyclegan_instance")
    inputs, targets = make_data(teacher)
    with pytest.raises(TrainingDiverged, match="no checkpoint yet"):
        fit(make_student(teacher), lambda step: (inputs[:2], targets[:2] * float("nan")),
            quick_config(gan_weight=0.0), tmp_path, progress=False)


def test_rerun_of_a_finished_run_changes_nothing(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    student = make_student(teacher)
    fit(student, fixed_batches(inputs, targets), quick_config(steps=4), tmp_path, progress=False)
    again = make_student(teacher)
    history = fit(again, fixed_batches(inputs, targets), quick_config(steps=4), tmp_path, progress=False)
    assert history[-1]["step"] == 4
    for key, value in student.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_teacher_training_without_gammas(tiny_generator, tmp_path):
    model = tiny_generator("cyclegan_batch").train()
    assert not gates_of(model)
    inputs, targets = make_data(tiny_generator("cyclegan_batch", seed=3))
    history = fit(model, fixed_batches(inputs, targets), quick_config(steps=6, gan_weight=0.5, log_every=1),
                  tmp_path, progress=False)
    assert [r["step"] for r in history] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    assert (tmp_path / "log.jsonl").read_text().count("\n") == 6


@pytest.mark.parametrize("kwargs, match", [
    (dict(distill="l2"), "distill"), (dict(budget_metric="params"), "budget_metric"),
    (dict(budget=1.5), "budget"), (dict(budget=0.0), "budget"), (dict(steps=0), "steps"),
    (dict(finetune_fraction=1.0), "finetune_fraction"),
])
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_budget_is_met_even_when_the_pruning_phase_rounds_to_zero_steps(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    student = make_student(teacher)
    costs = layer_costs(teacher, (32, 32))
    reference = plan_cost(teacher, dense_plan(teacher), costs)
    fit(student, fixed_batches(inputs, targets), quick_config(budget=0.4, steps=1), tmp_path,
        cost_model=(costs, reference, layer_bits(student)), progress=False)
    assert plan_cost(student, plan_from_gates(student), costs).macs <= 0.4 * reference.macs


@pytest.mark.parametrize("kind", ["lpips", "lpips-vgg"])
def test_perceptual_distillation_fails_fast_without_its_weights(kind, tiny_generator, tmp_path, monkeypatch):
    from gs_core.eval.backbones import MissingWeightsError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    with pytest.raises(MissingWeightsError, match="fetch-weights"):
        fit(make_student(teacher), fixed_batches(inputs, targets), quick_config(distill=kind), tmp_path / "run",
            progress=False)


def test_resuming_with_other_settings_or_another_model_is_refused(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    fit(make_student(teacher), fixed_batches(inputs, targets), quick_config(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match="lr: 0.001 -> 0.0005"):
        fit(make_student(teacher), fixed_batches(inputs, targets), quick_config(steps=2, lr=5e-4), tmp_path,
            progress=False)
    with pytest.raises(ValueError, match="different model"):
        fit(make_student(teacher, bits=8), fixed_batches(inputs, targets), quick_config(steps=2), tmp_path,
            progress=False)


def test_finetune_restart_starts_a_second_cosine_at_the_freeze(tiny_generator, tmp_path):
    teacher = tiny_generator("cartoongan")
    inputs, targets = make_data(teacher)
    student = make_student(teacher)
    cfg = quick_config(steps=10, log_every=1, rho=1.0, finetune_fraction=0.5, finetune_restart=True)
    lr = {r["step"]: r["lr"] for r in fit(student, fixed_batches(inputs, targets), cfg, tmp_path, progress=False)}
    # steps 1-5 prune on one cosine (step s logs the rate it used, that of index s - 1), 6-10 fine-tune on another
    assert lr[1] == pytest.approx(cfg.lr) and lr[6] == pytest.approx(cfg.lr)
    assert lr[5] < 0.2 * cfg.lr and lr[10] < 0.2 * cfg.lr
    plain = {r["step"]: r["lr"] for r in fit(make_student(teacher), fixed_batches(inputs, targets),
                                             quick_config(steps=10, log_every=1, rho=1.0, finetune_fraction=0.5,
                                                          finetune_restart=False),
                                             tmp_path / "plain", progress=False)}
    assert plain[6] == pytest.approx(cfg.lr * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
