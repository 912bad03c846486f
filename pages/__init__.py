"""The studio's pages, one module each; `app.py` puts them in tabs of one Blocks.

Each page module has an `add_*_page(shared, tab, ...)` function that adds its components inside its tab
and wires its events. Pages talk to each other only through `Shared`: the session's photo and the
selected student, shown in one dropdown above the tabs, so a choice made on any page holds on all.
What a page draws from the selected student is a `View`: drawn when its tab is opened, and redrawn by
one shared event when the student changes while the tab is on screen.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gradio as gr
import plotly.graph_objects as go

from pages.store import ModelGrid

#: Keyword arguments for every UI event: the pages' events take per-session state, so they are no API for
#: scripts; this keeps them off the API page, which then lists only /stylize and /compare (pages/api.py).
UI_EVENT = {"api_visibility": "undocumented"}


@dataclass(frozen=True)
class View:
    """Something a page draws from the selected student: `draw(*inputs)` gives `outputs`' values."""

    tab: str
    draw: Callable
    inputs: list
    outputs: list

    def skip(self) -> tuple:
        return (gr.skip(),) * len(self.outputs)

    def values(self, *inputs) -> tuple:
        drawn = self.draw(*inputs)
        return drawn if len(self.outputs) > 1 else (drawn,)


@dataclass(frozen=True)
class Shared:
    grid: ModelGrid
    demo: gr.Blocks
    photo: gr.State  # this session's chosen pages.store.Photo
    student: gr.Dropdown  # the selected model id, which every view follows
    tab: gr.State  # id of the tab on screen in this session
    views: list[View] = field(default_factory=list)  # filled while the pages are built


def add_view(shared: Shared, tab: gr.Tab, draw: Callable, inputs: Sequence, outputs: Sequence) -> None:
    """Draw `draw(*inputs)` into `outputs` when `tab` is opened, and when the student changes while it is."""
    view = View(tab.id, draw, list(inputs), list(outputs))
    tab.select(draw, view.inputs, view.outputs, **UI_EVENT)
    shared.views.append(view)


def follow_student(shared: Shared) -> None:
    """One event for all views when the student changes: the view on screen redraws, the others skip.

    One event rather than one per page: a slider move changes the student, and each extra event is a
    round trip through Gradio's queue on the same two cores that must show the new picture (measured:
    p95 of a slider move from about 380 ms to about 260 ms in benchmarks/app_latency.py --browser).
    """
    views = list(shared.views)

    def redraw(on_screen: str, *values):
        drawn, start = [], 0
        for view in views:
            inputs, start = values[start:start + len(view.inputs)], start + len(view.inputs)
            drawn += view.values(*inputs) if view.tab == on_screen else view.skip()
        return drawn

    shared.student.change(redraw, [shared.tab, *(c for v in views for c in v.inputs)],
                          [c for v in views for c in v.outputs], trigger_mode="always_last", **UI_EVENT)


def note_figure(title: str, message: str) -> go.Figure:
    """An empty plot that says why there is nothing to draw, so a page never shows a blank box."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return figure
