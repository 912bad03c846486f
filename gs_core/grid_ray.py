"""The grid's points as Ray tasks: `python -m gs_core grid --backend ray [--address ADDR]`.

Tasks, not Ray Tune: the grid is a fixed list of points with one ordering rule (a mixed point after its uniform
reference), its own folder layout, manifest and resumable checkpoints. What it needs from Ray is a CPU / GPU
request per point, retries when a worker dies, and results as they finish (`ray.wait`); tasks are exactly that.
Tune would add a search loop, trial objects and a results tree of its own, none of which the grid has a use for.

Storage is a shared path: each worker writes its point's run folder (`run_dir/<digest>/<recipe>/<id>/`, with state.pt)
and its result (`out/grid/<id>/`) itself, so both folders must be at the same path on every node (NFS or any
shared file system; on a local instance, this machine's disk). This is what lets a retry resume: the retried
task, on whichever node, finds the state.pt the dead worker left. Sending results back through Ray could not do
that, since what a dead worker held dies with it. The head rebuilds the manifest from the cards.

Only `--backend ray` imports this module, so nothing else needs Ray installed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from gs_core.grid import GridRun, Point, try_point, write_manifest

try:
    import ray
except ModuleNotFoundError as err:
    raise ValueError("--backend ray needs Ray, which is not installed in this environment; "
                     "pip install -r requirements.txt installs it") from err


@ray.remote
def _point_task(run: GridRun, point: Point, threads: int, *after) -> str | None:
    """One point on a worker: None, or why it failed. It trains on the GPU Ray gave it (the only one its process
    sees), else on the CPU. `after`: the results of the points it must follow (Ray starts it once they are in)."""
    torch.set_num_threads(threads)
    device = torch.device("cuda" if ray.get_gpu_ids() else "cpu")
    return try_point(replace(run, device=device), point, progress=False)


@ray.remote
def _call_task(fn, threads: int, *args):
    """`fn(*args, device=...)` on a worker, on the GPU Ray gave it or else the CPU: a user's job (gs_core.jobs)."""
    torch.set_num_threads(threads)
    return fn(*args, device=torch.device("cuda" if ray.get_gpu_ids() else "cpu"))


@dataclass(frozen=True)
class RayBackend:
    """A grid backend (see `gs_core.grid.run_grid`): one Ray task per point, on the cluster at `address`; when None,
    Ray's own choice: RAY_ADDRESS, else the instance `ray start` left on this machine, else a new local one.
    Connects unless Ray already is. Workers draw no progress bars; the driver prints each point as it ends."""
    address: str | None = None
    cpus_per_point: int = 1  # also the point's torch threads
    gpus_per_point: float = 0
    max_retries: int = 3  # a point whose worker dies is run again, and resumes from its last state.pt

    def call(self, fn, *args):
        """`fn(*args, device=...)` as one task with a point's resources and retries (a worker that dies is
        replaced and `fn` runs again: it must resume, as a point does); its result once it is in."""
        self._connect()
        task = _call_task.options(num_cpus=self.cpus_per_point, num_gpus=self.gpus_per_point,
                                  max_retries=self.max_retries)
        return ray.get(task.remote(fn, self.cpus_per_point, *args))

    def _connect(self) -> None:
        if not ray.is_initialized():
            ray.init(address=self.address)

    def __call__(self, run: GridRun, todo: list[Point], progress: bool = True) -> dict[str, str]:
        self._connect()
        shared = ray.put(run)  # the teacher and training crops go to the object store once, not once per task
        started = {}
        for point in sorted(todo, key=lambda p: p.bits == "mixed"):  # references are submitted first
            reference = run.cfg.reference(point)
            after = [started[reference.id]] if reference and reference.id in started else []
            task = _point_task.options(name=point.id, num_cpus=self.cpus_per_point, num_gpus=self.gpus_per_point,
                                       max_retries=self.max_retries)
            started[point.id] = task.remote(shared, point, self.cpus_per_point, *after)
        pending = {started[p.id]: p for p in todo}
        failures, start = {}, time.perf_counter()
        while pending:
            [ref], _ = ray.wait(list(pending))
            point = pending.pop(ref)
            try:
                error = ray.get(ref)
            except ray.exceptions.RayError as err:  # its worker died more than max_retries times
                error = f"{type(err).__name__}: {err}"
            if error:
                failures[point.id] = error
            done, elapsed = len(todo) - len(pending), time.perf_counter() - start
            eta = f", about {elapsed / done * len(pending) / 60:.0f} min left" if pending else ""
            print(f"[grid] {done}/{len(todo)} finished: {point.id}" + (f" FAILED: {error}" if error else "")
                  + f" ({elapsed / 60:.1f} min{eta})", flush=True)
            write_manifest(run.out, run.teacher_path, run.digest, in_progress={p.id for p in pending.values()})
        return failures
