"""The pages' data functions on the fixture grid (and on an AnimeGANv2 one), without a server."""
from __future__ import annotations

import threading
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from fake_grid import IDENTITY_PSNR, build_fake_grid
from PIL import Image

from gs_core.deploy.choose import load_deployed
from tiny_models import build_tiny
from pages.compare import _eager_latency, card_markdown, photo_view, read_uploads, slider_step, student_view
from pages.grid import baseline_ids, grid_cells, grid_view
from pages.layers import layer_figures
from pages.pareto import available_quality, missing_note, pareto_figure, pareto_front
from pages.store import DIFF_GAIN, MAX_SIDE, PREFETCH_BACKLOG, ModelGrid, difference, load_photo
from pages.training import history_figure, training_figure

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def photo(photo_path):
    return load_photo(photo_path, photo_path.stem)[0]


def test_grid_levels_bits_and_snapping(grid):
    assert grid.sparsity_levels() == [0.25, 0.5]
    assert grid.bits_choices() == ["32", "8", "mixed"]
    assert grid.pick_gs(0.3, "8") == "gs-s0.25-b8"
    assert grid.pick_gs(0.9, "32") == "gs-s0.5-b32"
    assert grid.pick_gs(0.0, "mixed") == "gs-s0.5-bmixed"  # the only mixed one, however far


def test_slider_step_lands_on_every_level():
    assert slider_step([0.25, 0.5, 0.75]) == 0.25
    assert slider_step([0.3, 0.5, 0.9]) == 0.2
    assert slider_step([0.5]) == 0.01


def test_results_are_cached_and_carry_metrics(grid, photo):
    first = grid.stylize(photo, "gs-s0.5-b8")
    assert grid.stylize(photo, "gs-s0.5-b8") is first
    assert first.image.shape == photo.rgb.shape and first.psnr is not None and -1 <= first.ssim <= 1
    assert grid.stylize(photo, grid.teacher_id).psnr is None


def test_difference_tells_darker_brighter_and_colour_apart():
    teacher = np.full((1, 4, 3), 100, np.uint8)
    student = teacher.copy()
    student[0, 1] = 90  # darker, grey: a stroke the teacher did not draw
    student[0, 2] = 110  # brighter
    student[0, 3] = (138, 100, 0)  # redder and less blue, brightness within a grey level (0.299 * 38 ~ 0.114 * 100)
    diff = difference(teacher, student).astype(int)
    assert diff[0, 0].tolist() == [0, 0, 0]
    # within a level: the float sum of the luma weights may round either way
    assert np.abs(diff[0, 1] - [10 * DIFF_GAIN, 0, 0]).max() <= 1
    assert np.abs(diff[0, 2] - [0, 0, 10 * DIFF_GAIN]).max() <= 1
    assert diff[0, 3, 0] <= DIFF_GAIN and diff[0, 3, 2] <= DIFF_GAIN and diff[0, 3, 1] >= 20 * DIFF_GAIN


def test_card_and_student_view(grid, photo):
    image, diff, card = student_view(grid, photo, "gs-s0.25-b8")
    with Image.open(image) as student, Image.open(diff) as difference:
        assert student.size == difference.size == (photo.rgb.shape[1], photo.rgb.shape[0])
    assert "gs-s0.25-b8" in card and "this photo" in card and "FID (test set) | n/a" in card
    assert "this photo" not in card_markdown(grid, "gs-s0.25-b8")  # no photo, no per-photo numbers
    style = grid.table.loc["gs-s0.25-b8", "style_retained"]
    assert f"style retained (test set) | {style:.2f} |" in card
    assert f"Doing nothing (output = the photo itself) scores PSNR {IDENTITY_PSNR:.2f}" in card


def test_photo_view_shows_the_photo_beside_teacher_and_student(grid, photo):
    shown_photo, teacher, student, diff, card, shown = photo_view(grid, photo, "gs-s0.5-b8")
    grid.wait_for_prefetch()
    assert shown_photo is photo.rgb and shown == "gs-s0.5-b8"
    assert teacher == grid.stylize(photo, grid.teacher_id).png and student == grid.stylize(photo, shown).png
    assert photo_view(grid, None, "gs-s0.5-b8")[:2] == (None, None)


def test_the_identity_row_is_a_reference_not_a_model(grid, tmp_path):
    assert "identity" not in grid.table.index and "identity" not in grid.models
    assert grid.identity["psnr"] == IDENTITY_PSNR and grid.identity["style_retained"] == 0.0
    figure = pareto_figure(grid, "macs", "style_retained", None)
    [line] = [trace for trace in figure.data if trace.name == "identity (output = the photo)"]
    assert set(line.y) == {0.0} and min(line.x) == grid.table["macs"].min()
    assert "teacher" in {trace.name for trace in figure.data}  # its style retained is 1 by definition
    assert figure.layout.xaxis.tickformat == "~s"  # log axis ticks as 200M, 500M, 1G
    # A manifest from before the identity row: no reference line, no reference sentence on the card.
    older = ModelGrid(build_fake_grid(tmp_path, identity=False))
    assert older.identity is None
    assert "identity (output = the photo)" not in {t.name for t in pareto_figure(older, "macs", "psnr", None).data}
    assert "Doing nothing" not in card_markdown(older, "gs-s0.5-b8")


def test_read_uploads_keeps_good_files_and_explains_bad_ones(tmp_path):
    big, bad = tmp_path / "big.png", tmp_path / "bad.jpg"
    Image.new("RGB", (MAX_SIDE * 2, MAX_SIDE), "red").save(big)
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    photos, notices, errors = read_uploads([str(big), str(bad)])
    assert [p.rgb.shape for p in photos] == [(MAX_SIDE // 2, MAX_SIDE, 3)]
    assert any("downscaled" in n for n in notices)
    assert len(errors) == 1 and errors[0].startswith("bad.jpg: ")


def test_grid_layout(grid, photo):
    cells = grid_cells(grid)
    assert cells == ["gs-s0.25-b32", "gs-s0.25-b8", None, "gs-s0.5-b32", "gs-s0.5-b8", "gs-s0.5-bmixed"]
    assert baseline_ids(grid)[0] == grid.teacher_id
    gallery, psnr_plot, baselines = grid_view(grid, photo)
    assert len(gallery) == len(cells) and len(baselines) == 3
    assert psnr_plot.data[0].z[0][2] is None  # the missing pair stays empty in the heatmap


def test_pareto_front_keeps_only_undominated_points():
    points = pd.DataFrame({"macs": [1, 2, 3, 4], "lpips": [0.5, 0.3, 0.4, 0.1]}, index=list("abcd"))
    assert list(pareto_front(points, "macs", "lpips", lower_is_better=True).index) == ["a", "b", "d"]
    assert list(pareto_front(points, "macs", "lpips", lower_is_better=False).index) == ["a"]


def test_pareto_says_why_a_metric_is_missing(grid):
    assert "fid" not in available_quality(grid)
    assert "InceptionV3" in missing_note(grid)  # a student's reason, not the teacher's "is the reference"
    names = {trace.name for trace in pareto_figure(grid, "macs", "lpips", "gs-s0.5-b8").data}
    assert names >= {"gs", "distill", "prune", "teacher's cost", "selected"}
    assert "teacher" not in names  # no quality numbers of its own, so only its cost line


@pytest.mark.parametrize("model_id", ["teacher", "gs-s0.5-bmixed", "distill-s0.5-b32"])
def test_layer_and_training_figures_for_every_kind_of_model(grid, model_id):
    survival, heatmap, gammas, bits = layer_figures(grid, model_id)
    kept, pruned = survival.data
    assert sum(kept.x) + sum(pruned.x) == sum(c.out_channels for c in grid.models["teacher"].modules()
                                              if hasattr(c, "out_channels"))
    assert len(heatmap.data) == 1
    assert bool(gammas.data) == (model_id.startswith("gs"))  # baselines and the teacher have no gammas
    assert set(np.unique(bits.data[0].y)) <= {4, 8, 32}
    figure = training_figure(grid, model_id)
    assert len(figure.data) == 5  # four losses and channels alive
    # a GS student with a quantization delay marks the step its quantizers came on (in both panels)
    assert {shape.x0 for shape in figure.layout.shapes} == ({24} if model_id == "gs-s0.5-bmixed" else set())


def test_a_running_jobs_curves_span_all_its_steps():
    history = [{"step": s, "total": 1.0 / s, "alive": 1 - s / 100} for s in range(1, 11)]
    figure = history_figure(history, "job", quant_start=60, steps=100)
    assert list(figure.layout.xaxis.range) == list(figure.layout.xaxis2.range) == [0, 100]  # 10 of 100 steps shown
    assert history_figure(history, "done").layout.xaxis.range is None  # a finished model: the axis fits its curves


def test_a_burst_of_photos_drops_the_oldest_prefetches(grid):
    photos = [load_photo(Image.new("RGB", (32, 24), (i * 40, 90, 200)), f"flat{i}")[0]
              for i in range(PREFETCH_BACKLOG + 1)]
    held = threading.Event()
    grid._prefetcher.submit(held.wait)  # keep the worker busy while the burst is queued
    for photo in photos:
        grid.prefetch(photo, ["gs-s0.25-b32"])
    held.set()
    grid.wait_for_prefetch()
    cached = [(p.key, "gs-s0.25-b32") in grid._results for p in photos]
    assert cached == [False] + [True] * PREFETCH_BACKLOG


def test_pages_on_an_animeganv2_grid(tmp_path, photo):
    grid = ModelGrid(build_fake_grid(tmp_path, sparsities=(0.5,), bits=(8,), extra=(("distill", 0.5, 32),),
                                     teacher=build_tiny("animeganv2")))
    assert grid.models["gs-s0.5-b8"].arch == "animeganv2"
    image, diff, card = student_view(grid, photo, "gs-s0.5-b8")
    with Image.open(image) as student:
        assert student.size == (photo.rgb.shape[1], photo.rgb.shape[0])
    assert "gs-s0.5-b8" in card
    assert grid_cells(grid) == ["gs-s0.5-b8"] and len(grid_view(grid, photo)[0]) == 1
    survival, _, gammas, _ = layer_figures(grid, "gs-s0.5-b8")
    kept, pruned = survival.data
    assert len(kept.y) == 25 and 0 < sum(pruned.x) < sum(kept.x) + sum(pruned.x)  # every conv, some pruned
    assert gammas.data


def test_card_names_what_each_budget_removes(tmp_path):
    grid = ModelGrid(build_fake_grid(tmp_path, sparsities=(0.5,), bits=(8,),
                                     extra=(("gs-latency", 0.3, 32), ("gs-size", 0.9, 8))))
    assert "GAN Slimming · 50% sparsity target · 8-bit" in card_markdown(grid, "gs-s0.5-b8")
    assert "latency budget · 30% latency removed" in card_markdown(grid, "gs-latency-s0.3-b32")
    assert "size budget · 90% size removed · 8-bit" in card_markdown(grid, "gs-size-s0.9-b8")


def test_the_download_is_the_deployed_folder_zipped_once(grid, tmp_path):
    path = grid.deployed_zip("gs-s0.25-b32")
    assert grid.deployed_zip("gs-s0.25-b32").stat().st_mtime_ns == path.stat().st_mtime_ns  # deployed once
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["gs-s0.25-b32/deploy.json", "gs-s0.25-b32/model.onnx"]
        archive.extractall(tmp_path)
    assert load_deployed(tmp_path / "gs-s0.25-b32").run(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert "latency, deployed" in card_markdown(grid, "gs-s0.25-b8")


def test_card_gives_the_eager_latency_where_the_grid_timed_pytorch(grid):
    """A grid that timed PyTorch eager (runtime "pytorch") has no separate eager figure: its latency is that."""
    row = grid.table.loc["gs-s0.25-b8"].copy()
    row["runtime"], row["latency_ms_torch"], row["latency_ms"] = "pytorch", None, 12.34
    assert _eager_latency(row) == "12.3 ms"
    row["runtime"], row["latency_ms_torch"] = "onnxruntime", 56.78
    assert _eager_latency(row) == "56.8 ms"
    row["latency_ms_torch"] = None
    assert _eager_latency(row) == "n/a"
