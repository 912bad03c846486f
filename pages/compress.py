"""Compress: a person's own generator in, a slimmed and measured student out, watched while it trains.

The page only inspects, estimates and queues (gs_core.jobs); the workspace's worker process trains, so no
handler here trains a model. The jobs table and the live view of the chosen job are redrawn by a timer
that runs only while this tab is on screen. A finished job's student joins its teacher's grid in the
workspace, which the teacher selector above the tabs then offers on every page.
"""
from __future__ import annotations

import re
import secrets
import shutil
import time
import zipfile
from functools import partial
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from gs_core.data.images import IMAGE_EXTENSIONS
from gs_core.data.photoset import load_split
from gs_core.files import CheckpointError
from gs_core.jobs import (BITS, EMBEDDED_TEACHER, METHOD_OF_BUDGET, JobQueue, JobSpec, estimate_apart, inspect_teacher,
                          usable_photos)
from gs_core.methods import delays_quantization
from pages import UI_EVENT, Shared, add_opener, note_figure
from pages.training import history_figure

#: The quick choice: enough steps to see the method work on a new teacher, in minutes rather than an hour.
QUICK_STEPS = 100
BUDGETS = [("MACs (compute)", "macs"), ("size (bits on disk)", "size"), ("latency (timed per layer)", "latency")]
#: An uploaded zip may unpack to at most this much, in at most this many files: a zip bomb is refused unread.
MAX_UNPACKED_BYTES = 2 << 30
MAX_PHOTOS = 5000
REFRESH_S = 3
JOB_COLUMNS = ["job", "teacher", "target", "state", "progress", "ETA", "result"]


# ----------------------------------------------------------------------------------------- inputs
def teacher_line(path: str | None) -> str:
    """What an uploaded file (None: the embedded teacher) was found to be, or why it is refused: one line."""
    try:
        found = inspect_teacher(path or EMBEDDED_TEACHER)
        return f"**Found** in {Path(path).name if path else 'the embedded teacher'}: {found}"
    except CheckpointError as err:
        return f"**Refused**: {err}"


def unpack_photos(paths: list[str], folder: Path) -> tuple[str, list[str]]:
    """Copy uploaded images and the images inside uploaded zips (flattened, numbered: no name escapes `folder`)
    into `folder`; returns (folder, messages). Photos that do not decode are skipped with a message each; no
    usable photo at all is a ValueError that says why."""
    folder.mkdir(parents=True, exist_ok=True)
    messages, count = [], 0

    def add(name: str, data) -> None:
        nonlocal count
        count += 1
        with open(folder / f"{count:05d}-{Path(name).name}", "wb") as out:
            shutil.copyfileobj(data, out)

    for path in paths or []:
        name = Path(path).name
        if name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(path) as archive:
                    members = [m for m in archive.infolist()
                               if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_EXTENSIONS]
                    if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES or len(members) > MAX_PHOTOS:
                        raise ValueError(f"unpacks to over {MAX_UNPACKED_BYTES >> 30} GiB or {MAX_PHOTOS} photos")
                    for member in members:
                        with archive.open(member) as data:
                            add(member.filename, data)
            except (zipfile.BadZipFile, ValueError, OSError) as err:
                messages.append(f"skipped {name}: not a usable zip ({err})")
        elif Path(name).suffix.lower() in IMAGE_EXTENSIONS:
            with open(path, "rb") as data:
                add(name, data)
        else:
            messages.append(f"skipped {name}: neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a zip")
    good, skipped = usable_photos(str(folder))  # a ValueError when none decodes
    for path in set(folder.iterdir()) - set(good):  # only usable photos stay: the job has nothing left to skip
        path.unlink()
    # "skipped 00007-cat.jpg: ..." names the photo as it was uploaded
    messages += [re.sub(r"^skipped \d{5}-", "skipped ", line) for line in skipped]
    return str(folder), [*messages, f"{len(good)} photos ready"]


def job_spec(preset: str, teacher: str, sparsity: float, budget: str, bits: str, steps: int, photos: str,
             preview: str) -> JobSpec:
    return JobSpec(teacher=teacher or "", sparsity=float(sparsity), bits=str(bits), steps=int(steps or 0),
                   budget=budget, photos=photos or "", preview=preview or "", preset=preset)


def estimate_text(workspace: Path, spec: JobSpec) -> str:
    """The measured estimate as one paragraph, or why there is none (timed in a child process, never here)."""
    try:
        guess = estimate_apart(spec, workspace)
    except (ValueError, CheckpointError, OSError) as err:
        return f"**Error**: {err}"
    return (f"**About {_duration(guess['seconds'])}** ({_duration(guess['train_s'])} training, "
            f"{_duration(guess['teacher_pass_s'])} teacher outputs, {_duration(guess['measure_s'])} measuring) "
            f"and **{guess['disk_bytes'] / 1e6:.0f} MB** of disk, if no other job runs first.\n\n"
            f"<small>How: {guess['how']}.</small>")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------- jobs
def _target(spec: dict) -> str:
    budget = dict((v, k.split(" ")[0]) for k, v in BUDGETS).get(spec["budget"], spec["budget"])
    return f"{spec['sparsity']:.0%} of {budget} removed, {spec['bits']}-bit"


def jobs_table(queue: JobQueue) -> pd.DataFrame:
    """One row per job, newest first: what it trains, where it is, what it gave."""
    rows = []
    for job in queue.jobs():
        state = job["state"] + (f" ({job['phase']})" if job["state"] == "running" and job.get("phase") else "")
        done = job["step"] / job["steps"] if job["steps"] else 0
        rows.append([job["id"], job["teacher"], _target(job["spec"]), state,
                     f"{job['step']}/{job['steps']} ({done:.0%})", _duration(job.get("eta_s")),
                     job.get("model") or job.get("error") or ""])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def alive_figure(alive: dict, step: int | None) -> go.Figure:
    """The fraction of each channel group's channels still alive at the last preview."""
    title = f"Channels alive per layer group, step {step}" if step is not None else "Channels alive per layer group"
    if not alive:
        return note_figure(title, "Drawn once the job has trained a few steps.")
    names = list(alive)
    kept = [alive[n][0] / alive[n][1] if alive[n][1] else 1.0 for n in names]
    figure = go.Figure(go.Bar(y=names, x=kept, orientation="h", marker_color="#2a9d8f",
                              text=[f"{alive[n][0]}/{alive[n][1]}" for n in names], textposition="auto"))
    figure.update_layout(title=title, xaxis_range=[0, 1], xaxis_tickformat=".0%", yaxis_autorange="reversed",
                         yaxis_dtick=1, height=max(320, 22 * len(names) + 140))
    return figure


def _quant_start(spec: JobSpec) -> int | None:
    train = spec.grid_config().train
    bits = spec.bits if spec.bits == "mixed" else int(spec.bits)
    delayed = delays_quantization(METHOD_OF_BUDGET[spec.budget], bits)
    return train.quant_start if train.quant_delay and delayed else None


def live_view(queue: JobQueue, job_id: str | None):
    """(losses figure, channels figure, teacher preview, student preview, caption) of one job."""
    if not job_id:
        message = "Choose a job in the table (or start one)."
        return note_figure("Losses", message), alive_figure({}, None), None, None, message
    try:
        job, live = queue.status(job_id), queue.live(job_id)
    except ValueError as err:
        return note_figure("Losses", str(err)), alive_figure({}, None), None, None, f"**Error**: {err}"
    preview = live["preview"]
    caption = f"**{job_id}**: {job['state']}, step {job['step']} of {job['steps']}"
    if preview["step"] is not None:
        caption += f"; the student's output below is from step {preview['step']}"
    if job.get("error"):
        caption += f"\n\n**Failed**: {job['error']}"
    if job.get("notices"):
        caption += "\n\n" + "\n\n".join(f"Note: {n}" for n in job["notices"])
    if job.get("model"):
        caption += f"\n\n**Done**: student **{job['model']}** is in its teacher's grid: open it on Compare."
    figure = history_figure(live["history"], f"Training of job {job_id}", _quant_start(JobSpec(**job["spec"])),
                            "No loss logged yet: the job is queued or preparing.", steps=job["steps"])
    return figure, alive_figure(live["alive"], preview["step"]), preview["teacher"], preview["student"], caption


def job_choices(queue: JobQueue) -> list[tuple[str, str]]:
    return [(f"{j['id']} ({j['state']})", j["id"]) for j in queue.jobs()]


# ----------------------------------------------------------------------------------------- page
def add_compress_page(shared: Shared, tab: gr.Tab, workspace: Path, preset: str = "default") -> None:
    """The page; its jobs follow the grid preset `preset` (gs_core.grid.PRESETS)."""
    queue = JobQueue(workspace)
    previews = [("the first training photo", "")] + [(p.stem, str(p)) for p in _test_photos()]
    teacher_path, photos_dir = gr.State(""), gr.State("")
    with gr.Row():
        with gr.Column(scale=2, min_width=320):
            gr.Markdown("### 1. Teacher\nA CartoonGAN, CycleGAN/pix2pix ResNet or AnimeGANv2 generator in its "
                        "published layout. Its tensors are read, never unpickled.")
            teacher_file = gr.File(label="Your generator (.pth, .pt, .safetensors); none: the embedded teacher",
                                   file_types=[".pth", ".pt", ".safetensors"], type="filepath",
                                   elem_id="teacher-file")
            found = gr.Markdown(teacher_line(None), elem_id="teacher-found")
            gr.Markdown("### 2. Target")
            sparsity = gr.Slider(0.1, 0.95, value=0.85, step=0.05, label="Sparsity: fraction of the budget removed",
                                 elem_id="job-sparsity")
            budget = gr.Radio(BUDGETS, value="macs", label="Budget metric", elem_id="job-budget")
            bits = gr.Radio(list(BITS), value="8", label="Weight bits (mixed: 4 on average, per layer)",
                            elem_id="job-bits")
            default_steps = JobSpec(preset=preset).grid_config().train.steps
            steps = gr.Radio([(f"the grid's default ({default_steps:,})", 0),
                              (f"quick ({QUICK_STEPS})", QUICK_STEPS)], value=0, label="Training steps",
                             elem_id="job-steps")
            gr.Markdown("### 3. Photos")
            photos = gr.File(label="Your training photos: images or a zip (none: the embedded photos)",
                             file_count="multiple", type="filepath", elem_id="job-photos")
            photos_note = gr.Markdown(elem_id="job-photos-note")
            preview = gr.Dropdown(previews, value="", label="Photo for the live view", elem_id="job-preview")
            with gr.Row():
                estimate_button = gr.Button("Estimate time and disk", elem_id="job-estimate")
                start = gr.Button("Start", variant="primary", elem_id="job-start")
            estimate_note = gr.Markdown(elem_id="job-estimate-note")
        with gr.Column(scale=3):
            table = gr.Dataframe(jobs_table(queue), label="Jobs (one trains at a time; the others wait their turn)",
                                 interactive=False, wrap=True, elem_id="jobs-table",
                                 column_widths=["19%", "17%", "18%", "11%", "12%", "8%", "15%"])
            with gr.Row():
                chosen = gr.Dropdown(job_choices(queue), value=None, label="Job", elem_id="job-chosen", scale=3)
                cancel = gr.Button("Cancel this job", elem_id="job-cancel", scale=1)
                show = gr.Button("Open its student on Compare", elem_id="job-open", scale=1)
            caption = gr.Markdown(elem_id="job-caption")
            with gr.Row():
                teacher_image = gr.Image(label="Teacher", interactive=False, elem_id="job-teacher-image")
                student_image = gr.Image(label="Student, live", interactive=False, elem_id="job-student-image")
            losses = gr.Plot(elem_id="job-losses")
            alive = gr.Plot(elem_id="job-alive")
    timer = gr.Timer(REFRESH_S, active=False)
    spec_inputs = [teacher_path, sparsity, budget, bits, steps, photos_dir, preview]
    live_outputs = [losses, alive, teacher_image, student_image, caption]

    def take_teacher(path: str | None):
        line = teacher_line(path)
        return (path or "") if line.startswith("**Found**") else "", line

    def take_photos(paths: list[str] | None):
        if not paths:
            return "", ""
        folder = workspace / "photos" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        try:
            used, messages = unpack_photos(paths, folder)
        except ValueError as err:
            shutil.rmtree(folder, ignore_errors=True)
            return "", f"**Error**: {err}"
        return used, "\n\n".join(f"Note: {m}" for m in messages)

    def spec(file: str | None, path: str, *values) -> JobSpec:
        if file and not path:
            raise gr.Error("The uploaded file was refused (see the line under it); remove it to use the embedded "
                           "teacher.")
        return job_spec(preset, path, *values)

    def submit(*values):
        try:
            job_id = queue.submit(spec(*values))
        except (ValueError, CheckpointError) as err:
            raise gr.Error(str(err)) from None
        return jobs_table(queue), gr.Dropdown(choices=job_choices(queue), value=job_id), f"Queued **{job_id}**."

    def refresh(job_id: str | None, seen: list):
        """The timer's tick: the table, the live view, and the job and teacher choices where they changed (the
        teacher selector offers a new teacher's grid once its first job has finished)."""
        jobs, grids = job_choices(queue), shared.grids.choices()
        return (jobs_table(queue), gr.Dropdown(choices=jobs) if jobs != seen[0] else gr.skip(),
                *live_view(queue, job_id), gr.Dropdown(choices=grids) if grids != seen[1] else gr.skip(),
                [jobs, grids])

    def cancel_job(job_id: str | None):
        if not job_id:
            raise gr.Error("Choose a job first.")
        queue.cancel(job_id)
        return jobs_table(queue)

    def open_student(job_id: str | None):
        model = queue.status(job_id).get("model") if job_id else None
        if not model:
            raise gr.Error("This job has no student yet: it appears here once the job is done.")
        return model

    def pick_row(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.skip()

    seen = gr.State([job_choices(queue), shared.grids.choices()])  # choices as this session last drew them
    teacher_file.change(take_teacher, teacher_file, [teacher_path, found], **UI_EVENT)
    photos.change(take_photos, photos, [photos_dir, photos_note], **UI_EVENT)
    # A child process times a few training steps of the teacher: seconds, one estimate at a time.
    estimate_button.click(lambda *v: estimate_text(workspace, spec(*v)), [teacher_file, *spec_inputs],
                          estimate_note, concurrency_limit=1, **UI_EVENT)
    start.click(submit, [teacher_file, *spec_inputs], [table, chosen, estimate_note], **UI_EVENT)
    chosen.change(partial(live_view, queue), chosen, live_outputs, **UI_EVENT)
    table.select(pick_row, None, chosen, **UI_EVENT)
    cancel.click(cancel_job, chosen, table, **UI_EVENT)
    add_opener(shared, show.click, open_student, [chosen])
    timer.tick(refresh, [chosen, seen], [table, chosen, *live_outputs, shared.teacher, seen], **UI_EVENT)
    # The timer ticks only while this tab is on screen: elsewhere it would cost the pages' events a round trip.
    shared.tab.change(lambda on_screen: gr.Timer(active=on_screen == tab.id), shared.tab, timer, **UI_EVENT)


def _test_photos() -> list[Path]:
    try:
        return load_split("test")
    except (FileNotFoundError, ValueError):
        return []
