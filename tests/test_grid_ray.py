"""The grid on Ray (`--backend ray`): the local backend's manifest from a local Ray instance, a killed worker's
point retried from its checkpoint, a point that dies for good reported, and Ray imported by nothing else."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gs_core.cli import main
from gs_core.grid import grid_preset, run_grid
from gs_core.teacher import preset, train_teacher

REPO = Path(__file__).resolve().parents[1]
# Timings, and the deployed runtime, which is the fastest exact engine of that run's timing (two engines within
# noise of each other may swap between runs).
TIMINGS = ("latency_ms", "latency_ms_torch", "runtime")


@pytest.fixture(scope="module")
def ray_backend():
    """One local Ray instance (2 CPUs) for the module, which the backend (and `grid --backend ray`) then uses:
    starting Ray costs seconds."""
    ray = pytest.importorskip("ray")
    from gs_core.grid_ray import RayBackend

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield RayBackend
    ray.shutdown()


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory):
    """The quick teacher and its whole quick grid, trained by the local backend."""
    root = tmp_path_factory.mktemp("local")
    train_teacher(preset("quick"), root / "teacher", root / "runs" / "teacher", progress=False)
    run_grid(grid_preset("quick"), root / "teacher", root, root / "runs" / "grid", progress=False)
    return root


def _fresh_root(local_grid: Path, tmp_path: Path) -> Path:
    """A grid folder holding only the quick teacher."""
    shutil.copytree(local_grid / "teacher", tmp_path / "teacher")
    return tmp_path


def _records(root: Path) -> dict[str, dict]:
    """The manifest by id, timings left out (they are never equal twice)."""
    records = json.loads((root / "manifest.json").read_text())
    return {r["id"]: {k: v for k, v in r.items() if k not in TIMINGS} for r in records}


def test_ray_grid_gives_the_local_manifest(ray_backend, local_grid, tmp_path):
    root = _fresh_root(local_grid, tmp_path)
    assert main(["grid", "--backend", "ray", "--preset", "quick", "--teacher", str(root / "teacher"), "--out",
                 str(root), "--run-dir", str(root / "runs" / "grid"), "--threads", "1", "--device", "cpu"]) == 0
    assert json.loads((root / "grid" / "failures.json").read_text()) == {}
    local, on_ray = _records(local_grid), _records(root)
    points = len(grid_preset("quick").points())
    assert len(on_ray) == points + 2 and set(on_ray) == set(local)  # the points, the teacher and the identity
    for point_id, record in local.items():
        assert on_ray[point_id] == pytest.approx(record), point_id


def _kill_when_checkpointed(root: Path, point_id: str) -> list[int]:
    """Start a thread that SIGKILLs the Ray worker training `point_id` once it has written a state.pt (Ray names
    the worker process after the task, `ray::<point id>`); returns the list it appends the killed pid to."""
    killed = []
    title = f"ray::{point_id}".encode()

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if any(root.glob(f"runs/grid/*/*/{point_id}/state.pt")):
                for proc in Path("/proc").glob("[0-9]*"):
                    try:
                        if (proc / "cmdline").read_bytes().startswith(title):
                            os.kill(int(proc.name), signal.SIGKILL)
                            killed.append(int(proc.name))
                    except OSError:  # the process ended while we looked
                        continue
            time.sleep(0.01)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def _longer(cfg):
    """The quick preset with enough steps that a kill lands in the middle of training."""
    return replace(cfg, train=replace(cfg.train, steps=30, checkpoint_every=5, log_every=1))


def test_a_killed_worker_is_retried_and_resumes_its_point(ray_backend, local_grid, tmp_path):
    root = _fresh_root(local_grid, tmp_path)
    # The victim is the reference of the mixed point: with a CPU free, that one must still wait for it.
    only = ["gs-s0.5-bmixed", "gs-s0.5-b8"]
    killed = _kill_when_checkpointed(root, "gs-s0.5-b8")
    manifest = run_grid(_longer(grid_preset("quick")), root / "teacher", root, root / "runs" / "grid", only=only,
                        progress=False, backend=ray_backend(cpus_per_point=1))
    assert len(killed) == 1
    assert json.loads((root / "grid" / "failures.json").read_text()) == {}
    assert set(manifest["id"]) == {"teacher", "identity", *only}
    # Resumed from its checkpoint, not restarted: the first step was logged once, and every step to the last.
    [log] = root.glob("runs/grid/*/*/gs-s0.5-b8/log.jsonl")
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps.count(1) == 1 and sorted(set(steps)) == list(range(1, 31))


def test_a_point_whose_worker_dies_for_good_is_reported_and_the_rest_finish(ray_backend, local_grid, tmp_path):
    root = _fresh_root(local_grid, tmp_path)
    killed = _kill_when_checkpointed(root, "gs-s0.5-b8")
    manifest = run_grid(_longer(grid_preset("quick")), root / "teacher", root, root / "runs" / "grid",
                        only=["gs-s0.5-b8", "gs-s0.5-bmixed", "gs-s0.9-b8"], progress=False,
                        backend=ray_backend(cpus_per_point=1, max_retries=0))
    assert len(killed) == 1
    failures = json.loads((root / "grid" / "failures.json").read_text())
    assert set(failures) == {"gs-s0.5-b8", "gs-s0.5-bmixed"}  # the mixed point needed the dead one
    assert "WorkerCrashedError" in failures["gs-s0.5-b8"]
    assert set(manifest["id"]) == {"teacher", "identity", "gs-s0.9-b8"}


def test_backend_ray_without_ray_is_one_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    monkeypatch.delitem(sys.modules, "gs_core.grid_ray", raising=False)
    assert main(["grid", "--backend", "ray", "--preset", "quick", "--out", str(tmp_path), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --backend ray needs Ray") and err.count("\n") == 1


def test_only_backend_ray_imports_ray(local_grid):
    """The app and the local grid (here: a rerun with nothing left to train) never import Ray."""
    script = ("import sys; from gs_core.cli import main; "
              f"assert main(['grid', '--preset', 'quick', '--teacher', {str(local_grid / 'teacher')!r}, "
              f"'--out', {str(local_grid)!r}, '--run-dir', {str(local_grid / 'runs' / 'grid')!r}, "
              "'--threads', '1']) == 0; import app; assert 'ray' not in sys.modules, 'ray was imported'")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"0 points to train, {len(grid_preset('quick').points())} already done" in result.stdout
