"""GAN Slimming Studio: see what distillation, channel pruning and quantization do to a cartoon generator.

    python app.py [--checkpoints DIR] [--port N] [--host ADDR] [--device auto|cpu|cuda[:N]]

Serves on 127.0.0.1:7860 (or GRADIO_SERVER_PORT) without any network access; the checkpoint grid is read
from DIR, else $GS_CHECKPOINTS, else <repo>/checkpoints. The app only runs models, it never trains.
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

from pages import UI_EVENT, Shared, follow_student  # noqa: E402
from pages.api import add_api  # noqa: E402
from pages.compare import add_compare_page, load_examples  # noqa: E402
from pages.grid import add_grid_page  # noqa: E402
from pages.layers import add_layers_page  # noqa: E402
from pages.pareto import add_pareto_page  # noqa: E402
from pages.store import ModelGrid  # noqa: E402
from pages.training import add_training_page  # noqa: E402

REPO = Path(__file__).resolve().parent
log = logging.getLogger("gs_studio")


def checkpoints_dir(cli_value: str | None = None) -> Path:
    return Path(cli_value or os.environ.get("GS_CHECKPOINTS") or REPO / "checkpoints")


def configure_torch() -> None:
    """Once per process: inference on every core, and no inter-op pool competing with it."""
    torch.set_num_threads(os.cpu_count() or 1)
    torch.set_num_interop_threads(1)


def default_student(grid: ModelGrid) -> str:
    """An 8-bit GS student at the middle sparsity level if there is one: compression is visible, not extreme."""
    levels, bits = grid.sparsity_levels(), grid.bits_choices()
    if levels:
        return grid.pick_gs(levels[len(levels) // 2], "8" if "8" in bits else bits[0])
    others = [m for m in grid.table.index if m != grid.teacher_id]
    return others[0] if others else grid.teacher_id


def build_app(grid: ModelGrid) -> gr.Blocks:
    examples = load_examples()
    with gr.Blocks(title="GAN Slimming Studio", analytics_enabled=False) as demo:
        gr.Markdown("# GAN Slimming Studio\nA cartoon-style generator (the teacher) compressed by GAN Slimming: "
                    "distillation, channel pruning and quantization at once. Pick a student here or on any page.")
        photo = gr.State(examples[0] if examples else None)
        student = gr.Dropdown([(grid.label(m), m) for m in grid.table.index], value=default_student(grid),
                              label="Student (selected on every page)", elem_id="student")
        shared = Shared(grid=grid, demo=demo, photo=photo, student=student, tab=gr.State("compare"))
        with gr.Tabs():
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
        # Pages behind another tab skip redrawing when the student changes (pages.follow_student).
        for tab in (compare_tab, grid_tab, layers_tab, pareto_tab, training_tab):
            tab.select(lambda tab_id=tab.id: tab_id, None, shared.tab, **UI_EVENT)
        follow_student(shared)
        add_api(shared)
    # Each event handler serves two sessions at a time, one per core; different handlers (a slider move,
    # the Grid tab's many models) never wait for each other.
    return demo.queue(default_concurrency_limit=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", help="checkpoint grid folder (with manifest.json)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--device", default="auto", help=f"where the models run: {DEVICE_CHOICES} (default: auto)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    configure_torch()
    started = time.perf_counter()
    try:
        grid = ModelGrid(checkpoints_dir(args.checkpoints), resolve_device(args.device))
    except (FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError
        parser.exit(1, f"error: {err}\n")
    log.info("loaded %d models from %s in %.1f s", len(grid.models), grid.root, time.perf_counter() - started)
    # Uploads are capped well above any camera photo; decompression bombs are refused when decoded.
    build_app(grid).launch(server_name=args.host, server_port=args.port, ssr_mode=False, max_file_size="50mb")


if __name__ == "__main__":
    main()
