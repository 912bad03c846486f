"""scripts/steps_study.py at a tiny size: the quick preset's teacher and grid settings, 2 and 4 steps."""
from __future__ import annotations


import pytest

from gs_core.checkpoint import read_card
from gs_core.teacher import preset, train_teacher


@pytest.fixture(scope="module")
def steps_study(load_script):
    return load_script("steps_study")


def test_steps_study_trains_each_point_for_each_budget_and_resumes(steps_study, tmp_path, monkeypatch):
    train_teacher(preset("quick"), tmp_path / "teacher", tmp_path / "runs" / "teacher", progress=False)
    out = tmp_path / "study"
    table = steps_study.study([3, 6], 0.5, 8, "quick", tmp_path / "teacher", out, progress=False)

    assert list(table["id"]) == ["identity", "gs-s0.5-b8", "stacked-s0.5-b8", "gs-s0.5-b8", "stacked-s0.5-b8"]
    assert list(table["steps"]) == [0, 3, 3, 6, 6]
    assert table.loc[0, "style_retained"] == 0.0 and table["psnr"].notna().all()
    assert (table.loc[1:, "train_min"] > 0).all() and table.loc[1:, "last_distill"].notna().all()
    for steps in (3, 6):  # each point really trained for its budget, stacked in three stages
        for point in ("gs-s0.5-b8", "stacked-s0.5-b8"):
            assert read_card(out / f"steps-{steps}" / "grid" / point)["history"][-1]["step"] == steps
    assert {r["stage"] for r in read_card(out / "steps-6" / "grid" / "stacked-s0.5-b8")["history"]} == {
        "prune", "distill", "quant"}
    assert steps_study.train_seconds([{"stage": "a", "seconds": 2.0}, {"stage": "a", "seconds": 5.0},
                                      {"stage": "b", "seconds": 1.5}]) == 6.5

    # A rerun trains nothing and gives the same table.
    monkeypatch.setattr("gs_core.grid.run_method", lambda *a, **k: pytest.fail("retrained a finished point"))
    again = steps_study.study([3, 6], 0.5, 8, "quick", tmp_path / "teacher", out, progress=False)
    assert again.equals(table)
    assert (out / "steps.csv").is_file() and steps_study.markdown(table).count("\n") == len(table) + 1
