"""The checkpoints that ship in the repo: they load, they belong together, and their recorded numbers are real.

These read `checkpoints/` as committed, so a teacher retrained without its grid, a hand-edited card or a figure
copied from another run fails here rather than in front of a user.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gs_core.checkpoint import load_model, read_card, weights_digest
from gs_core.data.photoset import load_split
from gs_core.eval.evaluate import evaluate_models
from gs_core.grid import grid_preset
from gs_core.teacher import evaluate_against_target

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
MANIFEST = json.loads((CHECKPOINTS / "manifest.json").read_text())
STUDENTS = [record for record in MANIFEST if record["id"] != "teacher"]


@pytest.fixture(scope="module")
def teacher():
    return load_model(CHECKPOINTS / "teacher")


def test_manifest_covers_every_shipped_student():
    folders = {f.name for f in (CHECKPOINTS / "grid").iterdir() if f.is_dir()}
    assert {record["id"] for record in STUDENTS} == folders
    assert MANIFEST[0]["id"] == "teacher"


@pytest.mark.parametrize("record", STUDENTS, ids=[r["id"] for r in STUDENTS])
def test_each_student_loads_matches_its_record_and_was_distilled_from_the_shipped_teacher(record, teacher):
    model, card = load_model(CHECKPOINTS / record["path"])
    assert sum(p.numel() for p in model.parameters()) == record["params"]
    assert card["teacher_digest"] == weights_digest(teacher[0])


def test_teacher_card_numbers_reproduce(teacher):
    model, card = teacher
    recorded = card["metrics_vs_target"]
    measured = evaluate_against_target(model, load_split("test"))
    for key in ("teacher_psnr", "teacher_ssim", "identity_psnr", "identity_ssim"):
        assert measured[key] == pytest.approx(recorded[key], abs=1e-3), key
    assert sum(p.numel() for p in model.parameters()) == card["params"]


def test_a_students_recorded_quality_reproduces():
    record = next(r for r in STUDENTS if r["id"] == "gs-s0.7-b8")
    row = evaluate_models([CHECKPOINTS / record["path"]], Path(load_split("test")[0]).parent,
                          CHECKPOINTS / "teacher", metrics=("psnr", "ssim", "macs"),
                          size=grid_preset("default").eval_size, progress=False).iloc[0]
    assert row["psnr"] == pytest.approx(record["psnr"], abs=1e-3)
    assert row["ssim"] == pytest.approx(record["ssim"], abs=1e-4)
    assert row["macs"] == record["macs"]
    assert read_card(CHECKPOINTS / record["path"])["metrics"]["psnr"] == record["psnr"]
