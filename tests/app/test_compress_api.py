"""The jobs API through gradio_client against the running app: /compress, /job, /cancel, and /stylize of a
finished job's student. Tiny teacher, the quick preset, a few steps; one worker thread."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import zipfile

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from gs_core.jobs import JobQueue
from pages.compress import jobs_table, unpack_photos
from pages.store import SHIPPED, GridRegistry

pytestmark = pytest.mark.timeout(300)
FINISHED = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def client(job_server):
    return Client(job_server[0], verbose=False)


def _wait(client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.predict(job_id, api_name="/job")
        if status["state"] in FINISHED:
            return status
        assert time.monotonic() < deadline, f"job {job_id} still {status['state']} after {timeout} s"
        time.sleep(0.5)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_bad_arguments_are_explained(client, tmp_path, tiny_teacher_file):
    teacher = handle_file(str(tiny_teacher_file))
    for args, message in [((teacher, 1.5, "8", 2), "sparsity"), ((teacher, 0.5, "3", 2), "bits must be one of"),
                          ((teacher, 0.5, "8", -1), "steps"), ((teacher, 0.5, "8", 2.5), "whole number")]:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/compress")
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    marker = tmp_path / "payload-ran"
    bomb = tmp_path / "bomb.pth"
    bomb.write_bytes(pickle.dumps({"conv01_1.weight": _Payload(marker)}))
    for bad in (text, bomb):
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(str(bad)), 0.5, "8", 2, api_name="/compress")
        assert "traceback" not in str(caught.value).lower() and bad.name in str(caught.value)
    assert not marker.exists()  # the pickle was refused unread
    with pytest.raises(AppError, match="not a job id"):
        client.predict("../../etc", api_name="/job")
    with pytest.raises(AppError, match="no job"):
        client.predict("20990101-000000-abcdef", api_name="/cancel")
    with pytest.raises(AppError, match="Unknown student id"):
        client.predict(handle_file(str(tiny_teacher_file)), "no-such-teacher/gs-x", api_name="/stylize")


def test_a_quick_job_runs_to_a_student_that_stylize_takes(client, job_server, tiny_teacher_file, photo_path):
    job_id = client.predict(handle_file(str(tiny_teacher_file)), 0.5, "8", 3, api_name="/compress")
    status = _wait(client, job_id)
    assert status["state"] == "done", status["error"]
    assert status["step"] == status["steps"] == 3 and status["error"] is None
    key, point = status["model"].split("/")
    manifest = json.loads((job_server[1] / "teachers" / key / "manifest.json").read_text())
    assert point in [row["id"] for row in manifest]
    out = client.predict(handle_file(str(photo_path)), status["model"], api_name="/stylize")
    with Image.open(out) as image, Image.open(photo_path) as photo:
        assert image.size == photo.size and np.asarray(image).std() > 0
    shipped = client.predict(handle_file(str(photo_path)), "gs-s0.5-b8", api_name="/stylize")  # still served
    with Image.open(out) as a, Image.open(shipped) as b:
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b)).mean() > 1  # another model, another picture


def test_a_cancelled_job_ends_cancelled_and_the_table_says_so(client, job_server):
    # The embedded teacher (None): its quick job is queued behind nothing or a few steps of another.
    job_id = client.predict(None, 0.5, "32", 200, api_name="/compress")
    assert client.predict(job_id, api_name="/cancel")["id"] == job_id
    assert _wait(client, job_id)["state"] == "cancelled"
    table = jobs_table(JobQueue(job_server[1]))
    assert table.loc[table["job"] == job_id, "state"].item() == "cancelled"


def test_photos_unpack_from_zips_and_images_and_bad_ones_are_skipped(tmp_path, photo_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(photo_path, "holiday/one.jpg")
        z.writestr("../../escape.png", photo_path.read_bytes())  # a name that tries to leave the folder
        z.writestr("broken.png", b"\x89PNG not really")
        z.writestr("readme.txt", "text")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    folder, messages = unpack_photos([str(archive), str(photo_path), str(notes)], tmp_path / "out")
    kept = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(kept) == 3 and not (tmp_path / "escape.png").exists()
    assert any("broken.png" in m for m in messages) and any("notes.txt" in m for m in messages)
    assert messages[-1] == "3 photos ready"
    with pytest.raises(ValueError, match="no usable photos"):
        unpack_photos([str(notes)], tmp_path / "none")


def test_the_registry_finds_new_grids_and_reloads_a_changed_manifest(grid, grid_dir, tmp_path):
    found = {}
    grids = GridRegistry(grid, lambda: dict(found))
    assert [key for _, key in grids.choices()] == [SHIPPED] and grids.get("") is grid
    with pytest.raises(KeyError):
        grids.get("mine")
    shutil.copytree(grid_dir, tmp_path / "mine")
    found["mine"] = tmp_path / "mine"
    mine = grids.get("mine")
    assert [key for _, key in grids.choices()] == [SHIPPED, "mine"] and grids.get("mine") is mine  # loaded once
    assert grids.resolve("mine/gs-s0.5-b8") == (mine, "gs-s0.5-b8") and grids.resolve("gs-s0.5-b8")[0] is grid
    manifest = tmp_path / "mine" / "manifest.json"
    rows = [row for row in json.loads(manifest.read_text()) if row["id"] != "prune-s0.5-b32"]
    manifest.write_text(json.dumps(rows))
    os.utime(manifest, ns=(1, manifest.stat().st_mtime_ns + 1))  # a coarse clock may not move by itself
    reloaded = grids.get("mine")
    assert reloaded is not mine and "prune-s0.5-b32" in mine.models and "prune-s0.5-b32" not in reloaded.models
    with pytest.raises(KeyError, match="unknown student id"):
        grids.resolve("mine/prune-s0.5-b32")
