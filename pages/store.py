"""What every page reads: the grid's manifest and cards, the loaded models and the stylized results.

One `ModelGrid` per teacher (the shipped grid, and one for each teacher of the workspace's compression jobs),
held by a `GridRegistry` shared by all sessions; a session holds only the key of the grid it shows. A grid's
model cache is filled once in its constructor and only read afterwards, so concurrent requests need no lock
for it. Stylized results are cached by (photo hash, model id): they depend on nothing else, so sharing them
between users is safe, and it is what makes moving the sparsity slider cheap. Per-user things (the chosen
photo, the uploads) live in `gr.State` on the pages, never here. This module does not import gradio.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from gs_core.checkpoint import load_model, read_card
from gs_core.data.images import LUMA, load_rgb, to_tensor, to_uint8
from gs_core.deploy.choose import DEPLOY_JSON, MODEL_FILE, deploy
from gs_core.eval.evaluate import IDENTITY
from gs_core.eval.quality import psnr, ssim
from gs_core.files import atomic_path
from gs_core.grid import LEGACY_EVAL_SIZE
from gs_core.slim.quant import conv_layers

log = logging.getLogger(__name__)

#: Uploads larger than this on their longer side are downscaled (with a notice): the generators are
#: fully convolutional, so cost grows with pixels; 1024 px keeps one stylization to a few seconds on 2 cores.
MAX_SIDE = 1024
#: Stylized results kept in memory; a 1024 px result is 3 MB, so this bounds the cache near 400 MB
#: and comfortably holds a whole grid for the few photos a session looks at.
RESULT_CACHE_SIZE = 128
#: Prefetches (one per photo chosen, by any session) that may wait for the background worker; older
#: ones are dropped, so a burst of uploads cannot queue minutes of work ahead of the newest photos.
PREFETCH_BACKLOG = 4
#: Metrics as named in the manifest, with whether lower is better (decides Pareto fronts).
QUALITY_METRICS = {"lpips": True, "fid": True, "psnr": False, "ssim": False, "style_retained": False}
COST_METRICS = ("macs", "size_bits", "latency_ms")
#: student - teacher is mostly a few grey levels; this gain makes it visible.
DIFF_GAIN = 4


@dataclass(frozen=True)
class Photo:
    """A decoded photo; `key` identifies its pixels, so equal photos share cached results."""

    name: str
    rgb: np.ndarray
    key: str


def load_photo(source, name: str) -> tuple[Photo, list[str]]:
    """Decode an upload or a file; raises gs_core.data.images.ImageLoadError with a message for people."""
    rgb, notices = load_rgb(source, max_side=MAX_SIDE)
    digest = hashlib.sha1(np.ascontiguousarray(rgb).tobytes())
    digest.update(repr(rgb.shape).encode())  # same bytes, other shape: another photo
    return Photo(name, rgb, digest.hexdigest()[:20]), notices


@dataclass(frozen=True)
class Stylized:
    """One model's output on one photo, and how it differs from the teacher's (None for the teacher).

    The pictures are also written as PNG files once, here: pages hand Gradio these paths, so moving the
    slider back to a student costs no image encoding (about 40 ms per 512 px picture on 2 cores).
    """

    image: np.ndarray
    png: Path
    diff_png: Path | None  # `difference(teacher, image)`
    psnr: float | None
    ssim: float | None


def difference(teacher: np.ndarray, student: np.ndarray) -> np.ndarray:
    """How the student departs from the teacher, x DIFF_GAIN on black: red where it is darker (ink the teacher
    did not draw), blue where it is brighter (ink or shading left out), green for the change in colour that is
    not a change in brightness."""
    delta = student.astype(np.float32) - teacher.astype(np.float32)
    luma = delta @ LUMA
    colour = np.abs(delta) @ LUMA - np.abs(luma)  # >= 0 (triangle inequality): change beyond the brightness
    diff = np.stack([np.maximum(-luma, 0), colour, np.maximum(luma, 0)], axis=-1) * DIFF_GAIN
    return np.clip(diff, 0, 255).astype(np.uint8)


def bits_label(bits) -> str:
    """The manifest stores 8 (int) or "mixed"; pages and the API use one string form."""
    return str(int(bits)) if isinstance(bits, (int, float)) and not isinstance(bits, bool) else str(bits)


class ModelGrid:
    """The checkpoint grid: `table` (the manifest's models, indexed by id), its GS rows `gs`, `cards`, `models`,
    `identity` (the manifest's reference row, output = the photo itself, which is no model; None in a manifest
    without one) and the result cache."""

    def __init__(self, root: str | Path, device: torch.device | str = "cpu"):
        self.root = Path(root)
        self.device = torch.device(device)
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            raise FileNotFoundError(f"no manifest.json in {self.root}: build the checkpoint grid first, "
                                    "or point --checkpoints / GS_CHECKPOINTS at a folder that has one")
        table = pd.DataFrame(json.loads(manifest.read_text()))
        if table.empty:
            raise ValueError(f"{manifest} lists no models")
        if "eval_size" not in table:  # a manifest from before sizes were recorded
            table["eval_size"] = LEGACY_EVAL_SIZE
        is_identity = table["method"] == IDENTITY
        self.identity = table[is_identity].iloc[0] if is_identity.any() else None
        table = table[~is_identity].copy()
        table["bits_label"] = table["bits"].map(bits_label)
        self.table = table.set_index("id", drop=False)
        teachers = self.table.index[self.table["method"] == "teacher"]
        if len(teachers) != 1:
            raise ValueError(f"{manifest} must list exactly one teacher, found {len(teachers)}")
        self.teacher_id = teachers[0]
        self.gs = self.table[self.table["method"] == "gs"]
        self.cards = {mid: read_card(self.root / path) for mid, path in self.table["path"].items()}
        # Keyed by resolved folder so two ids pointing at one folder share a model.
        by_path: dict[Path, torch.nn.Module] = {}
        for path in {(self.root / p).resolve() for p in self.table["path"]}:
            by_path[path] = load_model(path)[0].eval().to(self.device)
        self.models = {mid: by_path[(self.root / p).resolve()] for mid, p in self.table["path"].items()}

        self._lock = threading.Lock()
        self._export_lock = threading.Lock()  # a deploy takes seconds: stylizing must not wait for it
        self._results: OrderedDict[tuple[str, str], Stylized] = OrderedDict()
        self._pending: dict[tuple[str, str], Future] = {}
        # In the system temp folder, where Gradio accepts files returned by event handlers.
        self._files = tempfile.TemporaryDirectory(prefix="gs-studio-")
        # One background worker, so prefetching runs one model at a time next to the requests being served.
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gs-prefetch")
        self._prefetches_queued = 0  # counts prefetch() calls, so a queued one can tell it has gone stale

    # ------------------------------------------------------------------------------- the GS grid
    def sparsity_levels(self) -> list[float]:
        return sorted(float(v) for v in self.gs["sparsity_target"].unique())

    def bits_choices(self) -> list[str]:
        """Distinct bit widths of the GS students, widest first, "mixed" (or any other label) last."""
        labels = set(self.gs["bits_label"])
        numeric = sorted((b for b in labels if b.isdigit()), key=int, reverse=True)
        return numeric + sorted(labels - set(numeric))

    def pick_gs(self, sparsity: float, bits: str) -> str | None:
        """The GS student nearest `sparsity` among those with `bits` (any bits if none has them)."""
        gs = self.gs
        same_bits = gs[gs["bits_label"] == bits_label(bits)]
        pool = same_bits if not same_bits.empty else gs
        if pool.empty:
            return None
        distance = (pool["sparsity_target"].astype(float) - float(sparsity)).abs()
        return str(distance.idxmin())

    def label(self, model_id: str) -> str:
        row = self.table.loc[model_id]
        if row["method"] == "teacher":
            return f"{model_id} (teacher)"
        return f"{model_id} ({row['method']}, {float(row['sparsity_target']):.0%} sparsity, {row['bits_label']}-bit)"

    # ------------------------------------------------------------------------------- model facts
    def layer_channels(self, model_id: str) -> dict[str, tuple[int, int]]:
        """{conv: (kept, total) output channels}; a card without a plan (the teacher) keeps everything."""
        layers = (self.cards[model_id].get("plan") or {}).get("layers")
        if layers:
            return {name: (int(v["out"][0]), int(v["out"][1])) for name, v in layers.items()}
        return {name: (conv.out_channels, conv.out_channels)
                for name, conv in conv_layers(self.models[model_id]).items()}

    def layer_bits(self, model_id: str) -> dict[str, int]:
        """{conv: weight bits}; layers the card does not mention are full precision."""
        card = self.cards[model_id]
        bits = dict((card.get("architecture") or {}).get("weight_bits") or {})
        return {name: int(bits.get(name, 32)) for name in conv_layers(self.models[model_id])}

    def missing_reason(self, metric: str) -> str | None:
        """Why `metric` is null in the manifest, from the first student's card that says so.

        The teacher's card is read last: it lacks quality metrics only because it is their reference.
        """
        students = [m for m in self.cards if m != self.teacher_id]
        for model_id in [*students, self.teacher_id]:
            reason = ((self.cards[model_id].get("metrics") or {}).get("missing") or {}).get(metric)
            if reason:
                return str(reason)
        return None

    def metric_available(self, metric: str) -> bool:
        return metric in self.table and self.table[metric].notna().any()

    def refresh_quality(self) -> None:
        """Read the quality metrics and the cards again after the grid was measured anew (gs_core.grid's
        remeasure); the models stay loaded, since their weights did not change."""
        fresh = pd.DataFrame(json.loads((self.root / "manifest.json").read_text())).set_index("id", drop=False)
        table = self.table.copy()
        for metric in QUALITY_METRICS:
            if metric in fresh:
                table[metric] = fresh[metric].reindex(table.index)
        self.cards = {mid: read_card(self.root / path) for mid, path in table["path"].items()}
        if IDENTITY in fresh.index:
            self.identity = fresh.loc[IDENTITY]
        self.table, self.gs = table, table[table["method"] == "gs"]

    def deployed_zip(self, model_id: str) -> Path:
        """`model_id` deployed for this machine (gs_core.deploy.choose: the fastest exact engine and form, timed at
        the size the manifest was measured at, 2 threads) as a zip of its folder (`<id>/model.onnx` and
        `<id>/deploy.json`, which `stylize --model` runs once unpacked); deployed once, then reused."""
        if model_id not in self.models:
            raise KeyError(f"unknown model id {model_id!r}")
        path = Path(self._files.name) / f"{model_id}-deployed.zip"
        with self._export_lock:  # two sessions asking at once deploy once
            if not path.is_file():
                row, folder = self.table.loc[model_id], Path(self._files.name) / "deployed" / model_id
                size = int(row["eval_size"]) if pd.notna(row["eval_size"]) else LEGACY_EVAL_SIZE
                deploy(self.root / row["path"], folder, size=size, threads=2)  # from the file: on the CPU
                with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
                    for file in (MODEL_FILE, DEPLOY_JSON):
                        archive.write(folder / file, f"{model_id}/{file}")
        return path

    # ------------------------------------------------------------------------------- stylizing
    def stylize(self, photo: Photo, model_id: str) -> Stylized:
        """`model_id`'s output on `photo`, computed at most once per (photo, model) while it stays cached."""
        if model_id not in self.models:
            raise KeyError(f"unknown model id {model_id!r}")
        key = (photo.key, model_id)
        with self._lock:
            if key in self._results:
                self._results.move_to_end(key)
                return self._results[key]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = Future()
        if not owner:  # someone (often the prefetcher) is computing it right now: wait for theirs
            return pending.result()
        try:
            result = self._compute(photo, model_id)
        except BaseException as err:
            with self._lock:
                del self._pending[key]
            pending.set_exception(err)
            raise
        with self._lock:
            del self._pending[key]
            self._results[key] = result
            while len(self._results) > RESULT_CACHE_SIZE:
                self._forget(self._results.popitem(last=False)[1])
        pending.set_result(result)
        return result

    def _compute(self, photo: Photo, model_id: str) -> Stylized:
        with torch.inference_mode():
            image = to_uint8(self.models[model_id].stylize(to_tensor(photo.rgb)[None].to(self.device)).cpu())
        if model_id == self.teacher_id:
            return Stylized(image, self._write_png(image), None, None, None)
        teacher = self.stylize(photo, self.teacher_id).image
        a, b = teacher.astype(np.float32) / 255, image.astype(np.float32) / 255
        return Stylized(image, self._write_png(image), self._write_png(difference(teacher, image)),
                        psnr(a, b), ssim(a, b))

    def _write_png(self, image: np.ndarray) -> Path:
        handle, path = tempfile.mkstemp(suffix=".png", dir=self._files.name)
        with open(handle, "wb") as file:
            # Level 1 encodes 3x faster than the default for files about 20% larger: these stay local.
            Image.fromarray(image).save(file, "PNG", compress_level=1)
        return Path(path)

    @staticmethod
    def _forget(result: Stylized) -> None:
        for path in (result.png, result.diff_png):
            if path is not None:
                path.unlink(missing_ok=True)

    def prefetch(self, photo: Photo, model_ids: list[str]) -> None:
        """Stylize `photo` with `model_ids` in the background, in order, so later picks are cache hits."""
        with self._lock:
            self._prefetches_queued += 1
            number = self._prefetches_queued
        self._prefetcher.submit(self._prefetch, photo, list(model_ids), number)

    def _prefetch(self, photo: Photo, model_ids: list[str], number: int) -> None:
        for model_id in model_ids:
            if self._prefetches_queued - number >= PREFETCH_BACKLOG:
                return  # photos chosen since then come first; this one's user has likely moved on
            try:
                self.stylize(photo, model_id)
            except Exception:  # a failing model shows its error when asked for; nobody waits on this thread
                log.exception("prefetching %s failed", model_id)

    def wait_for_prefetch(self) -> None:
        """Block until the prefetches queued so far are done (the worker runs them in order)."""
        self._prefetcher.submit(lambda: None).result()

    def clear_results(self, keep: str | None = None) -> None:
        """Forget cached results, except those of model `keep` (the benchmark's cold start)."""
        with self._lock:
            for key in [k for k in self._results if k[1] != keep]:
                self._forget(self._results.pop(key))

    def gs_by_distance(self, model_id: str) -> list[str]:
        """GS students ordered by how many slider/bits steps they are from `model_id` (the next likely picks)."""
        levels, bits = self.sparsity_levels(), self.bits_choices()
        if model_id in self.gs.index:
            row = self.gs.loc[model_id]
            here = (levels.index(float(row["sparsity_target"])), bits.index(row["bits_label"]))
        else:
            here = (0, 0)

        def steps(mid: str) -> float:
            row = self.gs.loc[mid]
            there = (levels.index(float(row["sparsity_target"])), bits.index(row["bits_label"]))
            return math.hypot(there[0] - here[0], there[1] - here[1])

        return sorted(self.gs.index, key=steps)


#: The shipped grid's key (checkpoints/); the workspace's grids have the keys gs_core.jobs gives their teachers.
SHIPPED = "shipped"


class GridRegistry:
    """Every grid the app shows, by key: the shipped one, loaded at start-up, and the workspace's.

    `discover()` returns {key: folder} of the workspace's grids as they are now. A workspace grid is loaded when
    first asked for and loaded again when its manifest.json changes (written atomically when a job finishes), so
    a new student appears without a restart; every session then sees the new grid.
    """

    def __init__(self, shipped: ModelGrid, discover: Callable[[], dict] = dict):
        self.shipped = shipped
        self._discover = discover
        self._loaded: dict[str, tuple[int, ModelGrid]] = {}  # key -> (manifest mtime, grid)
        self._lock = threading.Lock()  # one load at a time: two sessions asking at once load a grid once

    def folders(self) -> dict[str, Path]:
        """{key: folder} of every grid with a manifest, the shipped one first."""
        found = {str(k): Path(v) for k, v in self._discover().items() if (Path(v) / "manifest.json").is_file()}
        return {SHIPPED: self.shipped.root, **{k: v for k, v in found.items() if k != SHIPPED}}

    def choices(self) -> list[tuple[str, str]]:
        """(label, key) for a selector: the teacher's id and how many models its grid holds."""
        def label(key: str, folder: Path) -> str:
            if key == SHIPPED:
                return f"Shipped grid (embedded teacher, {len(self.shipped.table)} models)"
            try:
                count = len(json.loads((folder / "manifest.json").read_text()))
            except (OSError, ValueError):
                count = "?"
            return f"Your teacher {key} ({count} models)"
        return [(label(k, f), k) for k, f in self.folders().items()]

    def get(self, key: str | None) -> ModelGrid:
        """The grid of `key` ("" or None: the shipped one), reloaded if its manifest changed since."""
        if not key or key == SHIPPED:
            return self.shipped
        with self._lock:
            folder = self._loaded[key][1].root if key in self._loaded else self.folders().get(key)
            if folder is None:
                raise KeyError(f"unknown teacher grid {key!r}")
            stamp = (folder / "manifest.json").stat().st_mtime_ns
            if key not in self._loaded or self._loaded[key][0] != stamp:
                self._loaded[key] = (stamp, ModelGrid(folder, self.shipped.device))
            return self._loaded[key][1]

    def resolve(self, model: str) -> tuple[ModelGrid, str]:
        """(grid, model id) for a model named as the API names it: "<key>/<id>" for a workspace grid's model
        (what a finished job reports), a plain id for the shipped grid's. Raises KeyError with a message."""
        key, _, model_id = model.rpartition("/")
        grid = self.get(key)
        if model_id not in grid.models:
            raise KeyError(f"unknown student id {model!r}; the {key or SHIPPED} grid has: "
                           f"{', '.join(grid.table.index)}")
        return grid, model_id
