"""Pareto: cost (x) against quality (y) for every model, one series and one Pareto front per method, and the
identity reference (output = the photo itself, no cost) as a horizontal line: what doing nothing scores.

Clicking a point selects that model on every page. Gradio's Plot component reports no click events, so
a few lines of JavaScript listen to plotly's own `plotly_click` and hand the point's model id (its
customdata) to a hidden textbox, whose change the server turns into the shared selection. The Student
dropdown above the tabs does the same without a mouse; the selected model is ringed on the plot.
"""
from __future__ import annotations

from html import escape

import gradio as gr
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from gs_core.grid import METRIC_BACKBONES, fetch_and_remeasure
from pages import UI_EVENT, Shared, add_control, add_view, note_figure
from pages.store import COST_METRICS, QUALITY_METRICS, ModelGrid

AXIS_NAMES = {"macs": "MACs per image", "size_bits": "size (bits)", "latency_ms": "latency (ms)",
              "lpips": "LPIPS vs teacher (lower is better)", "fid": "FID vs teacher (lower is better)",
              "psnr": "PSNR vs teacher, dB (higher is better)", "ssim": "SSIM vs teacher (higher is better)",
              "style_retained": "style retained (1 = teacher, 0 = the photo; higher is better)"}


#: Runs once in the browser on page load; re-hooks whenever Gradio redraws the plot into a new element.
CLICK_TO_SELECT_JS = """
() => {
  const hook = () => {
    const plot = document.querySelector("#pareto-plot .js-plotly-plot");
    if (!plot || !plot.on || plot.dataset.gsClick) return;
    plot.dataset.gsClick = "1";
    plot.on("plotly_click", (event) => {
      const id = event.points.length ? event.points[0].customdata : null;
      const box = document.querySelector("#pareto-click textarea, #pareto-click input");
      if (!id || !box) return;
      box.value = id;
      box.dispatchEvent(new Event("input", {bubbles: true}));
    });
  };
  new MutationObserver(hook).observe(document.body, {childList: true, subtree: true});
}
"""


def pareto_front(points: pd.DataFrame, x: str, y: str, lower_is_better: bool) -> pd.DataFrame:
    """The points no other point beats on both cost (lower x) and quality, sorted by x."""
    sign = 1 if lower_is_better else -1
    ordered = points.assign(_y=sign * points[y]).sort_values([x, "_y"])
    best, keep = float("inf"), []
    for index, value in ordered["_y"].items():
        if value < best:
            best = value
            keep.append(index)
    return ordered.loc[keep].drop(columns="_y")


def available_quality(grid: ModelGrid) -> list[str]:
    return [m for m in QUALITY_METRICS if grid.metric_available(m)]


def missing_note(grid: ModelGrid) -> str:
    """Why each unavailable quality metric is missing, from the cards. Escaped: a reason may hold text in angle
    brackets ("TORCH_HOME=<unset>"), which Markdown would otherwise swallow as an HTML tag."""
    lines = [f"**{m.upper()} is not available**: "
             f"{escape(grid.missing_reason(m) or 'no model in the grid has it').rstrip('.')}."
             for m in QUALITY_METRICS if not grid.metric_available(m)]
    return "\n\n".join(lines)


def needs_backbones(grid: ModelGrid) -> list[str]:
    """The learned metrics (LPIPS, FID) this grid lacks: what fetching their ImageNet weights would fill."""
    return [m for m in METRIC_BACKBONES if not grid.metric_available(m)]


def measure_learned_metrics(grid: ModelGrid, progress: gr.Progress):
    """Fetch the LPIPS / FID weights and measure every model of the grid with them (gs_core.grid
    fetch_and_remeasure; its download and measuring bars show as this event's progress). Returns the status
    line, the y dropdown and the missing-metrics note. Offline, the download fails at once: one line, no change."""
    metrics = needs_backbones(grid)
    if not metrics:
        return "LPIPS and FID are already measured for this grid.", gr.skip(), gr.skip()
    progress(0, desc=f"fetching the weights of {', '.join(m.upper() for m in metrics)}")
    try:
        fetch_and_remeasure(grid.root / grid.table.loc[grid.teacher_id, "path"], grid.root, tuple(metrics),
                            device=grid.device)
    except (RuntimeError, OSError) as err:  # no network, a full disk, a truncated download
        return (f"**Could not measure {' / '.join(m.upper() for m in metrics)}**: {escape(str(err))}",
                gr.skip(), gr.skip())
    grid.refresh_quality()
    measured = [m for m in metrics if grid.metric_available(m)]
    choices = quality_choices(grid)
    return (f"Measured {', '.join(m.upper() for m in measured) or 'nothing'} for {len(grid.table)} models.",
            gr.Dropdown(choices=choices["choices"], value=measured[0] if measured else choices["value"]),
            missing_note(grid))


def pareto_figure(grid: ModelGrid, x: str, y: str, selected: str | None) -> go.Figure:
    title = f"{AXIS_NAMES[y].split(' (')[0]} against {AXIS_NAMES[x].split(' (')[0]}"
    data = grid.table.dropna(subset=[x, y])
    data = data[data[x] > 0]  # the x axis is logarithmic
    if data.empty:
        return note_figure(title, f"No model has both {x} and {y}.")
    figure = go.Figure()
    colors = px.colors.qualitative.Set2
    for i, (method, points) in enumerate(data.groupby("method", sort=False)):
        color = colors[i % len(colors)]
        figure.add_trace(go.Scatter(
            x=points[x], y=points[y], mode="markers", name=method, marker=dict(color=color, size=10),
            customdata=points.index, text=[grid.label(m) for m in points.index],
            hovertemplate="%{text}<br>" + f"{x} %{{x:.4g}}<br>{y} %{{y:.4g}}<extra></extra>"))
        front = pareto_front(points, x, y, QUALITY_METRICS[y])
        if len(front) > 1:
            figure.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", line=dict(color=color, dash="dot"),
                                        name=f"{method} front", hoverinfo="skip", showlegend=False))
    low, high = data[y].min(), data[y].max()
    teacher_cost = grid.table.loc[grid.teacher_id, x]
    identity = grid.identity[y] if grid.identity is not None else None
    if pd.notna(identity):
        low, high = min(low, identity), max(high, identity)
        span = [data[x].min(), max(data[x].max(), teacher_cost if pd.notna(teacher_cost) else 0)]
        figure.add_trace(go.Scatter(x=span, y=[identity] * 2, mode="lines", name="identity (output = the photo)",
                                    line=dict(color="black", dash="dash"), hovertemplate=f"identity: {y} "
                                    f"{identity:.4g}<extra></extra>"))
    if pd.notna(teacher_cost) and teacher_cost > 0:  # the teacher has no quality numbers: show its cost
        figure.add_trace(go.Scatter(x=[teacher_cost] * 2, y=[low, high], mode="lines",
                                    name="teacher's cost", line=dict(color="grey", dash="dash"), hoverinfo="name"))
    if selected in data.index:
        figure.add_trace(go.Scatter(
            x=[data.loc[selected, x]], y=[data.loc[selected, y]], mode="markers", name="selected",
            marker=dict(size=22, color="rgba(0,0,0,0)", line=dict(color="black", width=2)), hoverinfo="skip"))
    sizes = sorted({int(s) for s in grid.table["eval_size"].dropna()})
    measured_at = " and ".join(f"{s}×{s}" for s in sizes)
    x_title = f"{AXIS_NAMES[x]}, at {measured_at}" if x in ("macs", "latency_ms") and sizes else AXIS_NAMES[x]
    # "~s": SI prefixes (200M, 500M, 1G), which a log axis otherwise shows as bare digits.
    figure.update_layout(title=title, xaxis_title=x_title, yaxis_title=AXIS_NAMES[y], xaxis_type="log",
                         xaxis_tickformat="~s", hovermode="closest")
    return figure


def quality_choices(grid: ModelGrid) -> dict:
    quality = available_quality(grid)
    return dict(choices=[(AXIS_NAMES[m], m) for m in quality], value=quality[0] if quality else None)


def add_pareto_page(shared: Shared, tab: gr.Tab) -> None:
    with gr.Row():
        x = gr.Dropdown([(AXIS_NAMES[m], m) for m in COST_METRICS], value="macs", label="x: cost", elem_id="pareto-x")
        y = gr.Dropdown(**quality_choices(shared.grid), label="y: quality", elem_id="pareto-y")
    note = gr.Markdown(missing_note(shared.grid), elem_id="pareto-missing")
    with gr.Row():
        measure = gr.Button("Fetch the LPIPS / FID weights and measure the grid (needs internet)", size="sm",
                            scale=0, min_width=480, visible=bool(needs_backbones(shared.grid)), elem_id="pareto-measure")
    status = gr.Markdown(elem_id="pareto-measure-status")
    gr.Markdown("Hover a point to see its model; click it (or choose it in the **Student** dropdown above) "
                "to select it on every page.")
    plot = gr.Plot(elem_id="pareto-plot")
    clicked = gr.Textbox(visible="hidden", elem_id="pareto-click")

    def draw(grid: ModelGrid, x_metric: str, y_metric: str | None, selected: str) -> go.Figure:
        if y_metric is None:
            return note_figure("Pareto", "No quality metric is available for this grid.")
        return pareto_figure(grid, x_metric, y_metric, selected)

    def select(grid: ModelGrid, model_id: str):
        """The clicked id becomes the selection; the box is emptied so clicking the same point again works."""
        if model_id not in grid.models:
            return gr.skip(), gr.skip()
        return model_id, ""

    add_view(shared, tab, draw, [x, y, shared.student], [plot])
    add_control(shared, lambda grid, _: (gr.Dropdown(**quality_choices(grid)), missing_note(grid)), [y, note])
    gr.on([x.change, y.change], shared.bind(draw), [shared.teacher, x, y, shared.student], plot, **UI_EVENT)
    shared.demo.load(None, js=CLICK_TO_SELECT_JS, **UI_EVENT)
    clicked.change(shared.bind(select), [shared.teacher, clicked], [shared.student, clicked], **UI_EVENT)
    add_control(shared, lambda grid, _: (gr.Button(visible=bool(needs_backbones(grid))), ""), [measure, status])

    def measure_grid(key: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio asks for a bar)
        """Not `shared.bind`: Gradio finds the progress bar in the handler's own signature."""
        return measure_learned_metrics(shared.grids.get(key), progress)

    measure.click(measure_grid, [shared.teacher], [status, y, note], concurrency_limit=1, **UI_EVENT)
