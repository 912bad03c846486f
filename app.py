"""GAN Slimming Studio: see what distillation, channel pruning and quantization do to a cartoon generator,
and compress your own.

    python app.py [--checkpoints DIR] [--workspace DIR] [--backend local|ray] [--port N] [--host ADDR]
                  [--device auto|cpu|cuda[:N]]

Serves on 127.0.0.1:7860 (or GRADIO_SERVER_PORT) without any network access; the shipped checkpoint grid is
read from DIR, else $GS_CHECKPOINTS, else <repo>/checkpoints, and never written. (One exception to both, only
when pressed: the Pareto page's button that fetches the LPIPS / FID weights and adds those metrics to the cards
of the grid on screen.) Compression jobs, their uploads and the grids of their teachers live in the workspace
(default <repo>/workspace, git-ignored); they train in a worker process (gs_core.jobs) that the app starts, never
in the web process, and that outlives it: restarted on the same workspace, the app finds its jobs finished or
resumes them.
"""
from __future__ import annotations

import os

# Gradio reads this when it is imported, so it must be set before any import of gradio (pages import it).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from gs_core.device import DEVICE_CHOICES, resolve_device  # noqa: E402
from gs_core.grid import PRESETS  # noqa: E402
from gs_core.jobs import ensure_worker, teacher_grids  # noqa: E402

from pages import UI_EVENT, Shared, default_student, follow_student, student_choices  # noqa: E402
from pages.api import add_api  # noqa: E402
from pages.compare import add_compare_page, load_examples  # noqa: E402
from pages.compress import add_compress_page  # noqa: E402
from pages.grid import add_grid_page  # noqa: E402
from pages.layers import add_layers_page  # noqa: E402
from pages.pareto import add_pareto_page  # noqa: E402
from pages.store import SHIPPED, GridRegistry, ModelGrid  # noqa: E402
from pages.training import add_training_page  # noqa: E402

REPO = Path(__file__).resolve().parent
DEFAULT_WORKSPACE = REPO / "workspace"
#: The worker trains this much nicer than the app: the pages' events come first (slider-to-picture p95 with a
#: job running, benchmarks/app_latency.py --job).
WORKER_NICE = 10
log = logging.getLogger("gs_studio")


def checkpoints_dir(cli_value: str | None = None) -> Path:
    return Path(cli_value or os.environ.get("GS_CHECKPOINTS") or REPO / "checkpoints")


def configure_torch() -> None:
    """Once per process: inference on every core, and no inter-op pool competing with it."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.set_num_interop_threads(1)


def build_app(grid: ModelGrid, workspace: Path | None = None, job_preset: str = "default") -> gr.Blocks:
    """The studio on the shipped `grid`; with a `workspace`, also its teachers' grids and the Compress page,
    whose jobs follow the grid preset `job_preset` and run once a worker serves the workspace
    (`gs_core.jobs.ensure_worker`)."""
    grids = GridRegistry(grid, (lambda: teacher_grids(workspace)) if workspace else dict)
    examples = load_examples()
    with gr.Blocks(title="GAN Slimming Studio", analytics_enabled=False) as demo:
        gr.Markdown("# GAN Slimming Studio\nA cartoon-style generator (the teacher) compressed by GAN Slimming: "
                    "distillation, channel pruning and quantization at once. Pick a student here or on any page.")
        photo = gr.State(examples[0] if examples else None)
        with gr.Row():
            teacher = gr.Dropdown(grids.choices(), value=SHIPPED, label="Teacher (its grid is shown on every page)",
                                  elem_id="teacher", scale=1)
            # Custom values allowed: when the grid changes, the browser may send one change with the old grid's
            # student before it takes in the new choices; pages.follow_student skips it instead of failing.
            student = gr.Dropdown(student_choices(grid), value=default_student(grid), allow_custom_value=True,
                                  label="Student (selected on every page)", elem_id="student", scale=2)
        on_screen = gr.State("compare")
        with gr.Tabs() as tabs:  # nothing but tabs may be created in here
            shared = Shared(grids=grids, demo=demo, photo=photo, teacher=teacher, student=student,
                            tab=on_screen, tabs=tabs)
            with gr.Tab("Compare", id="compare") as compare_tab:
                add_compare_page(shared, compare_tab, examples)
            with gr.Tab("Grid", id="grid") as grid_tab:
                add_grid_page(shared, grid_tab)
            with gr.Tab("Layers", id="layers") as layers_tab:
                add_layers_page(shared, layers_tab)
            with gr.Tab("Pareto", id="pareto") as pareto_tab:
                add_pareto_page(shared, pareto_tab)
            with gr.Tab("Training", id="training") as training_tab:
                add_training_page(shared, training_tab)
            with gr.Tab("Compress your model", id="compress", visible=workspace is not None) as compress_tab:
                if workspace is not None:
                    add_compress_page(shared, compress_tab, Path(workspace), job_preset)
        # Pages behind another tab skip redrawing when the student changes (pages.follow_student).
        for tab in (compare_tab, grid_tab, layers_tab, pareto_tab, training_tab, compress_tab):
            tab.select(lambda tab_id=tab.id: tab_id, None, shared.tab, **UI_EVENT)
        follow_student(shared)
        add_api(shared, workspace, job_preset)
    # Each event handler serves two sessions at a time, one per core; different handlers (a slider move,
    # the Grid tab's many models) never wait for each other.
    return demo.queue(default_concurrency_limit=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", help="checkpoint grid folder (with manifest.json)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default="auto", help=f"where the models run: {DEVICE_CHOICES} (default: auto)")
    parser.add_argument("--workspace", type=Path, default=DEFAULT_WORKSPACE,
                        help="compression jobs and their teachers' grids (default: <repo>/workspace)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local",
                        help="where the jobs train: a local worker process, or Ray tasks as the grid's points")
    parser.add_argument("--job-preset", default="default", choices=list(PRESETS),
                        help="the grid recipe users' jobs follow (quick: seconds on a tiny teacher, for trying it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure_torch()
    started = time.perf_counter()
    try:
        grid = ModelGrid(checkpoints_dir(args.checkpoints), resolve_device(args.device))
    except (FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError
        parser.exit(1, f"error: {err}\n")
    log.info("loaded %d models from %s in %.1f s", len(grid.models), grid.root, time.perf_counter() - started)
    start_worker(args.workspace, args.backend, str(grid.device))
    # Uploads are capped at the largest teacher file the jobs accept (gs_core.jobs.MAX_TEACHER_BYTES);
    # decompression bombs are refused when decoded, zip bombs before they are unpacked (pages/compress.py).
    demo = build_app(grid, args.workspace, args.job_preset)
    demo.launch(server_name=args.host, server_port=args.port, ssr_mode=False, max_file_size="1gb")


def start_worker(workspace: Path, backend: str, device: str) -> None:
    """Start the workspace's worker unless one serves it, so queued and interrupted jobs run; at a lower
    priority than this process, set before its training threads start (they inherit it)."""
    worker = ensure_worker(workspace, backend, device)
    if worker is not None:
        os.setpriority(os.PRIO_PROCESS, worker.pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICE))
        log.info("started the jobs worker (pid %d) for %s", worker.pid, workspace)


if __name__ == "__main__":
    main()
