"""A user's compression job at the size users run: a full-width CartoonGAN file, from submit to a stylized photo.

The published CartoonGAN layout (tests/official_layouts/cartoongan.json) with PyTorch's default initialisation
(seed 0), saved as a plain .pth state dict as the published files are. Then, through gs_core.jobs only: the
upload check (inspect_teacher), the measured estimate, submit, a worker process (ensure_worker) killed with SIGKILL
once the job has checkpointed halfway, a second worker that resumes it to the end (trained, measured, in its
teacher's grid), one photo stylized by the new student, and the same job run again uninterrupted in a workspace of
its own, whose student must have the same weights (the tolerance of the resume tests). Writes
benchmarks/results/jobs_fullwidth.json.

    python benchmarks/jobs_fullwidth.py [--steps 20] [--size 64] [--workspace /tmp/jobs_fullwidth]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import time
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from gs_core import jobs
from gs_core.checkpoint import load_model
from gs_core.data.images import load_rgb, to_tensor, to_uint8
from gs_core.data.photoset import load_split
from gs_core.models import create_generator, detect_architecture

REPO = Path(__file__).resolve().parent.parent
LAYOUT = REPO / "tests" / "official_layouts" / "cartoongan.json"
RESULTS = REPO / "benchmarks" / "results" / "jobs_fullwidth.json"
ATOL = 1e-6  # tests/slim/test_train.py's resume tolerance


def full_width_file(path: Path) -> Path:
    """The published layout's keys and shapes, default-initialised weights (seed 0), as a .pth state dict."""
    shapes = {key: tuple(shape) for key, shape in json.loads(LAYOUT.read_text())["state_dict"]}
    name, config = detect_architecture({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    torch.manual_seed(0)
    state = create_generator(name, **config).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == shapes, "the model does not match the layout"
    torch.save(state, path)
    return path


def watch(queue: jobs.JobQueue, job_id: str, until, seen: dict, start: float, poll_s: float = 0.2) -> dict:
    """Poll the job until `until(job)`; note when each phase was first seen, and the ETA shown at each new step."""
    while True:
        job = queue.status(job_id)
        seen.setdefault(f"{job['state']}:{job['phase']}", time.perf_counter() - start)
        etas = seen.setdefault("etas", [])
        if job["eta_s"] is not None and (not etas or etas[-1][1] != job["step"]):
            etas.append((round(time.perf_counter() - start, 1), job["step"], round(job["eta_s"], 1)))
        if until(job):
            return job
        time.sleep(poll_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workspace", default="/tmp/jobs_fullwidth")
    args = parser.parse_args()
    workspace = Path(args.workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    out = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
           "load_average_at_start": os.getloadavg()}
    teacher = full_width_file(workspace.parent / "cartoongan_fullwidth.pth")

    start = time.perf_counter()
    out["inspect"] = jobs.inspect_teacher(teacher)
    out["inspect_s"] = time.perf_counter() - start
    spec = jobs.JobSpec(teacher=str(teacher), sparsity=0.85, bits="8", steps=args.steps, size=args.size)
    start = time.perf_counter()
    out["estimate"] = jobs.estimate(spec, workspace)
    out["estimate_took_s"] = time.perf_counter() - start
    print(json.dumps(out, indent=1), flush=True)

    queue = jobs.JobQueue(workspace)
    start = time.perf_counter()
    job_id = queue.submit(spec)
    out["submit_s"] = time.perf_counter() - start
    seen: dict = {}
    start = time.perf_counter()
    worker = jobs.ensure_worker(workspace, device="cpu", threads=args.threads)
    run = workspace / "jobs" / job_id / "run"
    half = args.steps // 2

    def checkpointed_half(job):
        try:
            return torch.load(run / "state.pt", map_location="cpu", weights_only=True)["step"] >= half
        except (FileNotFoundError, RuntimeError, EOFError):
            return job["state"] in jobs.FINISHED

    watch(queue, job_id, checkpointed_half, seen, start)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    out["killed_at_s"] = time.perf_counter() - start
    out["checkpoint_step_at_kill"] = torch.load(run / "state.pt", map_location="cpu", weights_only=True)["step"]
    out["job_step_at_kill"] = queue.status(job_id)["step"]
    resumed = jobs.ensure_worker(workspace, device="cpu", threads=args.threads)
    job = watch(queue, job_id, lambda j: j["state"] in jobs.FINISHED, seen, start)
    out["done_at_s"] = time.perf_counter() - start
    resumed.kill()  # it would wait for more jobs while this process lives
    resumed.wait()
    out["job"] = job
    out["phases_seen_at_s"] = seen
    history = queue.live(job_id)["history"]
    out["training_seconds_logged"] = history[-1]["seconds"]
    if job["state"] != "done":
        raise SystemExit(f"job {job['state']}: {job['error']}")

    key, point = job["model"].split("/")
    folder = jobs.teacher_grids(workspace)[key] / "grid" / point
    card = json.loads((folder / "card.json").read_text())
    out["metrics"] = {k: card["metrics"].get(k) for k in ("macs", "size_bits", "latency_ms", "psnr", "ssim",
                                                         "style_retained", "compression_size", "compression_macs")}
    start = time.perf_counter()
    student = load_model(folder)[0]
    photo = load_split("test")[0]
    rgb, _ = load_rgb(photo, max_side=512)
    with torch.inference_mode():
        styled = student.stylize(to_tensor(rgb)[None])[0]
    Image.fromarray(to_uint8(styled)).save(workspace / "stylized.png")
    out["stylize_s"] = time.perf_counter() - start
    out["stylized"] = {"photo": photo.name, "size": list(rgb.shape[:2]), "png": str(workspace / "stylized.png")}

    start = time.perf_counter()
    straight = workspace / "straight"
    shutil.rmtree(straight, ignore_errors=True)
    reference_id = jobs.JobQueue(straight).submit(spec)
    jobs.work(straight, once=True)  # in this process, never interrupted
    reference = jobs.JobQueue(straight).status(reference_id)
    out["straight_job_s"] = time.perf_counter() - start
    if reference["state"] != "done":
        raise SystemExit(f"uninterrupted job {reference['state']}: {reference['error']}")
    key, point = reference["model"].split("/")
    want = load_file(jobs.teacher_grids(straight)[key] / "grid" / point / "weights.safetensors")
    got = load_file(folder / "weights.safetensors")
    same_keys = got.keys() == want.keys()  # masks are bool tensors: compare every tensor as float64
    worst = max((got[k].double() - want[k].double()).abs().max().item() for k in want) if same_keys else math.inf
    out["same_weights_as_uninterrupted"] = {"tensors": len(want), "max_abs_diff": worst, "atol": ATOL,
                                            "within": worst <= ATOL}
    out["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(json.dumps(out, indent=1, default=str))
    if not out["same_weights_as_uninterrupted"]["within"]:
        raise SystemExit(f"the resumed job's weights differ from an uninterrupted run's by {worst:g}")


if __name__ == "__main__":
    main()
