"""Layers: where the selected student lost its channels and bits, and how that varies across the grid."""
from __future__ import annotations

import gradio as gr
import plotly.graph_objects as go

from pages import Shared, add_view, note_figure
from pages.store import ModelGrid


def survival_figure(grid: ModelGrid, model_id: str) -> go.Figure:
    """Output channels kept vs pruned, per conv, as stacked horizontal bars: a generator has 20 or more convs,
    whose names stay readable on the y axis where, under vertical bars, they overlapped."""
    channels = grid.layer_channels(model_id)
    names = list(channels)
    kept = [channels[n][0] for n in names]
    pruned = [channels[n][1] - channels[n][0] for n in names]
    figure = go.Figure([go.Bar(name="kept", y=names, x=kept, orientation="h", marker_color="#2a9d8f"),
                        go.Bar(name="pruned", y=names, x=pruned, orientation="h", marker_color="#e0e0e0")])
    figure.update_layout(barmode="stack", title=f"Channel survival per layer: {model_id}",
                         xaxis_title="output channels", yaxis_autorange="reversed", yaxis_dtick=1,
                         height=max(450, 22 * len(names) + 160), legend_orientation="h")
    return figure


def heatmap_figure(grid: ModelGrid, bits: str) -> go.Figure:
    """Fraction of each channel group kept, for every GS student with `bits` (columns: sparsity levels)."""
    students = grid.gs[grid.gs["bits_label"] == bits].sort_values("sparsity_target")
    plans = {mid: (grid.cards[mid].get("plan") or {}).get("groups") for mid in students.index}
    plans = {mid: groups for mid, groups in plans.items() if groups}
    title = f"Fraction of channels kept per group, {bits}-bit GS students"
    if not plans:
        return note_figure(title, f"No {bits}-bit GS student in the grid has a pruning plan.")
    groups = list(next(iter(plans.values())))
    columns = [f"{float(students.loc[mid, 'sparsity_target']):.0%}" for mid in plans]
    z = [[kept / total if total else 1.0 for kept, total in (plans[mid].get(g, (1, 1)) for mid in plans)]
         for g in groups]
    figure = go.Figure(go.Heatmap(z=z, x=columns, y=groups, zmin=0, zmax=1, colorscale="Viridis",
                                  text=[[f"{v:.0%}" for v in row] for row in z], texttemplate="%{text}",
                                  hovertemplate="group %{y}<br>sparsity %{x}<br>kept %{z:.0%}<extra></extra>"))
    figure.update_layout(title=title, xaxis_title="sparsity target", yaxis_autorange="reversed")
    return figure


def gamma_figure(grid: ModelGrid, model_id: str) -> go.Figure:
    """Distribution of each gate's channel scale factors (gamma) before extraction."""
    gammas = grid.cards[model_id].get("gammas")
    title = f"Channel scale factors (gamma) per gate: {model_id}"
    if not gammas:
        return note_figure(title, "This model has no gammas: only GS students train channel gates.")
    figure = go.Figure([go.Box(y=[abs(v) for v in values], name=gate, boxpoints="all", jitter=0.4,
                               pointpos=0, marker_size=3) for gate, values in gammas.items()])
    figure.update_layout(title=title, yaxis_title="|gamma|", showlegend=False)
    return figure


def bits_figure(grid: ModelGrid, model_id: str) -> go.Figure:
    bits = grid.layer_bits(model_id)
    figure = go.Figure(go.Bar(x=list(bits), y=list(bits.values()), marker_color="#e76f51",
                              text=list(bits.values()), textposition="outside"))
    figure.update_layout(title=f"Weight bits per conv: {model_id}", yaxis_title="bits",
                         yaxis_range=[0, max(bits.values()) * 1.15])
    return figure


def layer_figures(grid: ModelGrid, model_id: str):
    """The four plots; the heatmap uses the student's bit width (the widest one for a non-GS model)."""
    bits = grid.table.loc[model_id, "bits_label"]
    if bits not in grid.bits_choices():
        bits = next(iter(grid.bits_choices()), bits)
    return (survival_figure(grid, model_id), heatmap_figure(grid, bits),
            gamma_figure(grid, model_id), bits_figure(grid, model_id))


def add_layers_page(shared: Shared, tab: gr.Tab) -> None:
    gr.Markdown("The selected student's channels and bits per layer. The heatmap compares all GS students "
                "with the same weight bits, from the least to the most pruned.")
    with gr.Row():
        survival = gr.Plot(elem_id="layers-survival")
        heatmap = gr.Plot(elem_id="layers-heatmap")
    with gr.Row():
        gammas = gr.Plot(elem_id="layers-gammas")
        bits = gr.Plot(elem_id="layers-bits")
    add_view(shared, tab, layer_figures, [shared.student], [survival, heatmap, gammas, bits])
