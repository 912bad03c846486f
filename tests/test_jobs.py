"""Users' compression jobs (gs_core.jobs): the queue on disk, the worker, cancel, failures, resume after kill -9.

Tiny teachers, the quick grid preset (32 px crops, 32 px evaluation), one thread.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from gs_core import jobs
from gs_core.checkpoint import save_model
from gs_core.files import CheckpointError
from gs_core.grid import grid_preset
from gs_core.jobs import JobQueue, JobSpec
from gs_core.slim.student import make_student

QUICK = dict(preset="quick")


@pytest.fixture
def teacher_file(tmp_path, tiny_generator):
    """A tiny CartoonGAN saved as a published-layout state dict, under a name with a space and capitals."""
    path = tmp_path / "My Toon.pth"
    torch.save(tiny_generator("cartoongan").state_dict(), path)
    return path


class _Payload:
    """Unpickling this creates `marker`: proof that a pickle payload ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _pickle_bomb(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"conv01_1.weight": _Payload(marker)}))
    return path


def _wait(predicate, what: str, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _saved_step(run: Path) -> int:
    try:
        return torch.load(run / "state.pt", map_location="cpu", weights_only=True)["step"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def test_inspect_teacher_describes_a_generator_or_refuses_it_in_one_line(teacher_file, tmp_path, monkeypatch,
                                                                         tiny_generator):
    line = jobs.inspect_teacher(teacher_file)
    assert line.startswith("cartoongan, ngf 4:") and "M params" in line and "GMACs at 256 px" in line
    assert "\n" not in line
    marker = tmp_path / "payload-ran"
    bomb = _pickle_bomb(tmp_path / "bomb.pth", marker)
    bad_layout = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, bad_layout)
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(teacher_file.read_bytes()[:300])
    wrong_kind = tmp_path / "model.bin"
    wrong_kind.write_bytes(teacher_file.read_bytes())
    student = save_model(make_student(tiny_generator("cartoongan"), bits=8), tmp_path / "student")
    for path, reason in ((bomb, "could run arbitrary code"), (bad_layout, "unrecognised state dict"),
                         (damaged, "damaged or truncated"), (wrong_kind, "not a generator file"),
                         (tmp_path / "missing.pth", "no such file"), (student, "a compressed student")):
        with pytest.raises(CheckpointError, match=reason) as err:
            jobs.inspect_teacher(path)
        assert "\n" not in str(err.value)
    assert not marker.exists()
    monkeypatch.setattr(jobs, "MAX_TEACHER_BYTES", 1000)
    with pytest.raises(CheckpointError, match="limit"):
        jobs.inspect_teacher(teacher_file)


def test_submit_checks_the_spec_and_the_queue_survives_a_new_queue_object(teacher_file, tmp_path):
    workspace = tmp_path / "ws"
    queue = JobQueue(workspace)
    for spec, error in ((JobSpec(sparsity=1.0), "sparsity"), (JobSpec(bits="6"), "bits"),
                        (JobSpec(budget="flops"), "budget"), (JobSpec(steps=-1), "steps"),
                        (JobSpec(channel_multiple="x"), "channel multiple"), (JobSpec(preset="huge"), "preset"),
                        (JobSpec(photos=str(tmp_path / "nowhere")), "photos"),
                        (JobSpec(preview=str(teacher_file)), "cannot|not")):
        with pytest.raises(ValueError, match=error):
            queue.submit(spec)
    with pytest.raises(CheckpointError, match="could run arbitrary code"):
        queue.submit(JobSpec(teacher=str(_pickle_bomb(tmp_path / "bomb.pth", tmp_path / "ran"))))
    assert not list((workspace / "jobs").iterdir())  # refused specs leave nothing behind

    first = queue.submit(JobSpec(teacher=str(teacher_file), steps=7, **QUICK))
    second = queue.submit(JobSpec(**QUICK))  # the embedded teacher
    reopened = JobQueue(workspace)
    assert [j["id"] for j in reopened.jobs()] == [second, first]  # newest first
    job = reopened.status(first)
    assert job["state"] == "queued" and job["step"] == 0 and job["steps"] == 7 and job["spec"]["steps"] == 7
    assert job["teacher"].startswith("my-toon-") and reopened.status(second)["teacher"].startswith("embedded-")
    # the teacher file is the job's own copy: the upload may be gone before the job runs
    teacher_file.unlink()
    assert (workspace / "jobs" / first / "teacher" / "My Toon.pth").is_file()
    for bad_id in ("../../etc", "20991231-000000-abcdef"):
        with pytest.raises(ValueError):
            reopened.status(bad_id)


def test_two_submitters_at_once_are_both_queued(teacher_file, tmp_path):
    queue_a, queue_b = JobQueue(tmp_path / "ws"), JobQueue(tmp_path / "ws")
    start = threading.Barrier(2)

    def submit_many(queue):
        start.wait()
        return [queue.submit(JobSpec(teacher=str(teacher_file), **QUICK)) for _ in range(5)]

    with ThreadPoolExecutor(2) as pool:
        ids = [i for batch in pool.map(submit_many, (queue_a, queue_b)) for i in batch]
    assert len(set(ids)) == 10
    assert sorted(j["id"] for j in JobQueue(tmp_path / "ws").jobs()) == sorted(ids)
    assert all(j["state"] == "queued" for j in queue_a.jobs())


def test_a_cancelled_queued_job_never_starts_and_the_next_one_joins_its_teachers_grid(teacher_file, photo_dir,
                                                                                     tmp_path):
    (photo_dir / "broken.jpg").write_bytes(b"not a jpeg")
    workspace = tmp_path / "ws"
    queue = JobQueue(workspace)
    cancelled = queue.submit(JobSpec(teacher=str(teacher_file), **QUICK))
    done = queue.submit(JobSpec(teacher=str(teacher_file), photos=str(photo_dir), sparsity=0.5, steps=8, **QUICK))
    queue.cancel(cancelled)
    jobs.work(workspace, once=True)

    assert queue.status(cancelled)["state"] == "cancelled" and queue.status(cancelled)["started"] is None
    assert not (workspace / "jobs" / cancelled / "run").exists()
    job = queue.status(done)
    assert job["state"] == "done" and job["error"] is None and job["step"] == job["steps"] == 8
    assert job["notices"] and "broken.jpg" in job["notices"][0]
    key, point = job["model"].split("/")
    assert key == job["teacher"] and point.startswith("gs-s0.5-b8-")
    grid = jobs.teacher_grids(workspace)[key]
    manifest = pd.DataFrame(json.loads((grid / "manifest.json").read_text())).set_index("id")
    assert {"teacher", "identity", point} <= set(manifest.index)
    row = manifest.loc[point]
    assert row["method"] == "gs" and 0 < row["macs_removed"] < 1 and row["psnr"] > 0 and row["latency_ms"] > 0
    card = json.loads((grid / row["path"] / "card.json").read_text())
    assert card["job"]["id"] == done and card["metrics"]["eval_size"] == 32
    assert not (workspace / "jobs" / done / "run" / "state.pt").exists()  # an ended job's resume point is freed

    live = queue.live(done)
    assert [r["step"] for r in live["history"]] == list(range(1, 9)) and "distill" in live["history"][0]
    assert Path(live["preview"]["teacher"]).is_file() and Path(live["preview"]["student"]).is_file()
    assert live["preview"]["step"] == 8
    assert live["alive"] and all(0 < kept <= total for kept, total in live["alive"].values())
    assert any(kept < total for kept, total in live["alive"].values())


def test_a_running_job_cancelled_stops_at_its_next_step(teacher_file, tmp_path):
    workspace = tmp_path / "ws"
    queue = JobQueue(workspace)
    job_id = queue.submit(JobSpec(teacher=str(teacher_file), steps=2000, **QUICK))
    worker = threading.Thread(target=jobs.work, args=(workspace,), kwargs={"once": True})
    worker.start()
    try:
        _wait(lambda: queue.status(job_id)["step"] >= 2, "the job to train")
        queue.cancel(job_id)
    finally:
        worker.join(timeout=120)
    job = queue.status(job_id)
    assert job["state"] == "cancelled" and 2 <= job["step"] < 2000 and job["error"] is None
    assert jobs.teacher_grids(workspace) == {}
    assert not (workspace / "teachers" / job["teacher"] / "grid").exists()


def test_failures_say_why_in_one_line_and_leave_no_grid_folder(teacher_file, tmp_path, monkeypatch):
    workspace = tmp_path / "ws"
    queue = JobQueue(workspace)
    unusable = tmp_path / "unusable"
    unusable.mkdir()
    (unusable / "a.png").write_bytes(b"\x89PNG broken")
    no_photos = queue.submit(JobSpec(teacher=str(teacher_file), photos=str(unusable), **QUICK))
    tampered = queue.submit(JobSpec(teacher=str(teacher_file), **QUICK))
    marker = tmp_path / "payload-ran"
    _pickle_bomb(workspace / "jobs" / tampered / "teacher" / "My Toon.pth", marker)  # the copy changed on disk
    out_of_memory = queue.submit(JobSpec(teacher=str(teacher_file), **QUICK))

    def no_memory(*args, **kwargs):
        raise MemoryError("could not allocate 4 GB")

    monkeypatch.setattr(jobs, "run_method", no_memory)
    jobs.work(workspace, once=True)

    errors = {job_id: queue.status(job_id) for job_id in (no_photos, tampered, out_of_memory)}
    assert all(job["state"] == "failed" and "\n" not in job["error"] for job in errors.values())
    assert "no usable photos in unusable" in errors[no_photos]["error"] and "a.png" in errors[no_photos]["error"]
    assert "could run arbitrary code" in errors[tampered]["error"] and not marker.exists()
    assert errors[out_of_memory]["error"] == "MemoryError: could not allocate 4 GB"
    assert "Traceback" in (workspace / "jobs" / out_of_memory / "error.log").read_text()
    assert jobs.teacher_grids(workspace) == {}
    assert not list((workspace / "teachers").glob("*/grid"))


def test_a_worker_killed_mid_job_resumes_to_the_same_weights_as_an_uninterrupted_run(teacher_file, tmp_path):
    spec = JobSpec(teacher=str(teacher_file), sparsity=0.7, steps=60, **QUICK)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    job_id = JobQueue(killed).submit(spec)
    run = killed / "jobs" / job_id / "run"

    worker = jobs.ensure_worker(killed, device="cpu", threads=1)
    try:
        _wait(lambda: jobs.worker_alive(killed), "the worker to start")
        assert jobs.ensure_worker(killed, device="cpu", threads=1) is None  # one worker per workspace
        _wait(lambda: _saved_step(run) >= 3, "a checkpoint")
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    step_at_kill = _saved_step(run)
    assert 3 <= step_at_kill < 60 and JobQueue(killed).status(job_id)["state"] == "running"
    assert not jobs.worker_alive(killed)

    resumed = jobs.ensure_worker(killed, device="cpu", threads=1)
    try:
        _wait(lambda: JobQueue(killed).status(job_id)["state"] in jobs.FINISHED, "the resumed job", 300)
    finally:
        resumed.kill()  # it would wait for more jobs while its parent (this test) lives
        resumed.wait(timeout=30)
    job = JobQueue(killed).status(job_id)
    assert job["state"] == "done", job["error"]
    assert job["resumes"] == 1
    history = JobQueue(killed).live(job_id)["history"]
    assert [r["step"] for r in history] == list(range(1, 61))  # the steps logged twice are shown once

    reference_id = JobQueue(straight).submit(spec)
    jobs.work(straight, once=True)
    reference = JobQueue(straight).status(reference_id)
    assert reference["state"] == "done" and reference["resumes"] == 0

    def weights(workspace, job):
        key, point = job["model"].split("/")
        return load_file(workspace / "teachers" / key / "grid" / point / "weights.safetensors")

    got, want = weights(killed, job), weights(straight, reference)
    assert got.keys() == want.keys()
    for name in want:  # the tolerance of tests/slim/test_train.py's resume test
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


def test_estimate_times_this_teachers_steps_and_counts_the_disk(teacher_file, tmp_path):
    spec = JobSpec(teacher=str(teacher_file), steps=100, **QUICK)
    start = time.perf_counter()
    guess = jobs.estimate(spec, tmp_path / "ws")
    took = time.perf_counter() - start
    assert guess["step_s"]["pruning"] > 0 and guess["step_s"]["fine_tuning"] > 0
    prune_end = max(1, int(100 * (1 - grid_preset("quick").train.finetune_fraction)))  # as fit counts it
    assert guess["train_s"] == pytest.approx(prune_end * guess["step_s"]["pruning"]
                                             + (100 - prune_end) * guess["step_s"]["fine_tuning"])
    assert guess["seconds"] == pytest.approx(guess["train_s"] + guess["teacher_pass_s"] + guess["measure_s"])
    assert guess["disk"]["training_state"] > 0 and guess["disk"]["student"] > 0
    assert guess["disk"]["teacher_copy"] == teacher_file.stat().st_size  # a new teacher: its grid gets a copy
    assert guess["disk_bytes"] == sum(guess["disk"].values())
    assert f"{jobs.PROBE_STEPS} GS steps" in guess["how"]
    assert took < guess["seconds"]  # a few steps, not the job
    assert not list((tmp_path / "ws" / "scratch").iterdir())


def test_the_app_estimates_in_a_child_process(teacher_file, tmp_path):
    guess = jobs.estimate_apart(JobSpec(teacher=str(teacher_file), steps=100, **QUICK), tmp_path / "ws")
    assert guess["step_s"]["pruning"] > 0 and guess["disk"]["teacher_copy"] == teacher_file.stat().st_size
    with pytest.raises(ValueError, match="missing.pth"):  # the child's one-line error, not its traceback
        jobs.estimate_apart(JobSpec(teacher=str(tmp_path / "missing.pth"), **QUICK), tmp_path / "ws")


def test_with_the_ray_backend_a_job_runs_as_a_ray_task(teacher_file, tmp_path):
    ray = pytest.importorskip("ray")
    workspace = tmp_path / "ws"
    queue = JobQueue(workspace)
    job_id = queue.submit(JobSpec(teacher=str(teacher_file), steps=6, **QUICK))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        jobs.work(workspace, backend="ray", once=True)
    finally:
        ray.shutdown()
    job = queue.status(job_id)
    assert job["state"] == "done", job["error"]
    assert job["pid"] != os.getpid()  # it trained in a Ray worker, not in this process
    key, point = job["model"].split("/")
    assert (jobs.teacher_grids(workspace)[key] / "grid" / point / "weights.safetensors").is_file()


def test_a_job_whose_workers_keep_dying_fails_instead_of_looping(teacher_file, tmp_path):
    queue = JobQueue(tmp_path / "ws")
    doomed = queue.submit(JobSpec(teacher=str(teacher_file), **QUICK))
    following = queue.submit(JobSpec(teacher=str(teacher_file), **QUICK))
    for _ in range(jobs.MAX_RESUMES + 1):  # each claim leaves it "running", as a worker killed by the OOM killer
        assert queue.claim() == doomed
    assert queue.claim() == following  # the next claim gives up on it
    job = queue.status(doomed)
    assert job["state"] == "failed" and "died 4 times" in job["error"] and job["resumes"] == jobs.MAX_RESUMES
