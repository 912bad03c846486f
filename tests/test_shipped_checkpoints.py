"""The checkpoints that ship in the repo: they load, they belong together, and their recorded numbers are real.

These read `checkpoints/` as committed, so a teacher retrained without its grid, a hand-edited card or a figure
copied from another run fails here rather than in front of a user.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from gs_core.checkpoint import load_model, read_card
from gs_core.data.photoset import load_split
from gs_core.eval.evaluate import evaluate_models
from gs_core.files import weights_digest
from gs_core.grid import grid_preset, prunable_groups
from gs_core.teacher import evaluate_against_target

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
MANIFEST = json.loads((CHECKPOINTS / "manifest.json").read_text())
STUDENTS = [record for record in MANIFEST if record["method"] not in ("teacher", "identity")]

# Recorded quality figures were measured on the machine that trained the checkpoints. Another CPU runs other float
# kernels (other SIMD paths in convolutions, OpenCV's filters, reductions), and fake quantization turns a last-bit
# difference into a whole level here and there: on a second machine of the same kind gs-s0.7-b8's PSNR came out
# 0.0012 dB off. The margins are 40x that, yet a wrong model still fails, though since this grid by SSIM, not
# PSNR: the shipped students nearest to gs-s0.7-b8 are gs-s0.7-b32 (0.0004 dB away, SSIM 0.0016) and
# stacked-s0.7-b8 (0.018 dB, SSIM 0.0013), both outside the SSIM margin. Counts (params, MACs, digests) stay exact.
PSNR_MARGIN_DB = 0.05
SSIM_MARGIN = 1e-3
# 0.0012 dB is 0.03% of an MSE, about 1e-4 of style retained (its nearest neighbours are 0.0002 and 0.0003 away:
# the SSIM check tells them apart).
STYLE_MARGIN = 5e-3


@pytest.fixture(scope="module")
def teacher():
    return load_model(CHECKPOINTS / "teacher")


def test_manifest_covers_every_shipped_student():
    folders = {f.name for f in (CHECKPOINTS / "grid").iterdir() if f.is_dir()}
    assert {record["id"] for record in STUDENTS} == folders
    assert MANIFEST[0]["id"] == "teacher" and MANIFEST[1]["id"] == "identity"


@pytest.mark.parametrize("record", STUDENTS, ids=[r["id"] for r in STUDENTS])
def test_each_student_loads_matches_its_record_and_was_distilled_from_the_shipped_teacher(record, teacher):
    model, card = load_model(CHECKPOINTS / record["path"])
    assert sum(p.numel() for p in model.parameters()) == record["params"]
    assert card["teacher_digest"] == weights_digest(teacher[0])
    # Trained with the default grid's recipe as it stands: a changed default must come with a retrained grid.
    grid = grid_preset("default")
    point = {p.id: p for p in grid.points()}[record["id"]]
    assert card["grid_recipe"] == grid.recipe(point, prunable_groups(teacher[0]))


def test_teacher_card_numbers_reproduce(teacher):
    model, card = teacher
    recorded = card["metrics_vs_target"]
    measured = evaluate_against_target(model, load_split("test"))
    for key in ("teacher_psnr", "identity_psnr"):
        assert measured[key] == pytest.approx(recorded[key], abs=PSNR_MARGIN_DB), key
    for key in ("teacher_ssim", "identity_ssim"):
        assert measured[key] == pytest.approx(recorded[key], abs=SSIM_MARGIN), key
    assert sum(p.numel() for p in model.parameters()) == card["params"]
    assert card["identity"]["teacher_digest"] == weights_digest(model)  # the identity row was measured against it


def test_a_students_recorded_quality_reproduces():
    record = next(r for r in STUDENTS if r["id"] == "gs-s0.7-b8")
    identity = MANIFEST[1]
    student, identity_row = evaluate_models(
        [CHECKPOINTS / record["path"]], Path(load_split("test")[0]).parent, CHECKPOINTS / "teacher",
        metrics=("psnr", "ssim", "style_retained", "macs"), size=grid_preset("default").eval_size, progress=False,
        identity=True).to_dict("records")
    for row, recorded in ((student, record), (identity_row, identity)):
        assert row["psnr"] == pytest.approx(recorded["psnr"], abs=PSNR_MARGIN_DB)
        assert row["ssim"] == pytest.approx(recorded["ssim"], abs=SSIM_MARGIN)
        assert row["style_retained"] == pytest.approx(recorded["style_retained"], abs=STYLE_MARGIN)
    assert student["macs"] == record["macs"]
    assert identity["style_retained"] == 0.0 and identity["macs"] is None
    assert read_card(CHECKPOINTS / record["path"])["metrics"]["psnr"] == record["psnr"]


def test_the_teacher_changes_a_photo_visibly_and_beats_doing_nothing(teacher):
    """Issue 14's contract for the embedded teacher: "output = the photo" is at most 20 dB from the teacher (a
    student that does nothing scores low), and the teacher is at least 4 dB closer to its target than the photo."""
    _, card = teacher
    assert MANIFEST[1]["psnr"] <= 20.0
    target = card["metrics_vs_target"]
    assert target["teacher_psnr"] - target["identity_psnr"] >= 4.0
