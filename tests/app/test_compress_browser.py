"""End to end in headless Chromium: two people upload a generator and start a job at once on the Compress page;
both jobs run, in turn, with a live view; the new student is then opened on the Compare page, its teacher
chosen in the selector above the tabs. Tiny teacher, the quick preset's few steps."""
from __future__ import annotations

import re

import pytest

from tests.browser import VIEWPORT

pytestmark = pytest.mark.timeout(420)


def _open_compress(browser, url: str):
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#student-image img")
    page.get_by_role("tab", name="Compress your model").click()
    return page


def _caption(page) -> str:
    return page.locator("#job-caption").inner_text()


def test_two_people_compress_at_once_and_the_student_opens_on_compare(browser, job_server, tiny_teacher_file):
    url, workspace = job_server
    pages = [_open_compress(browser, url) for _ in range(2)]
    for page in pages:
        assert "Found" in page.locator("#teacher-found").inner_text()  # the embedded teacher, before any upload
        page.locator("#teacher-file input[type=file]").set_input_files(str(tiny_teacher_file))
        page.wait_for_function("() => document.querySelector('#teacher-found').innerText.includes('tiny toon.pth')")
        assert "cartoongan" in page.locator("#teacher-found").inner_text()
    for page in pages:  # both click Start before either job has finished
        page.locator("#job-start").click()
    job_ids = []
    for page in pages:
        page.wait_for_function("() => document.querySelector('#job-estimate-note').innerText.includes('Queued')")
        job_ids.append(re.search(r"Queued (\S+)\.", page.locator("#job-estimate-note").inner_text()).group(1))
    assert job_ids[0] != job_ids[1]
    for page, job_id in zip(pages, job_ids):  # the live view (timer) follows each page's own job to its end
        page.wait_for_function(f"() => document.querySelector('#job-caption').innerText.includes('{job_id}')"
                               " && document.querySelector('#job-caption').innerText.includes('Done')",
                               timeout=300_000)
        # The caption and the pictures come in one update; an image is shown once it has loaded.
        page.locator("#job-student-image img").wait_for(state="visible")
        page.locator("#job-losses .js-plotly-plot").wait_for(state="visible")
    page = pages[0]
    page.bring_to_front()  # a tab in the background may run its timer late
    page.wait_for_function("() => (document.querySelector('#jobs-table').innerText.match(/\\bdone\\b/g) || [])"
                           ".length >= 2")
    assert all(job_id in page.locator("#jobs-table").inner_text() for job_id in job_ids)
    model = re.search(r"student (\S+/\S+) is in", _caption(page)).group(1)
    page.locator("#job-open").click()
    key, point = model.split("/")
    page.wait_for_function(f"() => document.querySelector('#student-card').innerText.includes('{point}')")
    assert page.get_by_role("tab", name="Compare").get_attribute("aria-selected") == "true"
    assert key in page.locator("#teacher input").input_value()
    assert point in page.locator("#student input").input_value()
    page.locator("#student-image img").wait_for(state="visible")
    # The slider now snaps to the new grid's levels: the page's default target, 0.85 (the fixture grid has 0.25
    # and 0.5; the API test, when it ran first, added a 0.5 student of the same tiny teacher).
    levels = re.search(r"trained levels: ([\d., ]+)", page.locator("#sparsity").inner_text()).group(1)
    assert "0.85" in levels and "0.25" not in levels
    page.locator("#export-onnx").click()  # the new student exports like the shipped ones
    page.wait_for_function(f"() => document.querySelector('#onnx-file').innerText.includes('{point}')")
    # Back to the shipped grid with the selector: its students are offered again.
    page.locator("#teacher input").click()
    page.get_by_role("option", name=re.compile("^Shipped grid")).click()
    page.wait_for_function("() => document.querySelector('#student input').value.startsWith('gs-s0.5-b8')")
    assert (workspace / "teachers" / key / "grid" / point).is_dir()
