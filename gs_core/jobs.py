"""Users' compression jobs: "my generator in, a slimmed, measured, deployable student out", outside the web process.

A queue held on disk in a workspace folder, a worker process that trains its jobs one at a time with the grid's
own code (`methods.run_method`, then `grid.save_measured` and `grid.write_manifest`), and the facts the app shows
before and during a job (`inspect_teacher`, `estimate`, `JobQueue.live`). No Gradio here; the CLI uses it too
(`python -m gs_core jobs ...`).

The interface agreed with the app (pages/compress.py), and what changed from the first sketch:
  JobSpec                 as sketched, plus `size` (training crop, 0 = the preset's) and `preset` (the grid preset
                          whose recipe the job follows: "default", or "quick" for tests)
  JobQueue(workspace)     submit(spec) -> id, status(id), jobs(), cancel(id), live(id); status() also carries
                          `phase` (preparing, training, measuring), `notices` (photos skipped, and why), `pid`
                          (the process training it) and `resumes`; `eta_s` is the training left, from this
                          run's measured step times (None before the first step and while measuring)
  inspect_teacher(path), estimate(spec, workspace), ensure_worker(workspace, backend, device, threads),
  teacher_grids(workspace); also usable_photos(folder) (what a job trains on, and the photos it skips),
  worker_alive(workspace), FINISHED (the end states), MAX_TEACHER_BYTES (1 GiB), and work(workspace, ...): the
  worker's loop, what `python -m gs_core jobs worker` runs.

A workspace:
    queue.lock              held (fcntl) while a job.json changes: submit, claim, cancel, progress
    worker.lock             held by the live worker for as long as it lives (a kill -9 releases it); worker.log
    cache/                  teacher outputs on the crops (gs_core.data.teacher_cache)
    jobs/<id>/job.json      spec, state, phase, step, steps, eta_s, error, model, timestamps: written atomically
    jobs/<id>/teacher/      the submitted teacher file, copied at submit (an upload may vanish before the job runs)
    jobs/<id>/cancel        a cancel request, read by the running job at its next step
    jobs/<id>/run/          the training's run folder (state.pt: the resume point; log.jsonl: the loss rows)
    jobs/<id>/live/         live.json (channels alive per group), teacher.png, student-<step>.png
    jobs/<id>/result/       the student while it is saved and measured; renamed into its grid folder when done
    teachers/<key>/         one grid folder per teacher, laid out like checkpoints/: manifest.json, teacher/,
                            grid/<point id>/; pages.store.ModelGrid loads it as it loads the shipped grid

States: queued -> running -> done | failed | cancelled (a queued job may go straight to cancelled). A job found
"running" when a worker starts was left by a worker that died: it is taken first, and resumes from its last
checkpoint (`fit` resumes its run folder; batches are a pure function of the step, so the weights end as those of
an uninterrupted run); one whose workers died MAX_RESUMES times fails. The shipped checkpoints/ folder is never
written: every grid a job writes is in the workspace.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gs_core.checkpoint import WEIGHTS, load_model, save_model
from gs_core.data.images import ImageLoadError, list_images, load_rgb, to_uint8
from gs_core.data.photoset import load_split
from gs_core.data.teacher_cache import CROPS_PER_PHOTO, distillation_pairs
from gs_core.eval.cost import count_macs, count_params
from gs_core.eval.quality import load_image
from gs_core.files import CheckpointError, atomic_path, weights_digest
from gs_core.grid import (PACKED, GridConfig, Point, grid_preset, import_teacher, measure_teacher,
                          mixed_allocation, save_measured, write_manifest)
from gs_core.methods import SlimConfig, drawn_rows, run_method
from gs_core.models import Generator, create_generator
from gs_core.slim.packing import save_packed
from gs_core.slim.gates import gates_of
from gs_core.slim.plan import parse_channel_multiple
from gs_core.slim.quant import FULL_PRECISION, layer_bits
from gs_core.slim.train import STATE

EMBEDDED_TEACHER = Path(__file__).resolve().parent.parent / "checkpoints" / "teacher"
TEACHER_SUFFIXES = (".pth", ".pt", ".safetensors")
MAX_TEACHER_BYTES = 1 << 30  # 1 GiB: the largest published generator here (CartoonGAN) is 45 MB
BITS = ("32", "8", "4", "mixed")
METHOD_OF_BUDGET = {"macs": "gs", "size": "gs-size", "latency": "gs-latency"}
FINISHED = ("done", "failed", "cancelled")  # the states a job ends in (it starts queued, then runs)
JOB_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
PREVIEW_SIZE = 192  # px: the live view's square crop of the preview photo
PREVIEWS_PER_RUN = 25  # at most about this many student previews over a job (every few steps)
PREVIEW_SHARE = 0.1  # and previews take at most this share of the job's time (a full-width one costs a step's third)
MAX_RESUMES = 3  # a job whose worker died this many times fails rather than being resumed again
PROGRESS_EVERY_S = 1.0  # job.json gets the step at most this often (and at the last step)
PROBE_STEPS = 5  # estimate(): steps timed: 2 pruning the full-width student, 3 fine-tuning the narrowed one


class JobCancelled(Exception):
    """Raised inside the training loop (its step hook) when the job's cancel file appears."""


@dataclass(frozen=True)
class JobSpec:
    """One compression job: which teacher, what target, which photos; everything the worker needs."""
    teacher: str = ""  # a teacher file (.pth/.pt/.safetensors, published layout) or Studio folder; "" = embedded
    sparsity: float = 0.85  # fraction of the budget metric to remove
    bits: str = "8"  # "32" | "8" | "4" | "mixed" (4 bits on average, per layer from the teacher's sensitivities)
    steps: int = 0  # 0 = the preset's (the grid's 1,000)
    budget: str = "macs"  # "macs" | "size" | "latency"
    photos: str = ""  # folder of training photos; "" = the embedded training photos
    channel_multiple: str = "auto"  # kernel-friendly widths (methods.SlimConfig.channel_multiple); "1" = off
    preview: str = ""  # the photo the live view stylizes every few steps; "" = the first training photo
    size: int = 0  # training crop size in px; 0 = the preset's (96)
    preset: str = "default"  # the grid preset whose recipe (schedule, learning rate, evaluation) the job follows

    def checked(self) -> JobSpec:
        """This spec, or a ValueError naming the first bad field (paths are checked by `JobQueue.submit`)."""
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity is a fraction to remove, in [0, 1); got {self.sparsity}")
        if self.bits not in BITS:
            raise ValueError(f"bits must be one of {', '.join(BITS)}; got {self.bits!r}")
        if self.budget not in METHOD_OF_BUDGET:
            raise ValueError(f"budget must be one of {', '.join(METHOD_OF_BUDGET)}; got {self.budget!r}")
        if self.steps < 0 or self.size < 0:
            raise ValueError(f"steps and size must be >= 0 (0: the preset's); got {self.steps} and {self.size}")
        parse_channel_multiple(self.channel_multiple)
        grid_preset(self.preset)
        return self

    def grid_config(self) -> GridConfig:
        """The preset's recipe with this job's steps and crop size; loss rows often enough to draw curves, and
        a checkpoint at least every tenth of the job (a short job killed halfway resumes from its middle)."""
        cfg = grid_preset(self.preset)
        steps = self.steps or cfg.train.steps
        return replace(cfg, size=self.size or cfg.size, train=replace(
            cfg.train, steps=steps, log_every=max(1, steps // 200),
            checkpoint_every=min(cfg.train.checkpoint_every, max(1, steps // 10))))

    def slim_config(self, cfg: GridConfig, bits: int | dict | None = None) -> SlimConfig:
        """The GS method that prices `sparsity` in this job's budget metric; `bits` overrides a mixed width."""
        return SlimConfig(method=METHOD_OF_BUDGET[self.budget], sparsity=self.sparsity, batch_size=cfg.batch_size,
                          bits=bits if bits is not None else int(self.bits), train=cfg.train,
                          channel_multiple=self.channel_multiple)

    def point_id(self, job_id: str) -> str:
        """The student's id in its teacher's grid: the grid's name for the point, plus the job's own suffix (two
        jobs with the same target are two students)."""
        return f"{Point(METHOD_OF_BUDGET[self.budget], self.sparsity, self.bits).id}-{job_id.rsplit('-', 1)[1]}"


# ------------------------------------------------------------------------------------------------- teachers
def _teacher_source(teacher: str) -> Path:
    return Path(teacher).expanduser() if teacher else EMBEDDED_TEACHER


def _weights_file(path: Path) -> Path:
    return path / WEIGHTS if path.is_dir() else path


def inspect_teacher(path: str | Path) -> str:
    """One line about a teacher file or folder: architecture, parameters, GMACs at 256 px. A file that cannot be
    one raises CheckpointError with the reason: a pickle payload (refused unread: weights-only loading), an
    unknown layout, a damaged file, one over MAX_TEACHER_BYTES, another kind of file, a student."""
    model = _load_teacher(Path(path))
    with torch.device("meta"):  # MACs from shapes only: no arithmetic, even for a full-width generator
        macs = count_macs(create_generator(model.arch, **model.config()), (256, 256))
    config = model.config()
    width = f", ngf {config['ngf']}" if "ngf" in config else ""
    return f"{model.arch}{width}: {count_params(model) / 1e6:.2f} M params, {macs / 1e9:.2f} GMACs at 256 px"


def _load_teacher(path: Path) -> Generator:
    """The generator in a teacher file or folder, loaded as the CLI loads it (tensors only, never unpickled)."""
    weights = _weights_file(path)
    if not path.is_dir() and path.suffix.lower() not in TEACHER_SUFFIXES:
        raise CheckpointError(f"{path.name}: not a generator file; expected {', '.join(TEACHER_SUFFIXES)} or a "
                              f"Studio checkpoint folder")
    if weights.is_file() and weights.stat().st_size > MAX_TEACHER_BYTES:
        raise CheckpointError(f"{path.name}: {weights.stat().st_size / 1e9:.1f} GB, over the "
                              f"{MAX_TEACHER_BYTES / 2**30:.0f} GiB limit for a teacher file")
    model = load_model(path)[0]
    if gates_of(model) or set(layer_bits(model).values()) != {FULL_PRECISION}:
        raise CheckpointError(f"{path.name}: a compressed student (gated or quantized); a teacher is a full-precision "
                              f"generator")
    return model


def teacher_key(teacher: str) -> str:
    """The teacher's grid folder name: a readable slug of its name and the start of its file's sha256."""
    source = _teacher_source(teacher)
    name = "embedded" if not teacher else (source.name if source.is_dir() else source.stem)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24].strip("-") or "teacher"
    digest = hashlib.sha256(_weights_file(source).read_bytes()).hexdigest()
    return f"{slug}-{digest[:8]}"


def teacher_grids(workspace: str | Path) -> dict[str, Path]:
    """Grid key -> the teacher's grid folder (manifest.json, teacher/, grid/<id>/), for every teacher with at least
    one finished student."""
    root = Path(workspace) / "teachers"
    return {f.name: f for f in sorted(root.glob("*/")) if (f / "manifest.json").is_file()}


# ------------------------------------------------------------------------------------------------- photos
def usable_photos(folder: str) -> tuple[list[Path], list[str]]:
    """(the photos that decode, a message per photo skipped) in `folder`, or the embedded training photos for "".
    None usable is a ValueError that says why."""
    if not folder:
        return load_split("train"), []
    try:
        paths = list_images(folder)
    except (FileNotFoundError, ValueError) as err:
        raise ValueError(f"no usable photos: {err}") from None
    good, skipped = [], []
    for path in paths:
        try:
            load_rgb(path)
            good.append(path)
        except ImageLoadError as err:
            skipped.append(f"skipped {path.name}: {err}")
    if not good:
        raise ValueError(f"no usable photos in {Path(folder).name}: " + "; ".join(skipped))
    return good, skipped


def _write_png(rgb01: torch.Tensor, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(rgb01[0])).save(tmp, format="PNG")


# ------------------------------------------------------------------------------------------------- the queue
class JobQueue:
    """The jobs of one workspace, on disk: any number of JobQueue objects (web requests, the worker, the CLI) may
    use one workspace at once; every change of a job.json happens under the workspace's lock."""

    def __init__(self, workspace: str | Path):
        self.root = Path(workspace).resolve()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self):
        with open(self.root / "queue.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def folder(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        folder = self.root / "jobs" / job_id
        if not (folder / "job.json").is_file():
            raise ValueError(f"no job {job_id} in {self.root}")
        return folder

    def submit(self, spec: JobSpec) -> str:
        """Check the spec (a bad value is a ValueError, a bad teacher file a CheckpointError, each one line), copy
        the teacher file into the job, and queue it; returns its id. The job appears whole or not at all."""
        spec.checked()
        source = _teacher_source(spec.teacher)
        _load_teacher(source)
        if spec.photos and not Path(spec.photos).is_dir():
            raise ValueError(f"photos: {spec.photos} is not a folder")
        if spec.preview:
            load_rgb(spec.preview)  # an ImageLoadError (a ValueError) says why it cannot be the preview
        job_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"
        staging = Path(tempfile.mkdtemp(dir=self.root / "jobs", prefix=f".{job_id}."))
        try:
            if spec.teacher:  # the embedded teacher is part of the checkout: nothing to keep
                copy = staging / "teacher" / source.name
                copy.parent.mkdir()
                (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
            now = time.time()
            _write_json(staging / "job.json", {
                "id": job_id, "state": "queued", "phase": None, "step": 0,
                "steps": spec.grid_config().train.steps, "eta_s": None, "error": None, "model": None,
                "teacher": teacher_key(spec.teacher), "spec": asdict(spec), "notices": [],
                "created": now, "started": None, "finished": None})
            os.rename(staging, self.root / "jobs" / job_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return job_id

    def status(self, job_id: str) -> dict:
        return json.loads((self.folder(job_id) / "job.json").read_text())

    def jobs(self) -> list[dict]:
        """Every job's status, newest first."""
        found = [json.loads(p.read_text()) for p in (self.root / "jobs").glob("[0-9]*/job.json")]
        return sorted(found, key=lambda job: (job["created"], job["id"]), reverse=True)

    def cancel(self, job_id: str) -> None:
        """A queued job is cancelled at once and never starts; a running one stops at its next step. A finished
        job is left as it is."""
        with self._locked():
            job = self.status(job_id)
            if job["state"] == "queued":
                self._write(job, state="cancelled", finished=time.time())
            elif job["state"] == "running":
                (self.folder(job_id) / "cancel").touch()

    def live(self, job_id: str) -> dict:
        """What the live view draws: `history` (one row per logged step: step, losses, alive fraction, seconds),
        `alive` ({channel group: [kept, total]}), `preview` (the PNG paths of the teacher's output and the
        student's latest on the preview photo, and the student's step) and the job's `step`."""
        folder = self.folder(job_id)
        rows = {}
        log = folder / "run" / "log.jsonl"
        if log.is_file():
            for line in log.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line the worker was writing when it died
                    continue
                rows[row["step"]] = row  # a resumed job logs again the steps after its checkpoint: keep the last
        live = _read_json(folder / "live" / "live.json") or {}
        return {"step": self.status(job_id)["step"], "history": [rows[s] for s in sorted(rows)],
                "alive": live.get("alive", {}),
                "preview": {"teacher": live.get("teacher"), "student": live.get("student"),
                            "step": live.get("preview_step")}}

    # -------------------------------------------------------------------------- the worker's side
    def claim(self) -> str | None:
        """The job the worker should run now: one left running by a worker that died (it resumes), else the
        oldest queued one, marked running. A job whose workers died MAX_RESUMES times fails instead: the kernel's
        out-of-memory killer leaves no exception to report. Call only while holding the worker lock."""
        with self._locked():
            waiting = sorted((j for j in self.jobs() if j["state"] in ("queued", "running")),
                             key=lambda job: (job["state"] != "running", job["created"], job["id"]))
            for job in waiting:
                resumes = job.get("resumes", 0) + (job["state"] == "running")
                if resumes > MAX_RESUMES:
                    self._write(job, state="failed", finished=time.time(), eta_s=None,
                                error=f"the worker died {resumes} times running this job (out of memory?); "
                                      f"see worker.log")
                    continue
                self._write(job, state="running", started=job["started"] or time.time(), resumes=resumes)
                return job["id"]
            return None

    def update(self, job_id: str, **changes) -> dict:
        with self._locked():
            return self._write(self.status(job_id), **changes)

    def finish(self, job_id: str, state: str, **changes) -> None:
        self.update(job_id, state=state, finished=time.time(), eta_s=None, **changes)

    def cancel_requested(self, job_id: str) -> bool:
        return (self.root / "jobs" / job_id / "cancel").exists()

    def _write(self, job: dict, **changes) -> dict:
        job = {**job, **changes}
        _write_json(self.root / "jobs" / job["id"] / "job.json", job)
        return job


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, default=str) + "\n")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:400]


# ------------------------------------------------------------------------------------------------- one job
class _StepReporter:
    """fit's step hook for one job: progress and ETA in job.json, the live view's files, and the cancel check."""

    def __init__(self, queue: JobQueue, job_id: str, teacher: Generator, preview: Path, steps: int):
        self.queue, self.job_id, self.steps = queue, job_id, steps
        self.live = queue.root / "jobs" / job_id / "live"
        self.every = max(1, steps // PREVIEWS_PER_RUN)
        self.preprocess, self.postprocess = teacher.preprocess, teacher.postprocess
        self.x = self.preprocess(load_image(preview, PREVIEW_SIZE)[None])  # a square centre crop
        self.first_step, self.start, self.reported = None, time.perf_counter(), 0.0
        self.previewed, self.preview_cost = 0.0, 0.0  # when the last preview ended, and what it took
        self.state = {"teacher": str(self.live / "teacher.png"), "student": None, "preview_step": None, "alive": {}}
        if not (self.live / "teacher.png").is_file():
            with torch.inference_mode():
                _write_png(self.postprocess(teacher(self.x)), self.live / "teacher.png")

    def __call__(self, step: int, net: torch.nn.Module, plan: dict) -> None:
        if self.queue.cancel_requested(self.job_id):
            raise JobCancelled()
        now = time.perf_counter()
        if self.first_step is None:  # step times measured from this process's first step (a resume starts later)
            self.first_step, self.start = step, now
        if step == self.steps or (step % self.every == 0
                                  and now - self.previewed >= self.preview_cost / PREVIEW_SHARE):
            self._preview(step, net, plan)
            self.previewed = time.perf_counter()
            self.preview_cost = self.previewed - now
        if now - self.reported >= PROGRESS_EVERY_S or step == self.steps:
            done = step - self.first_step
            eta = (now - self.start) / done * (self.steps - step) if done else None
            self.queue.update(self.job_id, step=step, eta_s=eta)
            self.reported = now

    def _preview(self, step: int, net: torch.nn.Module, plan: dict) -> None:
        """The student's output on the preview photo, and the channels alive per group, written atomically."""
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                y = net(self.x.to(next(net.parameters()).device)).float().cpu()
        finally:
            net.train(was_training)
        student = self.live / f"student-{step:06d}.png"
        _write_png(self.postprocess(y), student)
        self.state.update(student=str(student), preview_step=step,
                          alive={group: [sum(kept), len(kept)] for group, kept in plan.items()})
        _write_json(self.live / "live.json", self.state)


def run_job(workspace: str | Path, job_id: str, device: torch.device | str = "cpu") -> str:
    """Run one claimed job to its end (resuming it where a dead worker left it) and record how it ended; returns
    the final state. Whatever fails is the job's one-line `error` (the traceback goes to jobs/<id>/error.log), and
    nothing is left in a grid folder: the student reaches it whole, by one rename, or not at all."""
    queue = JobQueue(workspace)
    folder = queue.folder(job_id)
    try:
        model = _train_and_save(queue, job_id, torch.device(device))
    except JobCancelled:
        queue.finish(job_id, "cancelled")
    except Exception as err:  # every failure, out of memory included, is the job's, not the worker's
        (folder / "error.log").write_text(traceback.format_exc())
        queue.finish(job_id, "failed", error=_one_line(err))
    else:
        queue.finish(job_id, "done", model=model, phase=None)
    shutil.rmtree(folder / "result", ignore_errors=True)
    (folder / "run" / STATE).unlink(missing_ok=True)  # the resume point of a job that has ended: 4x its weights
    return queue.status(job_id)["state"]


def _train_and_save(queue: JobQueue, job_id: str, device: torch.device) -> str:
    """Train, save and measure one job's student into its teacher's grid folder; returns "<key>/<point id>"."""
    job = queue.status(job_id)
    spec, folder = JobSpec(**job["spec"]), queue.folder(job_id)
    queue.update(job_id, phase="preparing", pid=os.getpid())  # the process that trains it (a Ray worker's)
    photos, skipped = usable_photos(spec.photos)
    queue.update(job_id, notices=skipped)
    source = next((folder / "teacher").iterdir()) if spec.teacher else EMBEDDED_TEACHER
    grid_root = queue.root / "teachers" / job["teacher"]
    teacher_path = import_teacher(source, grid_root)
    teacher = load_model(teacher_path)[0]
    digest = weights_digest(teacher)
    cfg = spec.grid_config()
    needed = drawn_rows(len(photos) * CROPS_PER_PHOTO, cfg.batch_size, cfg.train.seed, cfg.train.steps)
    inputs, outputs = distillation_pairs(teacher, photos, cfg.size, queue.root / "cache", device=device,
                                         needed=needed)
    allocation = mixed_allocation(teacher, inputs, cfg.mixed_average_bits) if spec.bits == "mixed" else {}
    slim_cfg = spec.slim_config(cfg, allocation.get("bit_allocation"))
    reporter = _StepReporter(queue, job_id, teacher, Path(spec.preview) if spec.preview else photos[0],
                             cfg.train.steps)
    if queue.cancel_requested(job_id):
        raise JobCancelled()
    queue.update(job_id, phase="training")
    slim, card = run_method(teacher, inputs, outputs, slim_cfg, folder / "run", progress=False, device=device,
                            on_step=reporter)
    if queue.cancel_requested(job_id):
        raise JobCancelled()
    queue.update(job_id, phase="measuring", eta_s=None)
    point_id = spec.point_id(job_id)
    target = grid_root / "grid" / point_id
    if not target.is_dir():  # else a worker died after the rename, before the job was marked done
        test_dir = Path(load_split("test")[0]).parent
        measure_teacher(teacher_path, digest, cfg, test_dir, device)
        staging = folder / "result" / point_id
        shutil.rmtree(staging, ignore_errors=True)
        save_measured(slim, staging, {"name": point_id, **card, **allocation, "teacher_digest": digest,
                                      "job": {"id": job_id, "spec": asdict(spec)}},
                      teacher_path, cfg, test_dir, device)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staging, target)
    write_manifest(grid_root, teacher_path, digest)
    return f"{job['teacher']}/{point_id}"


# ------------------------------------------------------------------------------------------------- the worker
def work(workspace: str | Path, backend: str = "local", device: torch.device | str = "cpu",
         parent: int | None = None, poll_s: float = 1.0, once: bool = False) -> None:
    """The worker: run the workspace's jobs one at a time, oldest first, until the queue is empty and `once` is
    set or the `parent` process (the app that started it) has gone. Returns at once if another worker holds the
    workspace. backend "ray": each job runs as one Ray task, as the grid's points do (`grid_ray.RayBackend`)."""
    queue = JobQueue(workspace)
    with open(queue.root / "worker.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        run = _runner(backend, device)
        while True:
            job_id = queue.claim()
            if job_id is None:
                if once or (parent is not None and not _alive(parent)):
                    return
                time.sleep(poll_s)
                continue
            print(f"[jobs] {job_id} started", flush=True)
            try:
                state = run(run_job, queue.root, job_id)
            except Exception as err:  # the backend itself failed (a Ray task whose workers kept dying)
                queue.finish(job_id, "failed", error=_one_line(err))
                state = "failed"
            print(f"[jobs] {job_id} {state}", flush=True)


def _runner(backend: str, device: torch.device | str):
    if backend == "local":
        return lambda fn, *args: fn(*args, device=device)
    if backend == "ray":
        from gs_core.grid_ray import RayBackend

        return RayBackend(cpus_per_point=torch.get_num_threads()).call
    raise ValueError(f"backend must be local or ray; got {backend!r}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_alive(workspace: str | Path) -> bool:
    """Whether a worker holds this workspace (its lock is free once the worker is gone, however it died)."""
    path = Path(workspace) / "worker.lock"
    if not path.is_file():
        return False
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(lock, fcntl.LOCK_UN)
        return False


def ensure_worker(workspace: str | Path, backend: str = "local", device: str = "cpu",
                  threads: int | None = None) -> subprocess.Popen | None:
    """Start a worker for this workspace unless one is alive; the app calls it at start. The worker is a
    separate process (`python -m gs_core jobs worker`), in its own session so that it outlives a killed app and
    finishes the job it holds; it leaves once the queue is empty and this process has gone. Returns the new
    process, or None when one was already running. Two calls at once start two, and the second one leaves at
    once (the worker lock)."""
    if worker_alive(workspace):
        return None
    root = Path(workspace).resolve()
    root.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "gs_core", "jobs", "worker", "--workspace", str(root), "--backend", backend,
               "--device", device, "--parent", str(os.getpid())]
    if threads:
        command += ["--threads", str(threads)]
    with open(root / "worker.log", "a") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=Path(__file__).resolve().parent.parent)


# ------------------------------------------------------------------------------------------------- estimate
def estimate_apart(spec: JobSpec, workspace: str | Path, timeout: float = 900) -> dict:
    """`estimate` in a child process (`python -m gs_core jobs estimate`), at a lower priority: the app hands its
    probe steps to another process as it hands jobs to the worker, so a web request never trains and the
    slider's requests keep the cores first. Raises ValueError with the child's one-line error."""
    command = [sys.executable, "-m", "gs_core", "jobs", "estimate", "--workspace", str(Path(workspace).resolve())]
    for name, value in asdict(spec).items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, preexec_fn=lambda: os.nice(10),
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        raise ValueError(f"the estimate took over {timeout:.0f} s; is the machine busy?") from None
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise ValueError(lines[-1].removeprefix("error: "))
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimate(spec: JobSpec, workspace: str | Path) -> dict:
    """How long the job will take and how much disk it will use, measured on this machine: PROBE_STEPS steps of
    this teacher's GS training at the job's crop size and batch (half pruning the full-width student, half
    fine-tuning the narrowed one, as the schedule does), one teacher batch for the teacher-output pass, one
    teacher forward at the evaluation size for the measurement. Takes seconds, and slows down when a job trains
    at the same time (the answer then overstates)."""
    spec.checked()
    cfg = spec.grid_config()
    teacher = _load_teacher(_teacher_source(spec.teacher))
    photos = load_split("train") if not spec.photos else list_images(spec.photos)
    steps = cfg.train.steps
    crops = len(drawn_rows(len(photos) * CROPS_PER_PHOTO, cfg.batch_size, cfg.train.seed, steps))
    x = torch.rand(cfg.batch_size, 3, cfg.size, cfg.size) * 2 - 1
    with torch.inference_mode():
        teacher(x[:1])  # warm-up
        per_crop = _timed(lambda: teacher(x)) / len(x)
        probe_image = torch.rand(1, 3, cfg.eval_size, cfg.eval_size) * 2 - 1
        eval_forward = _timed(lambda: teacher(probe_image))
    probe = replace(cfg.train, steps=PROBE_STEPS, finetune_fraction=0.6, quant_delay=0.0, log_every=1,
                    checkpoint_every=PROBE_STEPS)
    # A latency budget would first time every layer of the teacher; MACs give a narrowed student of similar cost.
    probe_spec = replace(spec, budget="size" if spec.budget == "size" else "macs")
    with tempfile.TemporaryDirectory(dir=_scratch(workspace)) as tmp:
        slim, card = run_method(teacher, x, x.clone(), probe_spec.slim_config(
            replace(cfg, train=probe), 4 if spec.bits == "mixed" else None), Path(tmp) / "run", progress=False)
        seconds = np.diff([0.0] + [row["seconds"] for row in card["history"]])
        state_bytes = (Path(tmp) / "run" / "state.pt").stat().st_size
        student = save_model(slim, Path(tmp) / "slim")
        save_packed(slim, student / PACKED)
        slim_bytes = _folder_bytes(student)
    # The first step of each phase builds its kernels: the second pruning step (with the freeze after it) and the
    # median of the fine-tuning steps after the first are the ones timed.
    prune_step, tune_step = float(seconds[1]), float(np.median(seconds[3:]))
    prune_end = max(1, int(steps * (1 - cfg.train.finetune_fraction)))
    train_s = prune_end * prune_step + (steps - prune_end) * tune_step
    teacher_pass_s = crops * per_crop
    tests = len(load_split("test"))
    keep = 1 - spec.sparsity
    new_grid = teacher_key(spec.teacher) not in teacher_grids(workspace)
    forwards = _measure_forwards(tests, keep, new_grid)
    measure_s = eval_forward * forwards
    cache_bytes = 2 * len(photos) * CROPS_PER_PHOTO * 3 * cfg.size ** 2 * 4  # inputs and outputs, float32
    teacher_bytes = _folder_bytes(_weights_file(_teacher_source(spec.teacher))) if new_grid else 0
    threads = torch.get_num_threads()
    return {
        "seconds": train_s + teacher_pass_s + measure_s, "train_s": train_s, "teacher_pass_s": teacher_pass_s,
        "measure_s": measure_s, "step_s": {"pruning": prune_step, "fine_tuning": tune_step},
        "disk_bytes": state_bytes + slim_bytes + cache_bytes + teacher_bytes,
        "disk": {"training_state": state_bytes, "student": slim_bytes, "teacher_outputs": cache_bytes,
                 "teacher_copy": teacher_bytes},
        "how": (f"timed here: {PROBE_STEPS} GS steps of this teacher ({cfg.batch_size} crops of {cfg.size} px, "
                f"{threads} thread{'s' * (threads > 1)}): a pruning step {prune_step:.2f} s x {prune_end}, a "
                f"fine-tuning step {tune_step:.2f} s x {steps - prune_end}; its output on {crops} crops "
                f"({per_crop:.3f} s each); measuring: one {cfg.eval_size} px teacher pass ({eval_forward:.2f} s) x the "
                f"{forwards:.0f} forwards the grid's measurement makes. Disk: the "
                f"probe's training state and student files, the teacher-output cache"
                + (", the teacher's copy" if new_grid else "")),
    }


def _measure_forwards(tests: int, keep: float, new_grid: bool) -> float:
    """Teacher-sized forwards at the evaluation size that measuring a student makes (`grid.save_measured`), a
    student's forward counted as `keep` of one: outputs on the test photos, the interleaved PyTorch latency
    (eval.cost.measure_latency: 3 warm-up + 15 runs per model) and deployment (deploy.choose: about three candidate
    forms, each checked and then timed 3 + 20 times). A new teacher grid measures its teacher first: the same
    again, with the teacher timed against itself, plus the identity row's pass."""
    latency, deploy = 18, 3 * 23
    student = tests + latency + keep * (tests + latency + deploy)
    return student + (3 * tests + 2 * latency + deploy if new_grid else 0)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _folder_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _scratch(workspace: str | Path) -> Path:
    path = Path(workspace) / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path
