"""evaluate_models on tiny injected models: values, missing-metric reporting, table output."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from gs_core.eval import cost, quality
from gs_core.eval.evaluate import METRICS, NO_MODEL, evaluate_models, write_table
from gs_core.eval.quality import LPIPSMetric

SIZE = 32


class Tiny(nn.Module):
    """Convs in `forward` for the cost metrics; `stylize` scales the photo, so quality is predictable."""

    def __init__(self, width: int, scale: float):
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 1))

    def forward(self, x):
        return self.body(x)

    def stylize(self, rgb01):
        return rgb01 * self.scale


class ChannelStatsFID:
    """Stands in for FIDMetric with 6-d features (channel means and stds): a real 2048-d FID is slow on CPU."""

    def features(self, images):
        return torch.cat([images.mean((2, 3)), images.std((2, 3))], 1).double().numpy()

    def fid(self, images_a, images_b):
        return quality.fid_from_features(self.features(images_a), self.features(images_b))


@pytest.fixture
def setup(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    student = Tiny(4, 0.5)
    student.body[0].weight_bits = 4
    models = {"teacher.pt": (Tiny(16, 1.0), {"name": "teacher"}),
              "copy.pt": (Tiny(16, 1.0), {"name": "copy"}),
              "dim.pt": (student, {"name": "dim"})}
    return photos, lambda path: models[path], models


@pytest.fixture
def empty_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def run(setup, **kwargs):
    photos, loader, _ = setup
    return evaluate_models(["copy.pt", "dim.pt"], photos, "teacher.pt", size=SIZE, loader=loader,
                           progress=False, **kwargs)


def test_missing_backbones_leave_nan_and_a_reason_never_a_substitute(setup, empty_torch_cache):
    df = run(setup)
    assert list(df["name"]) == ["copy", "dim"]
    assert df["lpips"].isna().all() and df["fid"].isna().all()
    assert df["lpips_missing_reason"].str.contains("alexnet-owt-7be5be79.pth").all()
    assert df["fid_missing_reason"].str.contains("pt_inception-2015-12-05-6726825d.pth").all()
    assert df["fid_missing_reason"].str.contains("python -m gs_core fetch-weights").all()
    for metric in ("params", "macs", "size_bits", "latency_ms", "psnr", "ssim"):
        assert df[f"{metric}_missing_reason"].isna().all()
        assert df[metric].notna().all()
    # This teacher returns the photo: there is no style to retain, and the table says so rather than failing.
    assert df["style_retained"].isna().all()
    assert df["style_retained_missing_reason"].str.contains("returns these photos unchanged").all()


def test_quality_is_measured_against_the_teacher_outputs(setup, monkeypatch, tmp_path):
    monkeypatch.setattr(quality, "LPIPSMetric", lambda net: LPIPSMetric.with_random_trunk(net))
    monkeypatch.setattr(quality, "FIDMetric", ChannelStatsFID)
    photos_dir = setup[0]
    df = run(setup, metrics=("psnr", "ssim", "lpips", "fid"), target_dir=photos_dir).set_index("name")
    photos = quality.load_image_folder(photos_dir, SIZE)

    assert df.loc["copy", "psnr"] == math.inf
    assert df.loc["dim", "psnr"] == pytest.approx(quality.psnr(photos * 0.5, photos))
    assert df.loc["copy", "ssim"] == pytest.approx(1.0)
    assert df.loc["dim", "ssim"] == pytest.approx(quality.ssim(photos * 0.5, photos))
    assert df.loc["copy", "lpips"] == pytest.approx(0.0, abs=1e-6)
    assert df.loc["dim", "lpips"] > 0
    assert df.loc["copy", "fid"] == pytest.approx(0.0, abs=1e-6)
    assert df.loc["dim", "fid"] > 0
    # The target folder is the photos themselves here, so the teacher copy's FID to it is also ~0.
    assert df.loc["copy", "fid_target"] == pytest.approx(0.0, abs=1e-6)
    assert df.loc["dim", "fid_target"] == pytest.approx(df.loc["dim", "fid"])
    assert (df["n_photos"] == 4).all()
    assert df.filter(like="_missing_reason").isna().all().all()


def test_costs_and_compression_against_the_teacher(setup):
    photos_dir, loader, models = setup
    df = evaluate_models(["dim.pt"], None, "teacher.pt", metrics=("params", "macs", "size_bits", "latency_ms"),
                         size=SIZE, loader=loader, progress=False)
    row = df.iloc[0]
    teacher, student = models["teacher.pt"][0], models["dim.pt"][0]
    assert row["params"] == cost.count_params(student) == 3 * 4 * 9 + 4 + 4 * 3 + 3
    assert row["macs"] == SIZE * SIZE * (3 * 4 * 9 + 4 * 3)
    assert row["compression_macs"] == pytest.approx(cost.count_macs(teacher, (SIZE, SIZE)) / row["macs"])
    assert row["size_bits"] == 32 * row["params"] - 28 * 3 * 4 * 9
    assert row["compression_size"] == pytest.approx(32 * cost.count_params(teacher) / row["size_bits"])
    assert row["latency_ms"] > 0 and row["speedup"] > 0
    assert "n_photos" not in df.columns and "psnr" not in df.columns


def test_bad_requests_are_rejected(setup):
    photos_dir, loader, _ = setup
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate_models(["dim.pt"], photos_dir, "teacher.pt", metrics=("psnr", "bleu"), loader=loader)
    with pytest.raises(ValueError, match="need photos_dir"):
        evaluate_models(["dim.pt"], None, "teacher.pt", metrics=("psnr",), loader=loader)


def test_write_table_csv_and_json(tmp_path):
    df = pd.DataFrame([{"name": "a", "psnr": 31.5, "fid": math.nan, "fid_missing_reason": "no weights"}])
    write_table(df, tmp_path / "t.csv")
    assert pd.read_csv(tmp_path / "t.csv").iloc[0]["psnr"] == 31.5
    write_table(df, tmp_path / "t.json")
    [record] = json.loads((tmp_path / "t.json").read_text())
    assert record == {"name": "a", "psnr": 31.5, "fid": None, "fid_missing_reason": "no weights"}
    with pytest.raises(ValueError, match=".csv or .json"):
        write_table(df, tmp_path / "t.xlsx")


def test_identity_row_and_style_retained(setup):
    """A teacher that halves the photo: a model that scales it by 0.75 reproduces 1 - 0.25^2 / 0.5^2 = 3/4 of
    the teacher's change; "output = the photo" none of it, and has no costs."""
    photos_dir, _, _ = setup
    models = {"teacher.pt": (Tiny(16, 0.5), {"name": "teacher"}), "copy.pt": (Tiny(16, 0.5), {"name": "copy"}),
              "most.pt": (Tiny(4, 0.75), {"name": "most"})}
    df = evaluate_models(["copy.pt", "most.pt"], photos_dir, "teacher.pt", metrics=("macs", "psnr", "style_retained"),
                         size=SIZE, loader=models.get, progress=False, identity=True)
    assert list(df["name"]) == ["copy", "most", "identity"]
    df = df.set_index("name")
    assert df.loc["copy", "style_retained"] == 1.0
    assert df.loc["most", "style_retained"] == pytest.approx(0.75, abs=1e-6)  # float32 outputs
    assert df.loc["identity", "style_retained"] == 0.0
    photos = quality.load_image_folder(photos_dir, SIZE)
    assert df.loc["identity", "psnr"] == pytest.approx(quality.psnr(photos, photos * 0.5))
    assert math.isnan(df.loc["identity", "macs"]) and df.loc["identity", "macs_missing_reason"] == NO_MODEL
    assert df.loc["identity", "psnr_missing_reason"] is None and df.loc["most", "macs"] > 0


def test_metric_names_are_the_documented_ones():
    assert METRICS == ("params", "macs", "size_bits", "latency_ms", "psnr", "ssim", "lpips", "fid", "style_retained")
