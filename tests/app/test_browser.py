"""End to end in headless Chromium: upload a photo, move the slider, open every tab."""
from __future__ import annotations

import re

import pytest

from gs_core.data.photoset import load_split
from tests.browser import VIEWPORT

#: Each tab and the element id of the plot it must show.
TAB_PLOTS = {"Grid": "grid-psnr", "Layers": "layers-survival", "Pareto": "pareto-plot",
             "Training": "training-plot", "Compare": None}

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def page(browser, server):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(30_000)
    page.goto(server)
    yield page
    page.close()


def _src(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} img").first.get_attribute("src") or ""


def _wait_for_new_src(page, elem_id: str, old: str) -> str:
    page.wait_for_function(
        "([id, old]) => { const img = document.querySelector(`#${id} img`); return img && img.src && img.src !== old }",
        arg=[elem_id, old])
    return _src(page, elem_id)


def test_upload_slide_and_visit_every_tab(page):
    page.wait_for_selector("#student-image img")
    teacher_before = _src(page, "teacher-image")

    # Upload a photo other than the default one: the teacher image must follow it.
    page.locator("#upload input[type=file]").set_input_files(str(load_split("test")[1]))
    _wait_for_new_src(page, "teacher-image", teacher_before)
    student_before = _src(page, "student-image")

    # The fixture grid has levels 25% and 50% and starts at 50% / 8-bit: one keyboard step left is the
    # 25% student, another picture.
    slider = page.locator("#sparsity input[type=range]")
    slider.focus()
    slider.press("ArrowLeft")
    _wait_for_new_src(page, "student-image", student_before)
    assert "gs-s0.25-b8" in page.locator("#student-card").inner_text()

    for tab, plot_id in TAB_PLOTS.items():
        page.get_by_role("tab", name=tab).click()
        if plot_id:
            page.locator(f"#{plot_id} .js-plotly-plot").wait_for(state="visible")
    assert page.locator("#student-image img").is_visible()


def test_clicking_a_pareto_point_selects_it_on_every_page(page):
    page.get_by_role("tab", name="Pareto").click()
    page.locator("#pareto-plot .js-plotly-plot").wait_for(state="visible")
    # Plotly draws one .trace group per data trace, in order: find the single distillation baseline.
    series = page.evaluate("() => document.querySelector('#pareto-plot .js-plotly-plot').data"
                           ".findIndex(trace => trace.name === 'distill')")
    point = page.locator("#pareto-plot .scatterlayer .trace").nth(series).locator(".points path").first
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)  # plotly decides what was clicked from the hover that precedes the click
    page.mouse.click(x, y)
    page.wait_for_function("() => document.querySelector('#student input').value.startsWith('distill-s0.5-b32')")
    page.get_by_role("tab", name="Compare").click()
    page.wait_for_function("() => document.querySelector('#student-card').innerText.includes('distill-s0.5-b32')")


def test_choosing_a_student_redraws_the_page_on_screen(page):
    page.get_by_role("tab", name="Training").click()
    title = page.locator("#training-plot .gtitle")
    title.wait_for()
    page.locator("#student input").click()
    page.get_by_role("option", name=re.compile("^prune-")).click()
    page.wait_for_function("() => document.querySelector('#training-plot .gtitle').textContent.includes('prune')")
