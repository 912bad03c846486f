"""The studio's pages, one module each; `app.py` puts them in tabs of one Blocks.

Each page module has an `add_*_page(shared, tab, ...)` function that adds its components inside its tab
and wires its events. Pages talk to each other only through `Shared`: the session's photo, the grid it
shows (the teacher selector: the shipped grid or one of the user's teachers) and the selected student of
that grid, in two dropdowns above the tabs, so a choice made on any page holds on all.
What a page draws from the grid and student is a `View`: drawn when its tab is opened, and redrawn by one
shared event when the student (or the grid) changes while the tab is on screen. What a page builds from
the grid itself (a slider's levels, a dropdown's choices) is a `Control`, redrawn when the grid changes.
Handlers get the session's grid as their first argument (`Shared.bind`); the pages are built with the
shipped grid's values (`Shared.grid`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gradio as gr
import plotly.graph_objects as go

from pages.store import SHIPPED, GridRegistry, ModelGrid

#: Keyword arguments for every UI event: the pages' events take per-session state, so they are no API for
#: scripts; this keeps them off the API page, which then lists only the endpoints of pages/api.py.
UI_EVENT = {"api_visibility": "undocumented"}


@dataclass(frozen=True)
class View:
    """Something a page draws from the session's grid: `draw(grid, *inputs)` gives `outputs`' values."""

    tab: str
    draw: Callable
    inputs: list
    outputs: list
    follows_student: bool = True

    def skip(self) -> tuple:
        return (gr.skip(),) * len(self.outputs)

    def values(self, grid: ModelGrid, *inputs) -> tuple:
        drawn = self.draw(grid, *inputs)
        return drawn if len(self.outputs) > 1 else (drawn,)


@dataclass(frozen=True)
class Control:
    """Components a page builds from the grid: `draw(grid, student id)` gives `outputs`' values for a new grid."""

    draw: Callable
    outputs: list

    def values(self, grid: ModelGrid, student_id: str) -> tuple:
        drawn = self.draw(grid, student_id)
        return drawn if len(self.outputs) > 1 else (drawn,)


@dataclass(frozen=True)
class Opener:
    """An event that shows a model of any grid on the Compare tab: `pick(*inputs)` gives "<grid key>/<model id>"."""

    trigger: Callable  # e.g. a button's .click
    pick: Callable
    inputs: list


@dataclass(frozen=True)
class Shared:
    grids: GridRegistry
    demo: gr.Blocks
    photo: gr.State  # this session's chosen pages.store.Photo
    teacher: gr.Dropdown  # key of the grid this session shows
    student: gr.Dropdown  # the selected model id of that grid, which every view follows
    tab: gr.State  # id of the tab on screen in this session
    tabs: gr.Tabs
    views: list[View] = field(default_factory=list)  # filled while the pages are built
    controls: list[Control] = field(default_factory=list)
    openers: list[Opener] = field(default_factory=list)

    @property
    def grid(self) -> ModelGrid:
        """The grid the pages are built with: the shipped one, which every session starts on."""
        return self.grids.shipped

    def bind(self, handler: Callable) -> Callable:
        """`handler(grid, *values)` as an event handler whose first input is `self.teacher` (the grid's key)."""
        return lambda key, *values: handler(self.grids.get(key), *values)


def default_student(grid: ModelGrid) -> str:
    """An 8-bit GS student at the middle sparsity level if there is one: compression is visible, not extreme."""
    levels, bits = grid.sparsity_levels(), grid.bits_choices()
    if levels:
        return grid.pick_gs(levels[len(levels) // 2], "8" if "8" in bits else bits[0])
    others = [m for m in grid.table.index if m != grid.teacher_id]
    return others[0] if others else grid.teacher_id


def student_choices(grid: ModelGrid) -> list[tuple[str, str]]:
    return [(grid.label(m), m) for m in grid.table.index]


def add_view(shared: Shared, tab: gr.Tab, draw: Callable, inputs: Sequence, outputs: Sequence,
             follows_student: bool = True) -> None:
    """Draw `draw(grid, *inputs)` into `outputs` when `tab` is opened, and when the grid changes while it is;
    with `follows_student`, also when the student changes while it is."""
    view = View(tab.id, draw, list(inputs), list(outputs), follows_student)
    tab.select(shared.bind(draw), [shared.teacher, *view.inputs], view.outputs, **UI_EVENT)
    shared.views.append(view)


def add_control(shared: Shared, draw: Callable, outputs: Sequence) -> None:
    shared.controls.append(Control(draw, list(outputs)))


def add_opener(shared: Shared, trigger: Callable, pick: Callable, inputs: Sequence) -> None:
    shared.openers.append(Opener(trigger, pick, list(inputs)))


def _draw_views(grid: ModelGrid, views: list[View], on_screen: str, values: Sequence, new: dict) -> list:
    """The views' outputs: the one on screen drawn, the others skipped. `values` are the views' inputs in order;
    `new` maps a component's id to a value this very event sets, which the views read instead."""
    drawn, start = [], 0
    for view in views:
        inputs, start = values[start:start + len(view.inputs)], start + len(view.inputs)
        if view.tab == on_screen:
            inputs = [new.get(c._id, value) for c, value in zip(view.inputs, inputs)]
            drawn += view.values(grid, *inputs)
        else:
            drawn += view.skip()
    return drawn


def follow_student(shared: Shared) -> None:
    """Wire the shared events, once every page is built.

    A student change redraws the view on screen, in one event for all views rather than one per page: a
    slider move changes the student, and each extra event is a round trip through Gradio's queue on the same
    two cores that must show the new picture (measured: p95 of a slider move from about 380 ms to about 260 ms
    in benchmarks/app_latency.py --browser). A grid change (the teacher selector, or a page asking to show a
    model through an opener) sets the student dropdown's choices, the pages' controls and the view on screen in
    one event too, so the views read the new controls' values (a grid whose student has the same id as the
    old one's still redraws). An opener (`add_opener`) does the same for the model it picks, and brings the
    Compare tab to the front, in one event whose inputs are all read at the click.
    """
    student_views = [v for v in shared.views if v.follows_student]
    student_inputs = [c for v in student_views for c in v.inputs]

    def redraw(on_screen: str, key: str, student: str, *values):
        grid = shared.grids.get(key)
        if student not in grid.models:  # a change the browser sent while it took in another grid: the
            return [c for v in student_views for c in v.skip()]  # change that follows draws the new one
        return _draw_views(grid, student_views, on_screen, values, {})

    shared.student.change(redraw, [shared.tab, shared.teacher, shared.student, *student_inputs],
                          [c for v in student_views for c in v.outputs], trigger_mode="always_last", **UI_EVENT)

    views, controls = list(shared.views), list(shared.controls)
    view_inputs = [c for v in views for c in v.inputs]
    outputs = [shared.teacher, shared.student, *(c for k in controls for c in k.outputs),
               *(c for v in views for c in v.outputs)]

    def show(key: str, model_id: str | None, on_screen: str, values) -> list:
        grid = shared.grids.get(key)
        student = model_id if model_id in grid.models else default_student(grid)
        new = {shared.student._id: student}
        drawn = []
        for control in controls:
            control_values = control.values(grid, student)
            new.update((c._id, v) for c, v in zip(control.outputs, control_values))
            drawn += control_values
        return [gr.Dropdown(choices=shared.grids.choices(), value=key),
                gr.Dropdown(choices=student_choices(grid), value=student), *drawn,
                *_draw_views(grid, views, on_screen, values, new)]

    def choose_teacher(key: str, on_screen: str, *values):
        return show(key, None, on_screen, values)

    def opener(pick: Callable, count: int) -> Callable:
        def go(*values):
            key, _, model_id = pick(*values[:count]).rpartition("/")
            return [*show(key or SHIPPED, model_id, "compare", values[count:]), gr.Tabs(selected="compare"),
                    "compare"]
        return go

    shared.teacher.input(choose_teacher, [shared.teacher, shared.tab, *view_inputs], outputs,
                         trigger_mode="always_last", **UI_EVENT)
    for each in shared.openers:
        each.trigger(opener(each.pick, len(each.inputs)), [*each.inputs, *view_inputs],
                     [*outputs, shared.tabs, shared.tab], **UI_EVENT)
    # The user's teachers appear in the selector as their first job finishes: listed again on every page load
    # and whenever the selector is opened.
    refresh = lambda: gr.Dropdown(choices=shared.grids.choices())  # noqa: E731
    shared.demo.load(refresh, None, shared.teacher, **UI_EVENT)
    shared.teacher.focus(refresh, None, shared.teacher, **UI_EVENT)


def note_figure(title: str, message: str) -> go.Figure:
    """An empty plot that says why there is nothing to draw, so a page never shows a blank box."""
    figure = go.Figure()
    figure.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(title=title, xaxis_visible=False, yaxis_visible=False)
    return figure
