"""The studio's pages, one module each; `app.py` puts them in tabs of one Blocks.

Each page module has an `add_*_page(shared)` function that adds its components inside the current tab
and wires its events. Pages talk to each other only through `Shared`: the session's photo and the
selected student, shown in one dropdown above the tabs, so a choice made on any page holds on all.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import plotly.graph_objects as go

from pages.store import ModelGrid


@dataclass(frozen=True)
class Shared:
    grid: ModelGrid
    demo: gr.Blocks
    photo: gr.State  # this session's chosen pages.store.Photo
    student: gr.Dropdown  # the selected model id; its .change is what every page re-renders on


def note_figure(title: str, message: str) -> go.Figure:
    """An empty plot that says why there is nothing to draw, so a page never shows a blank box."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return figure

#: Keyword arguments for every UI event: the pages' events take per-session state, so they are no API for
#: scripts; this keeps them off the API page, which then lists only /stylize and /compare (pages/api.py).
UI_EVENT = {"api_visibility": "undocumented"}
