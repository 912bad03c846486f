"""The embedded photo set and the datasets built on it."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from gs_core.data.paired import PairedCrops, PhotoFolder
from gs_core.data.photoset import (
    CSV_COLUMNS, RESERVED_PACKAGES, SOURCES, SPLITS, PhotoSource, assign_splits, build_photoset, load_split,
    photoset_dir, read_sources,
)

ROOT = photoset_dir()


def _files_on_disk():
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/*") if p.is_file())


def test_sources_csv_lists_every_file_with_license_and_split():
    with open(ROOT / "SOURCES.csv", newline="", encoding="utf-8") as handle:
        assert tuple(next(csv.reader(handle))) == CSV_COLUMNS
    rows = read_sources()
    assert sorted(row["file"] for row in rows) == _files_on_disk()
    for row in rows:
        assert row["split"] in SPLITS and row["file"].startswith(row["split"] + "/")
        assert row["license"].strip() and row["package"].strip() and row["original_path"].strip()
        assert max(int(row["width"]), int(row["height"])) <= 384


def test_no_photo_from_reserved_packages():
    for row in read_sources():
        assert not any(reserved in row["package"] for reserved in RESERVED_PACKAGES)
        assert not any(reserved in row["original_path"] for reserved in RESERVED_PACKAGES)
    assert not any(source.package in RESERVED_PACKAGES for source in SOURCES)


def test_split_sizes_and_disjointness():
    splits = {split: load_split(split) for split in SPLITS}
    assert sum(len(paths) for paths in splits.values()) >= 40
    assert len(splits["test"]) >= 8 and len(splits["val"]) >= 6
    names = [p.name for paths in splits.values() for p in paths]
    assert len(names) == len(set(names))


def test_split_assignment_matches_the_table():
    assigned = assign_splits()
    assert {row["file"]: row["split"] for row in read_sources()} == {
        f"{split}/{name}.jpg": split for name, split in assigned.items()
    }
    assert assign_splits() == assigned  # a pure function of the table and seed


def test_total_size_within_budget():
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total <= 15 * 1024 * 1024


def test_rebuild_from_the_pip_sources(tmp_path):
    # scikit-image is a test dependency anyway, so this part of the builder
    # runs everywhere, apt packages or not.
    subset = tuple(source for source in SOURCES if source.package == "scikit-image")
    rows = build_photoset(tmp_path, subset)
    assert [row["file"] for row in rows] == [row["file"] for row in read_sources(tmp_path)]
    committed = {row["file"]: row for row in read_sources()}
    for row in rows:
        assert (tmp_path / row["file"]).is_file()
        # Same selection, split and size as the committed copy.
        assert committed[row["file"]]["width"] == row["width"]
        assert committed[row["file"]]["height"] == row["height"]


def test_missing_source_names_the_package_to_install(tmp_path):
    missing = PhotoSource("ghost", "some-wallpapers", "/nonexistent/ghost.jpg", "CC0-1.0")
    with pytest.raises(FileNotFoundError, match="apt-get install some-wallpapers"):
        build_photoset(tmp_path, (missing,))
    assert not (tmp_path / "SOURCES.csv").exists()


def test_load_split_rejects_unknown_split():
    with pytest.raises(ValueError):
        load_split("training")


@pytest.fixture(scope="module")
def crops():
    return PairedCrops(load_split("test")[:3], crop=64, seed=7, repeats=2)


def test_paired_crops_shapes_and_range(crops):
    assert len(crops) == 6
    photo, target = crops[5]
    assert photo.shape == target.shape == (3, 64, 64)
    assert photo.dtype == target.dtype == torch.float32
    for tensor in (photo, target):
        assert 0.0 <= tensor.min() and tensor.max() <= 1.0
    assert (photo - target).abs().mean() > 0.01


def test_paired_crops_are_reproducible(crops):
    again = PairedCrops(load_split("test")[:3], crop=64, seed=7, repeats=2)
    for index in range(len(crops)):
        for a, b in zip(crops[index], again[index]):
            assert torch.equal(a, b)
    crops.set_epoch(1)
    try:
        assert not torch.equal(crops[0][0], again[0][0])  # a new epoch, new crops
        again.set_epoch(1)
        assert torch.equal(crops[0][0], again[0][0])
    finally:
        crops.set_epoch(0)
    with pytest.raises(IndexError):
        crops[len(crops)]


def test_paired_crops_upscale_small_photos(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(path)
    photo, target = PairedCrops([path], crop=64)[0]
    assert photo.shape == target.shape == (3, 64, 64)


@pytest.mark.parametrize("size, side", [(None, "short"), (100, "short"), (200, "long")])
def test_photo_folder_sizes_are_multiples_of_four(size, side):
    folder = PhotoFolder(ROOT / "test", size=size, side=side)
    assert len(folder) == len(load_split("test"))
    name, photo = folder[0]
    assert name == load_split("test")[0].stem
    assert photo.shape[0] == 3 and photo.shape[1] % 4 == 0 and photo.shape[2] % 4 == 0
    if size is not None:
        sides = sorted(photo.shape[1:])
        assert abs((sides[0] if side == "short" else sides[1]) - size) <= 2
