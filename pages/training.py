"""Training: the selected model's loss curves and the fraction of channels alive, over training steps, with the step
a delayed quantization started at."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from gs_core.slim.train import TrainConfig
from pages import Shared, add_view, note_figure
from pages.store import ModelGrid

#: History fields drawn as losses, in legend order; whichever a card has are shown.
LOSSES = {"loss": "total", "distill": "distillation", "gan": "GAN (generator)", "d": "discriminator"}


def training_figure(grid: ModelGrid, model_id: str) -> go.Figure:
    train = (grid.cards[model_id].get("training") or {}).get("train")
    quant_start = None
    if train and train.get("quant_delay"):  # a GS student trained in full precision until this step
        quant_start = TrainConfig(steps=train["steps"], quant_delay=train["quant_delay"]).quant_start
    return history_figure(grid.cards[model_id].get("history") or [], f"Training of {model_id}", quant_start,
                          "This model's card has no training history.")


def history_figure(history: list[dict], title: str, quant_start: int | None = None,
                   empty: str = "No training history yet.", steps: int | None = None) -> go.Figure:
    """Loss curves over the logged steps, the fraction of channels alive below them, and a line where the
    quantizers came on (`quant_start`); also the Compress page's live view of a running job, whose x axis spans
    all its `steps` so that the curves show how far it has got."""
    if not history:
        return note_figure(title, empty)
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.08,
                           subplot_titles=("losses", "channels alive"))
    for key, name in LOSSES.items():
        points = [(h["step"], h[key]) for h in history if h.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name), row=1, col=1)
    alive = [(h["step"], h["alive"]) for h in history if h.get("alive") is not None]
    if alive:
        xs, ys = zip(*alive)
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="alive", line_color="black"), row=2, col=1)
    if quant_start is not None:
        line = dict(x=quant_start, line_dash="dot", line_color="grey", col=1)
        figure.add_vline(**line, row=1, annotation_text="quantizers on", annotation_position="top left")
        figure.add_vline(**line, row=2)
    figure.update_yaxes(tickformat=".0%", range=[0, 1.05], row=2, col=1)
    figure.update_xaxes(title_text="step", row=2, col=1)
    if steps:
        figure.update_xaxes(range=[0, steps])
    figure.update_layout(title=title, height=560)
    return figure


def add_training_page(shared: Shared, tab: gr.Tab) -> None:
    gr.Markdown("Curves of the model chosen in the **Student** dropdown above.")
    plot = gr.Plot(elem_id="training-plot")
    add_view(shared, tab, training_figure, [shared.student], [plot])
