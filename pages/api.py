"""Endpoints for scripts (gradio_client): `/stylize` and `/compare`; with a workspace, `/compress`, `/job` and
`/cancel` for compression jobs.

They live on hidden components of their own because the pages keep their photo in per-session state,
while a script sends a file with each call. Bad input raises gr.Error, whose message the client gets.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from gs_core.data.images import ImageLoadError
from gs_core.files import CheckpointError
from gs_core.jobs import JobQueue, JobSpec
from pages import Shared
from pages.compare import card_markdown
from pages.store import GridRegistry, ModelGrid, Photo, load_photo

#: What /job returns of a job's status (gs_core.jobs.JobQueue.status has more: the spec, the timestamps).
JOB_FIELDS = ("id", "state", "phase", "step", "steps", "eta_s", "error", "model", "teacher", "notices")


def _photo(path: str | None) -> Photo:
    if not path:
        raise gr.Error("No photo was sent.")
    try:
        return load_photo(path, Path(path).name)[0]
    except ImageLoadError as err:
        raise gr.Error(str(err)) from None


def stylize(grids: GridRegistry, photo: str | None, student: str):
    """Stylize one photo with one model: an id of the shipped grid (the teacher included), or a finished job's
    `model` ("<teacher key>/<id>", from /job)."""
    try:
        grid, model_id = grids.resolve(str(student))
    except KeyError as err:
        raise gr.Error(f"Unknown student id: {err.args[0]}") from None
    return grid.stylize(_photo(photo), model_id).png


def compare(grid: ModelGrid, photo: str | None, sparsity: float, bits: str):
    """(teacher image, GS student image, card markdown) for the GS student nearest `sparsity` with `bits`."""
    if not 0 <= float(sparsity) <= 1:
        raise gr.Error(f"sparsity must be a fraction in [0, 1], got {sparsity}.")
    if str(bits) not in grid.bits_choices():
        raise gr.Error(f"bits must be one of {', '.join(grid.bits_choices())}; got {bits!r}.")
    student = grid.pick_gs(float(sparsity), str(bits))
    image = _photo(photo)
    result = grid.stylize(image, student)
    return grid.stylize(image, grid.teacher_id).png, result.png, card_markdown(grid, student, result)


def compress(queue: JobQueue, preset: str, teacher: str | None, sparsity: float, bits: str, steps: int) -> str:
    """Queue a compression job and return its id: `teacher` a generator file (.pth, .pt, .safetensors in a
    published layout; None: the embedded teacher), `sparsity` the fraction of MACs to remove, `bits` one of 32, 8,
    4, mixed, `steps` 0 for the default. Trains on the embedded photos; follow it with /job."""
    try:
        if steps is None or int(steps) != float(steps):
            raise ValueError(f"steps must be a whole number (0: the default); got {steps!r}")
        return queue.submit(JobSpec(teacher=teacher or "", sparsity=float(sparsity), bits=str(bits),
                                    steps=int(steps), preset=preset))
    except (ValueError, TypeError, CheckpointError) as err:
        raise gr.Error(str(err)) from None


def job(queue: JobQueue, job_id: str) -> dict:
    """A job's state (queued, running, done, failed, cancelled), step, steps, eta_s (seconds), error and, once
    done, `model`: the id /stylize takes as its `student`."""
    try:
        status = queue.status(str(job_id))
    except ValueError as err:
        raise gr.Error(str(err)) from None
    return {key: status.get(key) for key in JOB_FIELDS}


def cancel(queue: JobQueue, job_id: str) -> dict:
    """Cancel a job: a queued one never starts, a running one stops at its next step; returns its /job."""
    try:
        queue.cancel(str(job_id))
    except ValueError as err:
        raise gr.Error(str(err)) from None
    return job(queue, job_id)


def add_api(shared: Shared, workspace: Path | None = None, job_preset: str = "default") -> None:
    with gr.Column(visible=False):
        photo = gr.File(type="filepath", label="photo")
        student = gr.Textbox(label="student")
        sparsity = gr.Number(label="sparsity")
        bits = gr.Textbox(label="bits")
        teacher_image = gr.Image(label="teacher")
        student_image = gr.Image(label="student")
        card = gr.Markdown(label="card")
        stylize_button, compare_button = gr.Button(), gr.Button()
    stylize_button.click(partial(stylize, shared.grids), [photo, student], student_image, api_name="stylize",
                         api_description=stylize.__doc__)
    compare_button.click(partial(compare, shared.grid), [photo, sparsity, bits], [teacher_image, student_image, card],
                         api_name="compare", api_description=compare.__doc__)
    if workspace is not None:
        add_job_api(workspace, job_preset)


def add_job_api(workspace: Path, preset: str) -> None:
    queue = JobQueue(workspace)
    with gr.Column(visible=False):
        teacher = gr.File(type="filepath", label="teacher")
        sparsity = gr.Number(label="sparsity")
        bits = gr.Textbox(label="bits")
        steps = gr.Number(label="steps")
        job_id = gr.Textbox(label="job_id")
        status = gr.JSON(label="job")
        compress_button, job_button, cancel_button = gr.Button(), gr.Button(), gr.Button()
    compress_button.click(partial(compress, queue, preset), [teacher, sparsity, bits, steps], job_id,
                          api_name="compress", api_description=compress.__doc__)
    job_button.click(partial(job, queue), job_id, status, api_name="job", api_description=job.__doc__)
    cancel_button.click(partial(cancel, queue), job_id, status, api_name="cancel", api_description=cancel.__doc__)
