"""Endpoints for scripts (gradio_client): `/stylize` and `/compare`.

They live on hidden components of their own because the pages keep their photo in per-session state,
while a script sends a file with each call. Bad input raises gr.Error, whose message the client gets.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr

from gs_core.data.images import ImageLoadError
from pages import Shared
from pages.compare import card_markdown
from pages.store import ModelGrid, Photo, load_photo


def _photo(path: str | None) -> Photo:
    if not path:
        raise gr.Error("No photo was sent.")
    try:
        return load_photo(path, Path(path).name)[0]
    except ImageLoadError as err:
        raise gr.Error(str(err)) from None


def stylize(grid: ModelGrid, photo: str | None, student: str):
    """Stylize one photo with one model of the manifest (any id, the teacher included)."""
    if student not in grid.models:
        raise gr.Error(f"Unknown student id {student!r}; the manifest has: {', '.join(grid.table.index)}.")
    return grid.stylize(_photo(photo), student).png


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


def add_api(shared: Shared) -> None:
    grid = shared.grid
    with gr.Column(visible=False):
        photo = gr.File(type="filepath", label="photo")
        student = gr.Textbox(label="student")
        sparsity = gr.Number(label="sparsity")
        bits = gr.Textbox(label="bits")
        teacher_image = gr.Image(label="teacher")
        student_image = gr.Image(label="student")
        card = gr.Markdown(label="card")
        stylize_button, compare_button = gr.Button(), gr.Button()
    stylize_button.click(partial(stylize, grid), [photo, student], student_image, api_name="stylize",
                         api_description=stylize.__doc__)
    compare_button.click(partial(compare, grid), [photo, sparsity, bits], [teacher_image, student_image, card],
                         api_name="compare", api_description=compare.__doc__)
