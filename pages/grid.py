"""Grid: the session's photo stylized by every GS student (rows: sparsity, columns: bits) and by the baselines.

Drawn when the tab is opened, since it runs every model; the results come from the shared cache, which
the Compare page has usually filled in the background by then. Clicking a picture selects that student.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from pages import UI_EVENT, Shared, add_control, add_view, note_figure
from pages.store import ModelGrid, Photo

#: Shown where the grid has no student for a (sparsity, bits) pair.
EMPTY_CELL = np.full((64, 64, 3), 235, dtype=np.uint8)


def grid_cells(grid: ModelGrid) -> list[str | None]:
    """GS student ids in reading order (sparsity rows, bits columns), None for pairs not in the grid."""
    gs = grid.gs
    by_pair = {(float(s), b): mid for mid, s, b in zip(gs.index, gs["sparsity_target"], gs["bits_label"])}
    return [by_pair.get((level, bits)) for level in grid.sparsity_levels() for bits in grid.bits_choices()]


def baseline_ids(grid: ModelGrid) -> list[str]:
    """The teacher, then every non-GS model by method and sparsity."""
    others = grid.table[grid.table["method"] != "gs"].copy()
    others["is_teacher"] = others["method"] != "teacher"  # False sorts first
    return list(others.sort_values(["is_teacher", "method", "sparsity_target", "bits_label"]).index)


def _caption(grid: ModelGrid, model_id: str) -> str:
    row = grid.table.loc[model_id]
    if row["method"] == "teacher":
        return "teacher"
    return f"{row['method']} · {float(row['sparsity_target']):.0%} · {row['bits_label']}-bit"


def psnr_figure(grid: ModelGrid, psnrs: list[float | None]) -> go.Figure:
    """PSNR against the teacher on this photo, laid out like the gallery (None: not in the grid)."""
    levels, bits = grid.sparsity_levels(), grid.bits_choices()
    z = [psnrs[row * len(bits):(row + 1) * len(bits)] for row in range(len(levels))]
    figure = go.Figure(go.Heatmap(
        z=z, x=[f"{b}-bit" for b in bits], y=[f"{v:.0%}" for v in levels], colorscale="Viridis",
        text=[["" if v is None else f"{v:.1f}" for v in row] for row in z], texttemplate="%{text}",
        hovertemplate="sparsity %{y}, %{x}<br>PSNR %{z:.2f} dB<extra></extra>", colorbar_title="dB"))
    figure.update_layout(title="PSNR against the teacher on this photo", yaxis_title="sparsity target",
                         yaxis_autorange="reversed", height=320)
    return figure


def grid_view(grid: ModelGrid, photo: Photo | None):
    """(GS gallery items, PSNR heatmap, baseline gallery items) for `photo`."""
    if photo is None:
        return [], note_figure("PSNR against the teacher", "Choose a photo on the Compare page."), []
    levels, bits = grid.sparsity_levels(), grid.bits_choices()
    cells, psnrs = [], []
    for index, model_id in enumerate(grid_cells(grid)):
        if model_id is None:
            level, width = levels[index // len(bits)], bits[index % len(bits)]
            cells.append((EMPTY_CELL, f"{level:.0%} · {width}-bit: not in the grid"))
            psnrs.append(None)
        else:
            result = grid.stylize(photo, model_id)
            cells.append((result.png, _caption(grid, model_id)))
            psnrs.append(result.psnr)
    baselines = [(grid.stylize(photo, m).png, _caption(grid, m)) for m in baseline_ids(grid)]
    return cells, psnr_figure(grid, psnrs), baselines


def header(grid: ModelGrid) -> str:
    return ("Every GS student on your photo: one row per sparsity level "
            f"({', '.join(f'{v:.0%}' for v in grid.sparsity_levels())}), one column per weight "
            f"bit width ({', '.join(grid.bits_choices())}). Click a picture to select that student.")


def add_grid_page(shared: Shared, tab: gr.Tab) -> None:
    grid = shared.grid
    intro = gr.Markdown(header(grid))
    gs_gallery = gr.Gallery(label="GAN Slimming students", columns=max(1, len(grid.bits_choices())),
                            allow_preview=False, object_fit="contain", height="auto", elem_id="grid-gallery")
    psnr_plot = gr.Plot(elem_id="grid-psnr")
    baseline_gallery = gr.Gallery(label="Teacher and baselines", columns=4, allow_preview=False,
                                  object_fit="contain", height="auto", elem_id="baseline-gallery")

    def draw(grid: ModelGrid, photo: Photo | None):
        """grid_view, the gallery with one column per bit width of this grid."""
        cells, psnrs, baselines = grid_view(grid, photo)
        return gr.Gallery(cells, columns=max(1, len(grid.bits_choices()))), psnrs, baselines

    def select_cell(key: str, current: str, evt: gr.SelectData) -> str:
        return grid_cells(shared.grids.get(key))[evt.index] or current

    def select_baseline(key: str, evt: gr.SelectData) -> str:
        return baseline_ids(shared.grids.get(key))[evt.index]

    # Not redrawn when the student changes: the pictures stay, only the selection moves.
    add_view(shared, tab, draw, [shared.photo], [gs_gallery, psnr_plot, baseline_gallery], follows_student=False)
    add_control(shared, lambda grid, _: header(grid), [intro])
    gs_gallery.select(select_cell, [shared.teacher, shared.student], [shared.student], **UI_EVENT)
    baseline_gallery.select(select_baseline, [shared.teacher], [shared.student], **UI_EVENT)
