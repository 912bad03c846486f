"""How long the Compare page takes to show a new student after a slider or bit-width change.

Calls the page's handlers directly (what a slider move runs on the server: pick the student, stylize,
diff, card) for a 512 px photo, 40 moves of a seeded random walk over the grid, and reports p50/p95 for

  cold: every move is a cache miss (the result cache is emptied first): one student forward + PSNR/SSIM
        (the first 10 moves only, as each runs a model);
  warm: after the Compare page's background prefetch for the photo has finished, the normal case;
  api:  the same warm moves as /compare calls through gradio_client to the app served on a free port:
        adds uploading and decoding the photo, Gradio's queue and HTTP (the page sends no photo per move);
  browser (with --browser): slider key press to new picture decoded in headless Chromium, timed by the
        page's clock: what a user sees; the browser shares the machine's cores with the server.

With --job, a compression job trains all along (the Compress page's case: a worker process started as app.py
starts it, at its niceness, on the embedded teacher or --job-teacher FILE), and is cancelled at the end; the
report says how many steps it trained meanwhile.

    PYTHONPATH=. .venv/bin/python benchmarks/app_latency.py [--checkpoints DIR] [--json OUT] [--browser] [--job]

Without a real grid, build one with the teacher's width first: tests/app/fake_grid.py /tmp/grid.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
from gradio_client import Client, handle_file
from PIL import Image

import app  # first: sets the environment gradio needs before the pages import it
from gs_core.data.photoset import load_split
from gs_core.jobs import JobQueue, JobSpec
from pages import default_student
from pages.compare import move_controls, photo_view
from pages.store import ModelGrid, load_photo


def photo_512(path: Path):
    """A bundled test photo scaled to 512 px on its longer side (the photo set is stored at 384)."""
    with Image.open(path) as image:
        scale = 512 / max(image.size)
        resized = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)),
                                              Image.Resampling.LANCZOS)
    return load_photo(resized, f"{path.stem}@512")[0]


def random_walk(grid: ModelGrid, moves: int, seed: int = 0) -> list[tuple[float, str]]:
    """(sparsity, bits) after each move: one slider step or another bit width, as a user would."""
    levels, bits = grid.sparsity_levels(), grid.bits_choices()
    rng = random.Random(seed)
    level, width, walk = len(levels) // 2, 0, []
    while len(walk) < moves:
        if rng.random() < 0.7 and len(levels) > 1:
            level = min(max(level + rng.choice((-1, 1)), 0), len(levels) - 1)
        else:
            width = rng.choice([i for i in range(len(bits)) if i != width] or [width])
        walk.append((levels[level], bits[width]))
    return walk


def time_moves(grid: ModelGrid, photo, walk, start: str, clear_cache: bool) -> list[float]:
    """Milliseconds per move, in the handler a slider or radio move runs."""
    times, current = [], start
    for sparsity, bits in walk:
        if clear_cache:
            grid.clear_results(keep=grid.teacher_id)
        began = time.perf_counter()
        current = move_controls(grid, photo, sparsity, bits, current)[0]
        times.append((time.perf_counter() - began) * 1000)
    return times


@contextmanager
def job_running(workspace: Path | None, teacher: str):
    """A compression job training in `workspace`'s worker for as long as the block runs (nothing without a
    workspace); yields a function that reports the job's state and step."""
    if workspace is None:
        yield lambda: None
        return
    queue = JobQueue(workspace)
    app.start_worker(workspace, "local", "cpu")
    job_id = queue.submit(JobSpec(teacher=teacher, steps=100_000))  # far more than the benchmark lasts
    while (status := queue.status(job_id))["phase"] != "training" or status["step"] < 1:
        assert status["state"] in ("queued", "running"), f"the job ended before training: {status}"
        time.sleep(0.5)
    try:
        yield lambda: {key: queue.status(job_id)[key] for key in ("id", "teacher", "state", "phase", "step")}
    finally:
        queue.cancel(job_id)
        while queue.status(job_id)["state"] == "running":  # it stops at its next step; then its folder may go
            time.sleep(0.5)


@contextmanager
def served(grid: ModelGrid, workspace: Path | None = None):
    """The app on a free local port, in this process (so the benchmark can wait for its prefetch)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = app.build_app(grid, workspace)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False)
    try:
        yield demo.local_url
    finally:
        demo.close()


def time_api(url: str, photo_png: Path, walk) -> list[float]:
    """Milliseconds per /compare call through gradio_client, the photo sent each time."""
    client, times = Client(url, verbose=False), []
    for sparsity, bits in walk:
        began = time.perf_counter()
        client.predict(handle_file(str(photo_png)), sparsity, bits, api_name="/compare")
        times.append((time.perf_counter() - began) * 1000)
    return times


#: Installed in the page: stamps (browser clock) of the last key press and of when a new student
#: picture had decoded, so Playwright's own round trips do not count.
STAMP_MOVES_JS = """
() => {
  const box = document.querySelector("#student-image");
  const stamps = window.gsStamps = {pressed: 0, shown: 0, src: box.querySelector("img").src};
  document.addEventListener("keydown", () => { stamps.pressed = performance.now(); }, true);
  new MutationObserver(() => {
    const img = box.querySelector("img");
    if (!img || img.src === stamps.src) return;
    stamps.src = img.src;
    img.decode().then(() => { stamps.shown = performance.now(); }, () => {});
  }).observe(box, {subtree: true, childList: true, attributes: true, attributeFilter: ["src"]});
}
"""


def time_browser(url: str, grid: ModelGrid, photo_png: Path, moves: int) -> list[float]:
    """Milliseconds from a slider key press in headless Chromium to the new student picture, decoded.

    Uploads the photo, waits for its prefetch, then steps the slider right and left in turn.
    """
    # Imported here: only this mode needs Playwright; the browser is the e2e tests'.
    from tests.browser import VIEWPORT, chromium

    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("#student-image img")
        page.locator("#upload input[type=file]").set_input_files(str(photo_png))
        page.wait_for_function("() => document.querySelector('#photo-gallery').innerText.includes('uploaded')")
        time.sleep(1)  # the upload's photo_view has queued the prefetch by now
        grid.wait_for_prefetch()
        page.evaluate(STAMP_MOVES_JS)
        slider, times = page.locator("#sparsity input[type=range]"), []
        at_top = float(slider.input_value()) >= grid.sparsity_levels()[-1]
        for move in range(moves):
            slider.focus()
            slider.press("ArrowLeft" if (move % 2 == 0) == at_top else "ArrowRight")
            page.wait_for_function("() => window.gsStamps.shown > window.gsStamps.pressed")
            times.append(page.evaluate("() => window.gsStamps.shown - window.gsStamps.pressed"))
    return times


def summary(times: list[float]) -> dict:
    if not times:  # e.g. --cold-moves 0
        return {"n": 0}
    return {"n": len(times), "p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "max_ms": float(max(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", help="grid folder (default: as app.py)")
    parser.add_argument("--moves", type=int, default=40)
    parser.add_argument("--cold-moves", type=int, default=10,
                        help="cold moves run a model each; fewer keep the benchmark short on 2 cores")
    parser.add_argument("--browser", action="store_true",
                        help="also time slider moves end to end in headless Chromium (/usr/bin/chromium)")
    parser.add_argument("--job", action="store_true", help="time everything while a compression job trains")
    parser.add_argument("--job-teacher", default="", help="with --job: the job's teacher file (default: embedded)")
    parser.add_argument("--json", type=Path, default=Path("runs/app_latency.json"))
    args = parser.parse_args()
    app.configure_torch()

    began = time.perf_counter()
    try:
        grid = ModelGrid(app.checkpoints_dir(args.checkpoints))
    except (FileNotFoundError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    load_s = time.perf_counter() - began
    stack = ExitStack()
    workspace = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gs-workspace-"))) if args.job else None
    job = stack.enter_context(job_running(workspace, args.job_teacher))
    job_at_start = job()
    photo = photo_512(load_split("test")[0])
    walk = random_walk(grid, args.moves)
    start = default_student(grid)

    cold = time_moves(grid, photo, walk[:args.cold_moves], start, clear_cache=True)
    grid.clear_results()
    began = time.perf_counter()
    photo_view(grid, photo, start)  # what choosing the photo runs; it queues the prefetch
    first_view_ms = (time.perf_counter() - began) * 1000
    grid.wait_for_prefetch()
    prefetch_s = time.perf_counter() - began
    warm = time_moves(grid, photo, walk, start, clear_cache=False)

    report = {"photo": f"{photo.name} {photo.rgb.shape[1]}x{photo.rgb.shape[0]}", "models": len(grid.models),
              "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "load_models_s": load_s, "first_photo_view_ms": first_view_ms, "prefetch_done_s": prefetch_s,
              "cold": summary(cold), "warm": summary(warm)}
    with stack, tempfile.TemporaryDirectory() as folder, served(grid, workspace) as url:
        photo_png = Path(folder) / f"{photo.name}.png"
        Image.fromarray(photo.rgb).save(photo_png)  # lossless: same pixels, same cached results
        report["api"] = summary(time_api(url, photo_png, walk))
        if args.browser:
            report["browser"] = summary(time_browser(url, grid, photo_png, args.moves))
        if job_at_start:
            report["job"] = {"at_start": job_at_start, "at_end": job()}
    print(json.dumps(report, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
