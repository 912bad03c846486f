"""The Pareto page's "fetch the LPIPS / FID weights and measure the grid" action: offline, one clear line, fast,
and the grid as it was; measured, the new numbers on the page. And the missing-metric note keeps text in angle
brackets."""
from __future__ import annotations

import json
import time
from pathlib import Path

import gradio as gr
import pandas as pd
import pytest
from fake_grid import build_fake_grid

from gs_core.eval.backbones import BACKBONES, Backbone
from pages import pareto
from pages.pareto import measure_learned_metrics, missing_note, needs_backbones
from pages.store import ModelGrid

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty torch cache, and every backbone URL pointing at a local port where nothing listens (refused at
    once, as a machine without internet refuses or fails to resolve), so the test never reaches the network."""
    cache = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(cache))
    for name, backbone in BACKBONES.items():
        monkeypatch.setitem(BACKBONES, name, Backbone(backbone.file, f"http://127.0.0.1:9/{backbone.file}",
                                                      backbone.used_by))
    return cache


def test_offline_measure_fails_fast_with_one_line(grid, offline):
    assert needs_backbones(grid) == ["fid"]  # the fixture grid has LPIPS numbers but no FID
    table_before, note_before = grid.table.copy(), missing_note(grid)
    bars = []
    started = time.perf_counter()
    status, y, note = measure_learned_metrics(grid, lambda *args, **kwargs: bars.append(kwargs.get("desc")))
    elapsed = time.perf_counter() - started
    assert elapsed < 30
    assert status.startswith("**Could not measure FID**: Could not download http://127.0.0.1:9/")
    assert "internet" in status and "\n" not in status
    assert bars == ["fetching the weights of FID"]
    assert y == note == gr.skip()  # the y choices and the note stay as they were
    assert grid.table.equals(table_before) and missing_note(grid) == note_before
    assert not [p for p in offline.rglob("*") if p.is_file()]  # no partial download left in the cache


def test_missing_note_keeps_angle_brackets(grid, monkeypatch):
    reason = "needs the weight file x.pth (the torch cache, TORCH_HOME=<unset>)"
    monkeypatch.setattr(grid, "missing_reason", lambda metric: reason)
    assert "TORCH_HOME=&lt;unset&gt;)." in missing_note(grid)


def test_measured_metrics_join_the_page(tmp_path, monkeypatch):
    """Online (simulated: the measuring is the library's, tested with the grid), the page reads the new FID
    numbers back: the y choices gain FID and select it, the note stops saying it is missing."""
    grid = ModelGrid(build_fake_grid(tmp_path))
    calls = []

    def measured(teacher_path, out, metrics, device):
        calls.append((Path(teacher_path), Path(out), metrics))
        manifest = Path(out) / "manifest.json"
        records = json.loads(manifest.read_text())
        for i, record in enumerate(records):
            if record["method"] not in ("teacher", "identity"):
                record["fid"] = 50.0 + i
        manifest.write_text(json.dumps(records))

    monkeypatch.setattr(pareto, "fetch_and_remeasure", measured)
    assert "FID is not available" in missing_note(grid)
    status, y, note = measure_learned_metrics(grid, lambda *args, **kwargs: None)
    assert calls == [(tmp_path / "teacher", tmp_path, ("fid",))]
    assert status == f"Measured FID for {len(grid.table)} models."
    assert y.value == "fid" and ("fid" in [value for _, value in y.choices])
    assert "FID" not in note and grid.metric_available("fid")
    assert grid.table.loc["gs-s0.5-b8", "fid"] > 50 and pd.isna(grid.table.loc["teacher", "fid"])
    assert needs_backbones(grid) == []
