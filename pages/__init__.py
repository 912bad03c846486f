"""The studio's pages, one module each; `app.py` puts them in tabs of one Blocks.

Each page module has an `add_*_page(shared)` function that adds its components inside the current tab
and wires its events. Pages talk to each other only through `Shared`: the session's photo and the
selected student, shown in one dropdown above the tabs, so a choice made on any page holds on all.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pages.store import ModelGrid


@dataclass(frozen=True)
class Shared:
    grid: ModelGrid
    demo: gr.Blocks
    photo: gr.State  # this session's chosen pages.store.Photo
    student: gr.Dropdown  # the selected model id; its .change is what every page re-renders on
