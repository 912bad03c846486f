"""scripts/seeds_study.py at a tiny size: the quick preset, two seeds, GS against stacked at one sparsity."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gs_core.checkpoint import read_card
from gs_core.teacher import preset, train_teacher

VAL = Path(__file__).resolve().parent.parent / "data" / "photos" / "val"


@pytest.fixture(scope="module")
def seeds_study(load_script):
    return load_script("seeds_study")


def test_each_seed_is_its_own_grid_and_the_gap_is_paired(seeds_study, tmp_path):
    train_teacher(preset("quick"), tmp_path / "teacher", tmp_path / "runs" / "teacher", progress=False)
    points = ["gs-s0.5-b8", "stacked-s0.5-b8"]
    rows = seeds_study.study([0, 1], points, tmp_path / "teacher", tmp_path / "seeds", preset="quick")
    assert list(rows["id"]) == points * 2 and list(rows["seed"]) == [0, 0, 1, 1]
    assert rows["psnr"].notna().all()
    assert rows.loc[0, "psnr"] != rows.loc[2, "psnr"]  # another seed trains another student
    _, gaps = seeds_study.summary(rows)
    [(mean, sd)] = gaps.values()
    assert mean == pytest.approx((rows.loc[[0, 2], "psnr"].values - rows.loc[[1, 3], "psnr"].values).mean())
    # --reuse-grid: the preset's own seed (0) is read from a grid trained with it, nothing is trained again
    reused = seeds_study.study([0], points, tmp_path / "teacher", tmp_path / "again", preset="quick",
                               reuse_grid=tmp_path / "seeds" / "seed-0")
    pd.testing.assert_frame_equal(reused, rows.iloc[:2])
    assert not list((tmp_path / "again").glob("seed-0/runs/*/*-s0.5-b8"))  # no point's training run


def test_a_changed_setting_is_measured_on_the_photos_asked_for(seeds_study, tmp_path):
    train_teacher(preset("quick"), tmp_path / "teacher", tmp_path / "runs" / "teacher", progress=False)
    points = ["gs-s0.5-b8"]
    test = seeds_study.study([0], points, tmp_path / "teacher", tmp_path / "base", preset="quick")
    val = seeds_study.study([0], points, tmp_path / "teacher", tmp_path / "base", preset="quick",
                            photos=VAL)
    changed = seeds_study.study([0], points, tmp_path / "teacher", tmp_path / "lr", preset="quick",
                                train_changes={"lr": 1e-2}, photos=VAL)
    assert val["psnr"].notna().all() and val.loc[0, "psnr"] != test.loc[0, "psnr"]  # other photos, same student
    assert changed.loc[0, "psnr"] != val.loc[0, "psnr"]  # another setting trains another student
    assert read_card(tmp_path / "lr" / "seed-0" / "grid" / "gs-s0.5-b8")["training"]["train"]["lr"] == 1e-2
    with pytest.raises(ValueError, match="not a training setting: lrr"):
        seeds_study.study([0], points, tmp_path / "teacher", tmp_path / "x", preset="quick", train_changes={"lrr": 1})
    with pytest.raises(ValueError, match="reuse-grid"):
        seeds_study.study([0], points, tmp_path / "teacher", tmp_path / "x", preset="quick",
                          train_changes={"lr": 1e-2}, reuse_grid=tmp_path / "base" / "seed-0")


def test_summary_on_known_numbers(seeds_study):
    rows = pd.DataFrame({"seed": [0, 0, 1, 1], "id": ["gs-s0.7-b8", "stacked-s0.7-b8"] * 2,
                         "psnr": [30.0, 27.0, 31.0, 27.5], "ssim": [0.9] * 4, "style_retained": [0.5] * 4})
    table, gaps = seeds_study.summary(rows)
    assert table.loc["gs-s0.7-b8", ("psnr", "mean")] == 30.5
    assert gaps["gs-s0.7-b8 - stacked-s0.7-b8 (PSNR dB)"] == pytest.approx((3.25, 0.3535534), abs=1e-6)
