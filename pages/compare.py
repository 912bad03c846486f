"""Compare (home page): a photo, beside it the teacher's and the selected student's stylization, their difference.

The sparsity slider and the bit-width radio pick a GS student: they set the shared student dropdown and
draw it in the same round trip. A student chosen on another page (the Pareto plot, the grid) is drawn,
and the controls moved to match, when this tab is opened again (or at once, from the dropdown). The
handlers are plain functions of (grid, values) so the latency benchmark can call them directly.
"""
from __future__ import annotations

import math
from functools import reduce
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from gs_core.data.images import ImageLoadError
from gs_core.data.photoset import load_split
from gs_core.deploy.choose import DeployError
from pages import UI_EVENT, Shared, add_control, add_view
from pages.store import DIFF_GAIN, ModelGrid, Photo, Stylized, load_photo

THUMBNAIL_SIDE = 160
METHOD_NAMES = {"teacher": "Teacher", "gs": "GAN Slimming", "gs-latency": "GAN Slimming, latency budget",
                "gs-size": "GAN Slimming, size budget", "distill": "Distillation only",
                "prune": "Pruning only", "quant": "Quantization only",
                "stacked": "Prune the teacher, then distil, then quantize",
                "stacked-scratch": "Distil from scratch, then prune, then quantize"}


# ----------------------------------------------------------------------------------------- photos
def load_examples() -> list[Photo]:
    """The bundled test photos; none (not an error) when the photo set is absent."""
    try:
        paths = load_split("test")
    except (FileNotFoundError, ValueError):
        return []
    return [load_photo(path, path.stem)[0] for path in paths]


def thumbnail(photo: Photo) -> np.ndarray:
    image = Image.fromarray(photo.rgb)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    return np.asarray(image)


def gallery_items(examples: list[Photo], uploads: list[Photo]) -> list[tuple[np.ndarray, str]]:
    return [(thumbnail(p), p.name) for p in examples] + [(thumbnail(p), f"uploaded: {p.name}") for p in uploads]


def read_uploads(paths: list[str]) -> tuple[list[Photo], list[str], list[str]]:
    """(photos, notices, errors) for uploaded files; one bad file never stops the others."""
    photos, notices, errors = [], [], []
    for path in paths or []:
        name = Path(path).name
        try:
            photo, photo_notices = load_photo(path, name)
        except ImageLoadError as err:
            errors.append(f"{name}: {err}")
            continue
        photos.append(photo)
        notices += [f"{name}: {n}" for n in photo_notices]
    return photos, notices, errors


# ----------------------------------------------------------------------------------------- views
def slider_step(levels: list[float]) -> float:
    """The largest step that lands on every level (in hundredths), so a grid with even levels snaps exactly."""
    hundredths = [round(v * 100) for v in levels]
    step = reduce(math.gcd, (h - hundredths[0] for h in hundredths[1:]), 0)
    return step / 100 if step else 0.01


def _count(value: float, unit: str = "") -> str:
    for scale, prefix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def _size(bits: float) -> str:
    return _count(bits / 8, "B")


def _number(value, fmt: str) -> str:
    return "n/a" if value is None or pd.isna(value) else format(float(value), fmt)


def _latency(row) -> str:
    """latency_ms with the runtime it was timed in (the manifest says "pytorch" where it was not deployed)."""
    return f"{_number(row['latency_ms'], '.1f')} ms ({row.get('runtime') or 'pytorch'})"


def _eager_latency(row) -> str:
    """PyTorch eager latency: latency_ms_torch beside a deployed figure, or latency_ms itself where the grid timed
    PyTorch eager (runtime "pytorch", no separate eager figure)."""
    eager = row.get("latency_ms_torch")
    if (eager is None or pd.isna(eager)) and (row.get("runtime") or "pytorch") == "pytorch":
        eager = row["latency_ms"]
    return "n/a" if eager is None or pd.isna(eager) else f"{eager:.1f} ms"


TARGET_NAMES = {"gs-latency": "latency removed", "gs-size": "size removed"}  # the others remove MACs


def card_markdown(grid: ModelGrid, model_id: str, result: Stylized | None = None) -> str:
    """The student's card: its costs next to the teacher's, and its quality (this photo and the test set)."""
    row, teacher = grid.table.loc[model_id], grid.table.loc[grid.teacher_id]
    method = row["method"]
    head = METHOD_NAMES.get(method, method)
    if method != "teacher":
        target = TARGET_NAMES.get(method, "sparsity target")
        head += f" · {float(row['sparsity_target']):.0%} {target} · {row['bits_label']}-bit"
    at = {key: f"{int(r['eval_size'])}×{int(r['eval_size'])}" if pd.notna(r["eval_size"]) else "size unknown"
          for key, r in (("model", row), ("teacher", teacher))}
    lines = [f"### {model_id}", head, "",
             f"| | this model (measured at {at['model']}) | teacher (measured at {at['teacher']}) |", "|---|---|---|",
             f"| parameters | {_count(row['params'])} | {_count(teacher['params'])} |",
             f"| MACs | {_count(row['macs'])} | {_count(teacher['macs'])} |",
             f"| size | {_size(row['size_bits'])} | {_size(teacher['size_bits'])} |",
             f"| compression (size, MACs) | {_number(row['compression_size'], '.1f')}×, "
             f"{_number(row['compression_macs'], '.1f')}× | 1× |",
             f"| latency, deployed (measured) | {_latency(row)} | {_latency(teacher)} |",
             f"| latency, PyTorch eager | {_eager_latency(row)} | {_eager_latency(teacher)} |"]
    if result is not None and result.psnr is not None:
        lines += [f"| PSNR vs teacher, this photo | {_number(result.psnr, '.2f')} dB | |",
                  f"| SSIM vs teacher, this photo | {_number(result.ssim, '.3f')} | |"]
    test_set = (("PSNR", "psnr", ".2f"), ("SSIM", "ssim", ".3f"), ("LPIPS", "lpips", ".3f"), ("FID", "fid", ".1f"),
                ("style retained", "style_retained", ".2f"))
    lines += [f"| {name} (test set) | {_number(row.get(metric), fmt)} | |" for name, metric, fmt in test_set]
    identity = grid.identity
    if identity is not None:
        scores = ", ".join(f"{name} {_number(identity.get(metric), fmt)}" for name, metric, fmt in test_set
                           if pd.notna(identity.get(metric)))
        lines += ["", f"Doing nothing (output = the photo itself) scores {scores} against the teacher on the test "
                      "set: the floor any student should clear. Style retained is the share of the teacher's change "
                      "to the photos that a model reproduces (1 for the teacher, 0 for the photo)."]
    return "\n".join(lines)


def student_view(grid: ModelGrid, photo: Photo | None, student_id: str):
    """(student image, difference image, card) for the session's photo; the images as PNG paths."""
    if photo is None:
        return None, None, card_markdown(grid, student_id)
    result = grid.stylize(photo, student_id)
    if result.diff_png is None:  # the teacher against itself
        return result.png, None, card_markdown(grid, student_id)
    return result.png, result.diff_png, card_markdown(grid, student_id, result)


def photo_view(grid: ModelGrid, photo: Photo | None, student_id: str):
    """(the photo, teacher image, *student_view, student shown) for a newly chosen photo; starts the prefetch."""
    if photo is None:
        return (None, None, *student_view(grid, None, student_id), student_id)
    teacher = grid.stylize(photo, grid.teacher_id).png
    view = student_view(grid, photo, student_id)
    # The students one slider or radio step away first: they are what the user asks for next.
    others = [m for m in grid.table.index if m not in grid.gs.index]
    grid.prefetch(photo, grid.gs_by_distance(student_id) + others)
    return (photo.rgb, teacher, *view, student_id)


def move_controls(grid: ModelGrid, photo: Photo | None, sparsity: float, bits: str, current: str):
    """A slider or radio move: (student id, *student_view, student shown), in one round trip."""
    student_id = grid.pick_gs(sparsity, bits) or current
    return (student_id, *student_view(grid, photo, student_id), student_id)


def follow_selection(grid: ModelGrid, photo: Photo | None, student_id: str, shown: str | None):
    """A student chosen on another page: (*student_view, student shown, slider, radio).

    Nothing to do when it is already on screen, which is the case when the slider or radio chose it; the
    controls move to a GS student's level and bits, and stay put for a baseline (not on the slider).
    """
    if student_id == shown:
        return (gr.skip(),) * 6
    if student_id in grid.gs.index:
        row = grid.gs.loc[student_id]
        controls = float(row["sparsity_target"]), row["bits_label"]
    else:
        controls = gr.skip(), gr.skip()
    return (*student_view(grid, photo, student_id), student_id, *controls)


def deployed_download(grid: ModelGrid, student_id: str) -> str:
    """The student's deployed folder as a zip (ModelGrid.deployed_zip); a model no engine runs exactly here is a
    message, not a traceback."""
    try:
        return str(grid.deployed_zip(student_id))
    except DeployError as err:
        raise gr.Error(str(err)) from None


# ----------------------------------------------------------------------------------------- page
def controls(grid: ModelGrid, student_id: str) -> tuple[dict, dict]:
    """The slider's and the radio's settings for `grid`, placed at `student_id` (at the first level and bits
    for a model not on the slider)."""
    levels, bits_choices = grid.sparsity_levels() or [0.0], grid.bits_choices() or ["32"]
    start = grid.gs.loc[student_id] if student_id in grid.gs.index else None
    slider = dict(minimum=levels[0], maximum=max(levels[-1], levels[0] + 0.01), step=slider_step(levels),
                  value=float(start["sparsity_target"]) if start is not None else levels[0],
                  interactive=len(levels) > 1,
                  info="Snaps to the trained levels: " + ", ".join(f"{v:g}" for v in levels))
    radio = dict(choices=bits_choices, value=start["bits_label"] if start is not None else bits_choices[0])
    return slider, radio


def new_grid_controls(grid: ModelGrid, student_id: str):
    """Another grid: the slider and radio take its levels and bits; nothing of the old grid counts as shown."""
    slider, radio = controls(grid, student_id)
    return gr.Slider(**slider), gr.Radio(**radio), None


def add_compare_page(shared: Shared, tab: gr.Tab, examples: list[Photo]) -> None:
    slider_settings, radio_settings = controls(shared.grid, shared.student.value)
    uploads = gr.State([])  # this session's uploaded Photos
    shown = gr.State(None)  # the student whose picture is on screen, so a selection is not drawn twice
    with gr.Row():
        with gr.Column(scale=1, min_width=260):
            gallery = gr.Gallery(gallery_items(examples, []), label="Photos (click one to use it)", columns=3,
                                 height=300, allow_preview=False, elem_id="photo-gallery")
            upload = gr.File(label="Upload photos", file_count="multiple", type="filepath", elem_id="upload")
            notice = gr.Markdown(elem_id="photo-notice")
        with gr.Column(scale=3):
            with gr.Row():
                slider = gr.Slider(**slider_settings, elem_id="sparsity",
                                   label="Sparsity (fraction of the teacher's MACs removed)")
                bits = gr.Radio(**radio_settings, label="Weight bits", elem_id="bits")
            with gr.Row():
                photo_image = gr.Image(label="Photo", interactive=False, elem_id="photo-image")
                teacher_image = gr.Image(label="Teacher", interactive=False, elem_id="teacher-image")
                student_image = gr.Image(label="Student", interactive=False, elem_id="student-image")
                diff_image = gr.Image(label=f"Student − teacher × {DIFF_GAIN}: red darker, blue brighter, "
                                            "green other colour", interactive=False, elem_id="diff-image")
            card = gr.Markdown(elem_id="student-card")
            with gr.Row():
                export = gr.Button("Deploy the selected student for this machine", elem_id="export-onnx", scale=0)
                onnx_file = gr.File(label="Deployed folder (zip): the fastest exact engine and form found here, "
                                          "model.onnx + deploy.json; `stylize --model FOLDER` runs it",
                                    elem_id="onnx-file")

    student_outputs = [student_image, diff_image, card, shown]
    photo_outputs = [photo_image, teacher_image, *student_outputs]

    def choose(uploaded: list[Photo], evt: gr.SelectData) -> Photo:
        return (examples + uploaded)[evt.index]

    def add_uploads(paths: list[str], uploaded: list[Photo], current: Photo | None):
        photos, notices, errors = read_uploads(paths)
        for message in notices:
            gr.Info(message)
        for message in errors:
            gr.Warning(message)
        uploaded = uploaded + photos
        lines = [f"⚠️ Could not use {m}" for m in errors] + [f"ℹ️ {m}" for m in notices]
        return (uploaded, photos[0] if photos else current, gallery_items(examples, uploaded), "\n\n".join(lines),
                None)

    export.click(shared.bind(deployed_download), [shared.teacher, shared.student], [onnx_file], **UI_EVENT)
    show_photo, photo_inputs = shared.bind(photo_view), [shared.teacher, shared.photo, shared.student]
    gallery.select(choose, [uploads], [shared.photo], **UI_EVENT).then(show_photo, photo_inputs, photo_outputs,
                                                                       **UI_EVENT)
    upload.upload(add_uploads, [upload, uploads, shared.photo], [uploads, shared.photo, gallery, notice, upload],
                  **UI_EVENT).then(show_photo, photo_inputs, photo_outputs, **UI_EVENT)
    shared.demo.load(show_photo, photo_inputs, photo_outputs, **UI_EVENT)
    # .input, not .change: only a user's move picks a student; follow_selection moves the controls too.
    # The move draws the student itself (one round trip instead of two) and sets `shown`, so the
    # student change it causes finds nothing left to do.
    gr.on([slider.input, bits.input], shared.bind(move_controls),
          [shared.teacher, shared.photo, slider, bits, shared.student], [shared.student, *student_outputs],
          trigger_mode="always_last", **UI_EVENT)
    add_view(shared, tab, follow_selection, [shared.photo, shared.student, shown], [*student_outputs, slider, bits])
    add_control(shared, new_grid_controls, [slider, bits, shown])
