"""Fixtures: a tiny checkpoint grid in a temporary folder, and the studio serving it on a free port."""
from __future__ import annotations

import socket

import pytest
import torch
from fake_grid import build_fake_grid

import app
from gs_core.data.photoset import load_split
from gs_core.jobs import ensure_worker
from pages.store import ModelGrid
from tiny_models import build_tiny

from tests.browser import CHROMIUM, MISSING, chromium


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory):
    """Teacher, GS students at 25% / 50% sparsity x 32 / 8 bits, a mixed-bit GS student and two baselines."""
    return build_fake_grid(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def grid(grid_dir):
    return ModelGrid(grid_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(grid):
    """URL of the app, launched in this process (a background thread) on the fixture grid."""
    demo = app.build_app(grid)
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="session")
def job_server(grid, tmp_path_factory):
    """(URL, workspace) of the app with a workspace whose jobs follow the quick preset, and its worker (one
    thread; it leaves once the queue is empty and this process has gone)."""
    workspace = tmp_path_factory.mktemp("workspace")
    demo = app.build_app(grid, workspace, job_preset="quick")
    demo.launch(server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True, quiet=True,
                ssr_mode=False)
    ensure_worker(workspace, threads=1)
    yield demo.local_url, workspace
    demo.close()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (tests/browser.py), shared by the browser tests; they are skipped where it is missing."""
    if not CHROMIUM.exists():
        pytest.skip(MISSING)
    pytest.importorskip("playwright.sync_api")
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="session")
def tiny_teacher_file(tmp_path_factory):
    """A tiny CartoonGAN in the published layout: a .pth state dict."""
    path = tmp_path_factory.mktemp("upload") / "tiny toon.pth"
    torch.save(build_tiny("cartoongan").state_dict(), path)
    return path


@pytest.fixture(scope="session")
def photo_path():
    return load_split("test")[0]
