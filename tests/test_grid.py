"""The grid end to end on the quick preset: manifest schema, incremental reruns, a failing point isolated."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from gs_core import grid as grid_module
from gs_core.checkpoint import CheckpointError, load_model, read_card, save_model, write_card
from gs_core.grid import MANIFEST_FIELDS, grid_preset, run_grid
from gs_core.models import create_generator
from gs_core.teacher import preset, train_teacher


@pytest.fixture(scope="module")
def quick_teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    train_teacher(preset("quick"), root / "teacher", root / "runs" / "teacher", progress=False)
    return root


def test_quick_grid_writes_manifest_and_skips_finished_points(quick_teacher, monkeypatch):
    root = quick_teacher
    cfg = grid_preset("quick")
    only = ["gs-s0.9-b8", "gs-s0.5-b8", "gs-s0.5-bmixed", "distill-s0.5-b32"]

    # One point fails: it is reported and the others still land.
    real_run = grid_module.run_method

    def flaky(teacher, inputs, outputs, slim_cfg, run_dir, *args):
        if slim_cfg.method == "distill":
            raise RuntimeError("simulated failure")
        return real_run(teacher, inputs, outputs, slim_cfg, run_dir, *args)

    monkeypatch.setattr(grid_module, "run_method", flaky)
    manifest = run_grid(cfg, root / "teacher", root, root / "runs" / "grid", only=only, progress=False)
    failures = json.loads((root / "grid" / "failures.json").read_text())
    assert list(failures) == ["distill-s0.5-b32"] and "simulated failure" in failures["distill-s0.5-b32"]
    assert set(manifest["id"]) == {"teacher", "identity", "gs-s0.9-b8", "gs-s0.5-b8", "gs-s0.5-bmixed"}

    table = pd.DataFrame(json.loads((root / "manifest.json").read_text()))
    assert set(MANIFEST_FIELDS) <= set(table.columns)
    gs = table.set_index("id").loc["gs-s0.9-b8"]
    assert gs["method"] == "gs" and gs["bits"] == 8 and gs["sparsity_target"] == 0.9
    assert 0 < gs["macs_removed"] < 1 and 0 < gs["channels_removed"] < 1
    assert gs["compression_size"] > 4  # 8-bit alone gives 4x; pruning adds to it
    assert gs["psnr"] > 0 and 0 < gs["ssim"] <= 1
    # The identity reference (output = the photo): quality against the teacher, no costs, no folder.
    identity = table.set_index("id").loc["identity"]
    assert identity["method"] == "identity" and pd.isna(identity["path"])
    assert pd.isna(identity["macs"]) and pd.isna(identity["params"]) and pd.isna(identity["compression_size"])
    assert 0 < identity["psnr"] < float("inf") and identity["eval_size"] == cfg.eval_size
    assert identity["style_retained"] == 0.0 and table.set_index("id").loc["teacher", "style_retained"] == 1.0
    assert -1 < gs["style_retained"] < 1
    mixed_card = read_card(root / "grid" / "gs-s0.5-bmixed")
    assert mixed_card["bits"] == "mixed"
    assert len(set(mixed_card["bit_allocation"].values())) > 1
    # Pruned to the uniform student's size: the two compare at equal size in bits (up to one channel's worth).
    uniform = table.set_index("id").loc["gs-s0.5-b8"]
    mixed = table.set_index("id").loc["gs-s0.5-bmixed"]
    assert mixed_card["size_matched_to"] == "gs-s0.5-b8"
    assert mixed["size_bits"] <= uniform["size_bits"] * 1.02
    assert mixed_card["metrics"]["missing"]["lpips"]  # not requested in the quick preset: a reason, not a number
    model, _ = load_model(root / gs["path"])
    assert sum(p.numel() for p in model.parameters()) == gs["params"]

    # A rerun trains only what is missing: the failed point, now that it works again.
    monkeypatch.setattr(grid_module, "run_method", real_run)
    trained = []
    monkeypatch.setattr(grid_module, "run_method", lambda *a, **k: trained.append(a[3].method) or real_run(*a, **k))
    manifest = run_grid(cfg, root / "teacher", root, root / "runs" / "grid", only=only, progress=False)
    assert trained == ["distill"]
    assert set(manifest["id"]) == {"teacher", "identity", *only}
    assert json.loads((root / "grid" / "failures.json").read_text()) == {}


def test_grid_takes_an_official_teacher_file_and_measures_it_at_the_grid_size(tmp_path):
    """A published .pth (here a narrow CycleGAN in the official layout) is brought into the grid's folder once,
    with a card that names its source; teacher and students are measured at the grid's size."""
    torch.manual_seed(0)
    official = tmp_path / "downloads" / "latest_net_G.pth"
    official.parent.mkdir()
    torch.save(create_generator("cyclegan", ngf=4, n_blocks=2).state_dict(), official)
    out = tmp_path / "my_grid"
    cfg = grid_preset("quick")
    manifest = run_grid(cfg, official, out, tmp_path / "runs", only=["gs-s0.5-b8"], progress=False).set_index("id")

    card = read_card(out / "teacher")
    assert card["source"]["file"] == str(official.resolve()) and card["source"]["detected"] == "resnet_generator"
    assert card["source"]["sha256"] == hashlib.sha256(official.read_bytes()).hexdigest()
    assert manifest.loc["teacher", "path"] == "teacher"
    assert set(manifest["eval_size"]) == {cfg.eval_size}  # the teacher too, though this is not 256
    assert manifest.loc["gs-s0.5-b8", "macs"] < manifest.loc["teacher", "macs"]
    # Rerunning with the same file reuses the grid's copy; another teacher cannot take its place.
    run_grid(cfg, official, out, tmp_path / "runs", only=["gs-s0.5-b8"], progress=False)
    other = tmp_path / "downloads" / "other.pth"
    torch.save(create_generator("cyclegan", ngf=6, n_blocks=2).state_dict(), other)
    with pytest.raises(ValueError, match="already holds another teacher"):
        run_grid(cfg, other, out, tmp_path / "runs", progress=False)
    damaged = tmp_path / "downloads" / "damaged.pth"
    damaged.write_bytes(official.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        run_grid(cfg, damaged, tmp_path / "another_grid", tmp_path / "runs", progress=False)


def test_remeasure_updates_cards_and_manifest(quick_teacher):
    from gs_core.grid import remeasure

    root = quick_teacher
    cfg = grid_preset("quick")
    run_grid(cfg, root / "teacher", root, root / "runs" / "grid", only=["gs-s0.5-b8"], progress=False)
    before = read_card(root / "grid" / "gs-s0.5-b8")["metrics"]["latency_ms"]
    manifest = remeasure(cfg, root / "teacher", root, ["latency_ms"])
    after = read_card(root / "grid" / "gs-s0.5-b8")["metrics"]["latency_ms"]
    assert after > 0 and after != before  # a fresh timing, not the stored one
    assert manifest.set_index("id").loc["gs-s0.5-b8", "latency_ms"] == after
    # latency_ms is deploy's choice on this machine (gs_core.deploy.choose), the eager time kept beside it
    teacher = manifest.set_index("id").loc["teacher"]
    assert teacher["runtime"].split("-")[0] in ("onnxruntime", "openvino") and teacher["latency_ms_torch"] > 0
    deployed = read_card(root / "teacher")["metrics"]["deployed"]
    assert teacher["latency_ms"] == min(c["latency_ms"] for c in deployed["candidates"] if c["latency_ms"])

    # A metric added after the grid was trained: measured for every point and the identity, nothing else moves.
    before = manifest.set_index("id")
    for folder in (root / "teacher", root / "grid" / "gs-s0.5-b8"):
        card = read_card(folder)
        card["metrics"].pop("style_retained")
        card.pop("identity", None)
        write_card(folder, card)
    assert "identity" not in set(grid_module.write_manifest(root, root / "teacher", _digest(root))["id"])
    after = remeasure(cfg, root / "teacher", root, ["style_retained"]).set_index("id")
    assert after.loc["gs-s0.5-b8", "style_retained"] == pytest.approx(before.loc["gs-s0.5-b8", "style_retained"])
    assert after.loc["identity", "style_retained"] == 0.0 and after.loc["teacher", "style_retained"] == 1.0
    assert after.loc["identity", "psnr"] == before.loc["identity", "psnr"]
    assert after.loc["gs-s0.5-b8", "psnr"] == before.loc["gs-s0.5-b8", "psnr"]
    # A quality metric measured again (as the app's Pareto page does for LPIPS / FID): the students get it, the
    # teacher, its reference, does not (against itself it would sit at a perfect score on the Pareto plot).
    again = remeasure(cfg, root / "teacher", root, ["psnr"]).set_index("id")
    assert again.loc["gs-s0.5-b8", "psnr"] == pytest.approx(before.loc["gs-s0.5-b8", "psnr"])
    assert pd.isna(again.loc["teacher", "psnr"])
    assert after.loc["gs-s0.5-b8", "latency_ms"] == before.loc["gs-s0.5-b8", "latency_ms"]


def _digest(root):
    return grid_module.weights_digest(load_model(root / "teacher")[0])


def test_a_retrained_teacher_or_a_changed_recipe_makes_every_point_stale(quick_teacher, tmp_path, monkeypatch):
    root = tmp_path / "grid"
    shutil.copytree(quick_teacher, root)
    cfg = grid_preset("quick")
    run_grid(cfg, root / "teacher", root, root / "runs" / "grid", only=["gs-s0.5-b8"], progress=False)

    teacher, card = load_model(root / "teacher")
    with torch.no_grad():
        next(teacher.parameters()).add_(0.01)  # "retrained": same architecture, other weights
    save_model(teacher, root / "teacher", card)
    manifest = grid_module.write_manifest(root, root / "teacher", grid_module.weights_digest(teacher))
    assert set(manifest["id"]) == {"teacher"}  # old students and the identity measured against the old teacher left out

    trained = []
    real_run = grid_module.run_method
    monkeypatch.setattr(grid_module, "run_method", lambda *a, **k: trained.append(a[4]) or real_run(*a, **k))
    manifest = run_grid(cfg, root / "teacher", root, root / "runs" / "grid", only=["gs-s0.5-b8"], progress=False)
    # Trained again in the new teacher's own run tree: the old teacher's training state is never resumed.
    assert len(trained) == 1 and trained[0].parent.parent.name == grid_module.weights_digest(teacher)
    assert len(list((root / "runs" / "grid").glob("*/*/gs-s0.5-b8"))) == 2
    assert set(manifest["id"]) == {"teacher", "identity", "gs-s0.5-b8"}
    assert read_card(root / "grid" / "gs-s0.5-b8")["teacher_digest"] == grid_module.weights_digest(teacher)

    # A changed training recipe (here the learning rate) retrains the point too, in a run folder of its own.
    trained.clear()
    new_recipe = replace(cfg, train=replace(cfg.train, lr=cfg.train.lr * 2))
    run_grid(new_recipe, root / "teacher", root, root / "runs" / "grid", only=["gs-s0.5-b8"], progress=False)
    point = {p.id: p for p in cfg.points()}["gs-s0.5-b8"]
    groups = grid_module.prunable_groups(teacher)
    assert len(trained) == 1 and trained[0].parent.name == new_recipe.recipe(point, groups) != cfg.recipe(point, groups)
    assert read_card(root / "grid" / "gs-s0.5-b8")["grid_recipe"] == new_recipe.recipe(point, groups)
    # Logging and checkpoint intervals are not part of the recipe.
    assert (replace(cfg, train=replace(cfg.train, log_every=1, checkpoint_every=1)).recipe(point, groups)
            == cfg.recipe(point, groups))
    # A layer made prunable in the model's code (a changed group set) retrains every point.
    assert cfg.recipe(point, groups[:-1]) != cfg.recipe(point, groups)


GROUPS = ("in01_1", "in03_1")  # a teacher's prunable groups, for the recipe tests that compare configs


def test_a_quantization_delay_is_part_of_the_recipe_only_where_it_acts():
    cfg = grid_preset("quick")
    delayed = replace(cfg, train=replace(cfg.train, quant_delay=0.5))
    changed = {p.id for p in cfg.points() if delayed.recipe(p, GROUPS) != cfg.recipe(p, GROUPS)}
    assert changed == {"gs-s0.5-b8", "gs-s0.9-b8", "gs-s0.5-bmixed"}  # not GS at 32 bits, nor any baseline


def test_the_calibration_quantile_is_part_of_the_recipe_of_quantized_points_only():
    cfg = grid_preset("quick")
    changed_cfg = replace(cfg, train=replace(cfg.train, calibration_quantile=0.99))
    changed = {p.id for p in cfg.points() if changed_cfg.recipe(p, GROUPS) != cfg.recipe(p, GROUPS)}
    assert changed == {p.id for p in cfg.points() if p.bits != 32}
    assert changed >= {"quant-s0-b8", "stacked-s0.5-b8", "gs-s0.5-bmixed"}
    # By default each uniform point records the quantile its bit width resolves to (quant.calibration_quantile)
    default = grid_preset("default")
    points = {p.id: p for p in default.points()}
    for point_id, quantile in (("gs-s0.7-b8", 0.9999), ("gs-s0.7-b4", 0.999), ("quant-s0-b4", 0.999)):
        explicit = replace(default, train=replace(default.train, calibration_quantile=quantile))
        assert explicit.recipe(points[point_id], GROUPS) == default.recipe(points[point_id], GROUPS), point_id


def test_long_preset_is_the_default_grid_trained_three_times_as_long():
    default, long = grid_preset("default"), grid_preset("long")
    assert long.train.steps == 3 * default.train.steps
    assert replace(long, train=default.train) == default
    point = long.points()[0]
    # A long grid never takes a default point as its own.
    assert long.recipe(point, GROUPS) != default.recipe(point, GROUPS)
