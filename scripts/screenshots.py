"""Screenshots of the running app for the README: docs/img/compare.png, layers.png, pareto.png (and compress.png
once the app has a Compress tab).

    .venv/bin/python scripts/screenshots.py [--checkpoints DIR] [--out docs/img]

Starts `app.py` on a free local port exactly as a user would (its own process, the shipped grid, a temporary
workspace holding one quick compression job of the embedded teacher, so the Compress page has a job to show
live), drives it with the browser the tests use (playwright + Debian's chromium, tests/browser.py), and
stops the app again. Nothing goes to the network: the app is served on 127.0.0.1 and chromium runs with its
background traffic off.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.browser import CHROMIUM, MISSING, VIEWPORT, chromium  # noqa: E402  (the browser the tests use)

#: Tab -> the element that shows the tab is drawn, and the file name of its shot.
SHOTS = {"Compare": ("#student-image img", "compare.png"),
         "Layers": ("#layers-survival .js-plotly-plot", "layers.png"),
         "Pareto": ("#pareto-plot .js-plotly-plot", "pareto.png"),
         "Compress": ("#job-start", "compress.png")}  # its tab reads "Compress your model": matched by its start
START_TIMEOUT_S = 180  # loading the shipped grid takes a few seconds; a machine shared with training, longer
JOB_STEPS = 100  # the Compress page's quick choice
LIVE_TIMEOUT_MS = 300_000  # until the job's first live picture; on a loaded machine the shot is taken without it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(checkpoints: Path, workspace: Path, port: int, log: Path) -> subprocess.Popen:
    """`app.py` in its own process, its output in `log`; returns once it answers HTTP (or raises). An empty
    `workspace`, so the shots show no one's jobs and the app's job worker has nothing to train."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with log.open("w") as out:
        app = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--checkpoints", str(checkpoints),
                                "--workspace", str(workspace), "--port", str(port)],
                               cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if app.poll() is not None:
            raise RuntimeError(f"app.py exited with {app.returncode}; its output is in {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                return app
        except OSError:
            time.sleep(1)
    app.terminate()
    raise RuntimeError(f"app.py did not answer within {START_TIMEOUT_S} s; its output is in {log}")


def jobs_command(workspace: Path, *args: str) -> str:
    """`python -m gs_core jobs ARGS --workspace WORKSPACE`; its last line of output."""
    done = subprocess.run([sys.executable, "-m", "gs_core", "jobs", *args, "--workspace", str(workspace)], cwd=REPO,
                          check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def show_job(page) -> None:
    """Choose the queued job on the Compress page and wait for its live view (or give up quietly)."""
    page.locator("#job-chosen input").click()
    page.get_by_role("option").first.click()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.locator("#job-student-image img").wait_for(state="visible", timeout=LIVE_TIMEOUT_MS)
    except PlaywrightTimeout:  # the job has not drawn yet; the page is still worth a shot
        print(f"the job showed no live picture within {LIVE_TIMEOUT_MS // 1000} s; shot taken without it")


def settle(page) -> None:
    """Wait until Gradio has no event running (no progress bar or spinner) and plotly has drawn. (Not playwright's
    "networkidle": Gradio's event stream keeps a connection open.)"""
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar, .wrap.pending')")
    page.wait_for_timeout(800)  # plotly's transitions


def take(page, tab: str, ready: str | None, path: Path) -> bool:
    """Open `tab`, wait for `ready`, and write the page as it shows; False if the app has no such tab."""
    # Gradio draws each tab button twice (the bar and its overflow menu): the visible one is the one to click.
    button = page.get_by_role("tab", name=re.compile(f"^{tab}")).filter(visible=True)
    if button.count() == 0:
        return False
    button.first.click()
    if ready:
        page.locator(ready).first.wait_for(state="visible")
    if tab == "Compress":
        show_job(page)
    settle(page)
    page.screenshot(path=str(path), full_page=True)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", default=str(REPO / "checkpoints"), help="grid folder the app serves")
    parser.add_argument("--out", default=str(REPO / "docs" / "img"), help="where the PNGs go")
    args = parser.parse_args()
    try:
        import playwright  # noqa: F401
    except ImportError:
        sys.exit("error: needs playwright (in requirements.txt: run ./studio.sh test once)")
    if not CHROMIUM.exists():
        sys.exit(f"error: {MISSING}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    workspace = Path(tempfile.mkdtemp(prefix="gs-screenshots-"))
    # One quick job of the embedded teacher, queued before the app starts: the app's worker trains it meanwhile.
    job = jobs_command(workspace, "submit", "--steps", str(JOB_STEPS))
    app = start_app(Path(args.checkpoints), workspace, port, out / "app.log")
    try:
        with chromium() as browser:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#student-image img").wait_for(state="visible")  # the app has drawn its first page
            for tab, (ready, name) in SHOTS.items():
                if take(page, tab, ready, out / name):
                    print(f"wrote {out / name}")
                else:
                    print(f"skipped {name}: the app has no {tab} tab")
    finally:
        jobs_command(workspace, "cancel", job)  # the worker leaves once its queue is empty and the app has gone
        app.terminate()
        app.wait(timeout=30)
        time.sleep(5)
        shutil.rmtree(workspace, ignore_errors=True)
    (out / "app.log").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
