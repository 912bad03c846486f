"""The grid: GS students along sparsity x bit width, the paper's baselines beside them, one manifest for all.

Each point trains in `runs/grid/<teacher digest>/<recipe digest>/<id>/` (resumable) and is saved as
`checkpoints/grid/<id>/` once trained and measured, its card naming both digests. A point whose card has metrics
from this very teacher and recipe (crop size, batch, the TrainConfig fields that act on it) is skipped, so reruns
only do what is missing; a retrained teacher, or a changed recipe, retrains the points it changes in a run tree of
their own, so stale training state is never resumed. A point that fails is reported in
`checkpoints/grid/failures.json` and the others go on. The manifest is rebuilt from the cards after every point.
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
import traceback
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from gs_core.checkpoint import load_model, read_card, save_model, write_card
from gs_core.data.photoset import load_split
from gs_core.data.teacher_cache import distillation_pairs, task_targets
from gs_core.deploy.choose import DeployError, deploy, runtime_label
from gs_core.eval.backbones import fetch_weights
from gs_core.eval.evaluate import IDENTITY, QUALITY_METRICS, evaluate_models
from gs_core.files import atomic_path, weights_digest
from gs_core.methods import SlimConfig, delays_quantization, run_method
from gs_core.models import Generator
from gs_core.slim.bit_allocation import allocate_bits, layer_sensitivity
from gs_core.slim.packing import save_packed
from gs_core.slim.quant import FULL_PRECISION, calibration_quantile, conv_layers
from gs_core.slim.train import TrainConfig

PACKED = "packed.safetensors"  # sub-32-bit weights bit-packed: the file whose size `size_bits` describes
QUALITY = ("psnr", "ssim", "lpips", "fid")  # None for the teacher, their reference (its style_retained is 1)
MANIFEST_FIELDS = ("id", "method", "bits", "sparsity_target", "channels_removed", "macs_removed", "params", "macs",
                   "size_bits", "compression_size", "compression_macs", "latency_ms", "runtime", "latency_ms_torch",
                   "psnr", "ssim", "lpips", "fid", "style_retained", "eval_size", "path")
DEPLOY_THREADS = 2  # every latency in the manifest is deploy's choice at 2 threads
TEACHER_FOLDER = "teacher"  # where a grid keeps its teacher, inside the grid's folder
LEGACY_EVAL_SIZE = 256  # cards written before `eval_size` was recorded were all measured at 256 px


@dataclass(frozen=True)
class Point:
    method: str
    sparsity: float
    bits: int | str  # "mixed" is resolved by the bit allocator

    @property
    def id(self) -> str:
        return f"{self.method}-s{self.sparsity:g}-b{self.bits}"


@dataclass
class GridConfig:
    sparsities: tuple[float, ...] = (0.4, 0.7, 0.85, 0.95)
    bits: tuple[int, ...] = (32, 8, 4)
    baselines: tuple[Point, ...] = (
        Point("distill", 0.7, 32), Point("distill", 0.85, 32),
        Point("prune", 0.7, 32), Point("prune", 0.85, 32),
        Point("quant", 0.0, 8), Point("quant", 0.0, 4),
        Point("stacked", 0.7, 8), Point("stacked", 0.85, 8),
        # At 4 bits, where quantization costs most (quant-s0-b4), doing it with pruning at once should matter most.
        Point("stacked", 0.85, 4),
        Point("stacked-scratch", 0.7, 8), Point("stacked-scratch", 0.85, 8),
        # Latency budgets (a fraction of the teacher's onnxruntime latency removed) near the measured latency of
        # gs-s0.4-b32 and gs-s0.7-b32 (0.73 and 0.51 of the teacher's), to compare the two budgets at equal
        # measured latency; gs-s0.85-b32 is already near the latency of every group at its floor.
        Point("gs-latency", 0.3, 32), Point("gs-latency", 0.5, 32),
        # A size budget at gs-s0.85-b8's size (50x), the paper's headline being a file size. On this teacher it
        # ends near gs-s0.85-b8 (30.37 against 30.03 dB, 6.6x against 6.8x fewer MACs): the layers heavy in
        # weights and those heavy in MACs are the same ones.
        Point("gs-size", 0.98, 8),
    )
    size: int = 96  # training crop size
    batch_size: int = 4
    channel_multiple: str = "auto"  # SlimConfig.channel_multiple of every pruned point
    # 1,000 steps: about an hour for the grid on 2 cores, inside a 2-h budget; quality still rises with more (3,000:
    # the `long` preset; docs/grid-and-studies.md, "Why 1,000 steps"). TrainConfig's schedule (prune in the first
    # fifth, then fine-tune on a cosine of its own) was chosen here: on the validation photos (85% MACs removed,
    # 8 bits, 300 steps) it lifted GS from 31.59 to 32.49 dB and the stacked baseline from 32.52 to 33.10 dB over
    # pruning in 60% of the steps on one cosine.
    # lr 8e-4, four times TrainConfig's: on the validation photos (85%, 8 bits, 3 seeds) 4e-4 lifted GS by 0.35 dB
    # and the stacked baseline by 0.43 dB over 2e-4, and 8e-4 by 0.23 and 0.30 dB more; 1.6e-3 added 0.14 and 0.06
    # dB but doubled the spread over seeds (docs/grid-and-studies.md, "The learning rate").
    # quant_delay 0.6: a GS student's quantizers come on 400 steps before the end (halfway into fine-tuning); on the
    # validation photos (85%, 8 bits, 3 seeds) +0.34 dB over quantizing from the first step; 0.4 and 0.8 were no
    # better, a cosine restarted at the switch 0.11 dB worse (docs/grid-and-studies.md, "What does not close GS's
    # gap to stacked").
    # Under 8 bits it stays: no delay won at 85% / 4 bits but lost over the grid's 4-bit and mixed points on the
    # validation photos (docs/grid-and-studies.md, "At 4 bits").
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1000, lr=8e-4, quant_delay=0.6, ndf=16, checkpoint_every=50, log_every=10))
    # Sparsities that also get a mixed-precision GS student. Its bits average `mixed_average_bits` per weight,
    # and it is pruned to exactly the size in bits of the uniform `mixed_reference_bits` GS student at the same
    # sparsity (trained first), so the two compare at equal size.
    mixed: tuple[float, ...] = (0.7, 0.85)
    mixed_average_bits: float = 4.0
    mixed_reference_bits: int = 4
    eval_size: int = 256
    metrics: tuple[str, ...] = ("params", "macs", "size_bits", "latency_ms", "psnr", "ssim", "lpips", "fid",
                                "style_retained")

    def recipe(self, point: Point, groups: Sequence[str]) -> str:
        """A digest of everything that decides how `point` trains (not how often it logs or saves), `groups` being
        the teacher's prunable channel groups (`[g.name for g in teacher.channel_groups()]`: a layer made prunable
        retrains the grid). The quantization settings are left out where they do not act (a delay where none is
        set or `delays_quantization` says no, the calibration quantile for a 32-bit point), so changing one
        retrains only the points it changes."""
        delayed = self.train.quant_delay and delays_quantization(point.method, point.bits)
        ignored = ({"checkpoint_every", "log_every"} | (set() if delayed else {"quant_delay"})
                   | ({"calibration_quantile"} if point.bits == FULL_PRECISION else set()))
        train = {k: v for k, v in asdict(self.train).items() if k not in ignored}
        if isinstance(point.bits, int) and "calibration_quantile" in train and train["calibration_quantile"] is None:
            train["calibration_quantile"] = calibration_quantile(point.bits)  # the quantile it resolves to
        rounding = {} if self.channel_multiple == "auto" else {"channel_multiple": self.channel_multiple}
        text = json.dumps({"size": self.size, "batch_size": self.batch_size, "train": train, **rounding,
                           "groups": list(groups)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def points(self) -> list[Point]:
        return ([Point("gs", s, b) for s in self.sparsities for b in self.bits]
                + [Point("gs", s, "mixed") for s in self.mixed] + list(self.baselines))

    def reference(self, point: Point) -> Point | None:
        """The uniform GS point a mixed point is size-matched to: it must be trained first."""
        return Point("gs", point.sparsity, self.mixed_reference_bits) if point.bits == "mixed" else None


PRESETS = {
    "default": GridConfig(),
    # The default grid trained three times as long (3,000 steps a point, about 3.5 h on 2 CPU cores): at 85% / 8 bits
    # and lr 4e-4 GS kept 0.91 of the teacher's style on the test photos instead of 0.90 (scripts/seeds_study.py --set
    # steps=3000 lr=4e-4, 3 seeds; docs/grid-and-studies.md, "Why 1,000 steps").
    "long": replace(GridConfig(), train=replace(GridConfig().train, steps=3000)),
    # Seconds, for tests: a 2 x 2 GS grid and one of each baseline on a tiny teacher.
    "quick": GridConfig(sparsities=(0.5, 0.9), bits=(32, 8),
                        baselines=(Point("distill", 0.5, 32), Point("prune", 0.5, 32), Point("quant", 0.0, 8),
                                   Point("stacked", 0.5, 8), Point("stacked-scratch", 0.5, 8)),
                        mixed=(0.5,), mixed_reference_bits=8, size=32, batch_size=2, eval_size=32,
                        train=TrainConfig(steps=6, ndf=4, d_layers=1, checkpoint_every=3, log_every=2),
                        metrics=("params", "macs", "size_bits", "latency_ms", "psnr", "ssim", "style_retained")),
}


def mixed_allocation(teacher, inputs: torch.Tensor, average_bits: float) -> dict:
    """Per-layer bits for a GS student from the teacher's layer sensitivities (on a few training crops)."""
    sample = inputs[:8]
    sensitivity = layer_sensitivity(teacher, sample)
    weights = {name: conv.weight.numel() for name, conv in conv_layers(teacher).items()}
    return {"bit_allocation": allocate_bits(sensitivity, weights, average_bits), "average_bits_budget": average_bits,
            "sensitivity": sensitivity}


def _size_matched(slim_cfg: SlimConfig, allocation: dict, run: GridRun, point: Point) -> SlimConfig:
    """The mixed student's config: its bit allocation, and a size budget equal to the uniform student's size."""
    reference = run.cfg.reference(point)
    folder = run.out / "grid" / reference.id
    if not _finished(folder, run.digest, run.cfg.recipe(reference, run.groups)):
        raise RuntimeError(f"{point.id} is size-matched to {reference.id}: train that point first")
    size = read_card(folder)["metrics"]["size_bits"]
    teacher_size = read_card(run.teacher_path)["metrics"]["size_bits"]
    allocation["size_budget_bits"] = size
    allocation["size_matched_to"] = reference.id
    return replace(slim_cfg, bits=allocation["bit_allocation"], sparsity=1 - size / teacher_size,
                   train=replace(slim_cfg.train, budget_metric="size_bits"))


def prunable_groups(teacher: Generator) -> list[str]:
    """The names of the teacher's channel groups, which the grid's recipe records."""
    return [group.name for group in teacher.channel_groups()]


def grid_preset(name: str) -> GridConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown grid preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def _finished(folder: Path, teacher_digest: str, recipe: str | None = None) -> bool:
    """Trained and measured, from the teacher whose weights_digest is given (and, where `recipe` is given, with
    that recipe, `GridConfig.recipe`: what the grid would train now)."""
    try:
        card = read_card(folder)
    except Exception:  # an unreadable card means the point must be redone
        return False
    return ("metrics" in card and card.get("teacher_digest") == teacher_digest
            and (recipe is None or card.get("grid_recipe") == recipe))


def _measure(folder: Path | None, teacher_path: Path, cfg: GridConfig, photos: Path, device) -> dict:
    """Metrics against the teacher on the test photos, at cfg.eval_size (recorded as `eval_size`: MACs and
    latency depend on it); a metric that cannot be computed is None + reason. Without a folder: the quality
    metrics of "output = the photo itself" (the identity reference)."""
    requested = cfg.metrics if folder else tuple(m for m in cfg.metrics if m in QUALITY_METRICS)
    row = evaluate_models([folder] if folder else [], photos, teacher_path, metrics=requested, size=cfg.eval_size,
                          progress=False, device=device, identity=not folder).iloc[0].to_dict()
    metrics, missing = {}, {}
    for name in requested:
        value = row.get(name)
        reason = row.get(f"{name}_missing_reason")
        if reason:
            missing[name] = reason
        metrics[name] = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
    for extra in ("compression_size", "compression_macs", "speedup", "n_photos"):
        if extra in row:
            metrics[extra] = row[extra]
    for name in set(QUALITY_METRICS) - set(cfg.metrics):
        missing[name] = "not requested in this grid preset"
    if folder and metrics.get("latency_ms") is not None:
        is_teacher = Path(folder).resolve() == Path(teacher_path).resolve()
        teacher_ms = None if is_teacher else _teacher_deployed_ms(teacher_path, cfg.eval_size)
        _deployed_latency_(metrics, folder, cfg.eval_size, teacher_ms, is_teacher)
    return {**metrics, "eval_size": cfg.eval_size, "device": str(device), "missing": missing}


def deployed_latency(folder: Path, size: int) -> dict:
    """What `deploy` (gs_core.deploy.choose) chooses for `folder` on this machine at size x size and
    DEPLOY_THREADS, deployed to a temporary folder: its deploy.json."""
    with tempfile.TemporaryDirectory() as tmp:
        return deploy(folder, Path(tmp) / "deployed", size=size, threads=DEPLOY_THREADS)


def _deployed_latency_(metrics: dict, folder: Path, size: int, teacher_ms: float | None,
                       is_teacher: bool = False) -> float | None:
    """Make `metrics`' latency (PyTorch eager, just timed) the deployed one: latency_ms and runtime become
    deploy's choice, the eager figure moves to latency_ms_torch, speedup is over the teacher's deployed
    `teacher_ms` (None where unknown), and `deployed` keeps the CPU and every candidate. Returns the deployed ms.
    A model deploy finds no exact form for keeps its eager latency (runtime "pytorch") and `deploy_error` says why."""
    eager = metrics.get("latency_ms")
    try:
        info = deployed_latency(folder, size)
    except DeployError as err:
        metrics.update(latency_ms=eager, runtime="pytorch", latency_ms_torch=eager, deploy_error=str(err))
        return None
    ms = info["latency_ms"]
    metrics.pop("deploy_error", None)
    metrics.update(latency_ms=ms, runtime=runtime_label(info), latency_ms_torch=eager,
                   speedup=1.0 if is_teacher else teacher_ms / ms if teacher_ms else None,
                   deployed={**{k: info[k] for k in ("engine", "precision", "variant", "size", "threads", "cpu",
                                                     "cpu_flags")},
                             "candidates": [{k: c[k] for k in ("engine", "precision", "variant", "fidelity_db",
                                                               "latency_ms", "why")} for c in info["candidates"]]})
    return ms


def _teacher_deployed_ms(teacher_path: Path, size: int) -> float | None:
    """The teacher's deployed latency at `size` from its card, where it has one."""
    metrics = read_card(teacher_path).get("metrics", {})
    deployed = metrics.get("runtime") not in (None, "pytorch") and metrics.get("eval_size") == size
    return metrics.get("latency_ms") if deployed else None


def manifest_record(point_id: str, folder: Path, card: dict, teacher_macs: int, root: Path) -> dict:
    metrics = card.get("metrics", {})
    plan = card.get("plan", {})
    kept, total = plan.get("channels_kept"), plan.get("channels_total")
    record = {
        "id": point_id, "method": card.get("method"), "bits": card.get("bits"),
        "sparsity_target": card.get("sparsity_target", 0.0),
        "channels_removed": 1 - kept / total if kept is not None and total else 0.0,
        "macs_removed": 1 - metrics["macs"] / teacher_macs if metrics.get("macs") else None,
        "path": str(folder.relative_to(root)),
    }
    record.update({k: metrics.get(k) for k in MANIFEST_FIELDS if k not in record})
    record["eval_size"] = metrics.get("eval_size", LEGACY_EVAL_SIZE) if metrics else None
    # Where latency_ms was timed: deploy's choice on the machine that measured it (engine-precision), and the
    # PyTorch eager time as latency_ms_torch; "pytorch" where only eager was timed (older cards).
    record["runtime"] = record["runtime"] or "pytorch"
    return record


def identity_record(metrics: dict) -> dict:
    """The manifest's reference row: output = the photo itself, its quality against the teacher; no costs."""
    return {**dict.fromkeys(MANIFEST_FIELDS), **{k: metrics.get(k) for k in MANIFEST_FIELDS},
            "id": IDENTITY, "method": IDENTITY}


def write_manifest(root: Path, teacher_path: Path, teacher_digest: str,
                   in_progress: Collection[str] = ()) -> pd.DataFrame:
    """Rebuild `root/manifest.json` from the teacher's card (the teacher must live under root; its `identity`
    entry gives the identity row) and the card of every grid point distilled from it (`teacher_digest`, its
    weights_digest). Unfinished points are left out, and named unless they are `in_progress` (being trained right
    now, by another worker)."""
    teacher_card = read_card(teacher_path)
    teacher_macs = teacher_card["metrics"]["macs"]
    records = [manifest_record("teacher", teacher_path, teacher_card, teacher_macs, root)]
    if teacher_card.get("identity", {}).get("teacher_digest") == teacher_digest:
        records.append(identity_record(teacher_card["identity"]))
    left_out = []
    for folder in sorted((root / "grid").glob("*/")):
        if _finished(folder, teacher_digest):
            records.append(manifest_record(folder.name, folder, read_card(folder), teacher_macs, root))
        elif folder.name not in in_progress:
            left_out.append(folder.name)
    if left_out:
        print(f"[grid] left out of the manifest, unfinished or distilled from another teacher (run the grid to "
              f"redo them): {', '.join(left_out)}", flush=True)
    with atomic_path(root / "manifest.json") as tmp:  # the app may be reading it
        Path(tmp).write_text(json.dumps(records, indent=1) + "\n")
    return pd.DataFrame(records)


def measure_teacher(teacher_path: Path, digest: str, cfg: GridConfig, photos: Path, device) -> None:
    """The teacher's own costs, at the size its students are measured at (measured again for another size), and
    the identity reference's quality at that size, kept in the teacher's card as `identity` with the digest of
    the teacher it was measured against."""
    card = read_card(teacher_path)
    if "metrics" not in card or card["metrics"].get("eval_size", LEGACY_EVAL_SIZE) != cfg.eval_size:
        metrics = _measure(teacher_path, teacher_path, cfg, photos, device)
        for name in QUALITY:  # the teacher is the reference the others are compared with
            metrics[name] = None
            metrics["missing"][name] = "the teacher is the reference for this metric"
        card.update(metrics=metrics, method="teacher", bits=32, sparsity_target=0.0)
    held = card.get("identity", {})
    if (held.get("eval_size"), held.get("teacher_digest")) != (cfg.eval_size, digest):
        card["identity"] = {**_measure(None, teacher_path, cfg, photos, device), "teacher_digest": digest}
    if card != read_card(teacher_path):  # written only when measured: another grid lane may be reading it
        write_card(teacher_path, card)


def import_teacher(source: str | Path, out: str | Path) -> Path:
    """The teacher folder of the grid in `out` for `source`: our checkpoint folder or an official .pth / .pt.

    A folder already inside `out` is used as it is. Anything else is loaded once (which detects its architecture
    and refuses a damaged or unknown file) and saved as `out/teacher/` with a card naming the source file, its
    sha256 and the architecture found; later runs with the same source reuse that folder. A grid folder holds
    one teacher: another teacher already in `out/teacher/` is refused rather than replaced."""
    source, out = Path(source).resolve(), Path(out).resolve()
    if source.is_relative_to(out) and source.is_dir():
        return source
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such teacher file or folder")
    digest = hashlib.sha256((source / "weights.safetensors" if source.is_dir() else source).read_bytes()).hexdigest()
    folder = out / TEACHER_FOLDER
    if (folder / "card.json").is_file():
        held = read_card(folder).get("source", {})
        if held.get("sha256") == digest:
            return folder
        raise ValueError(f"{folder} already holds another teacher ({held.get('file', 'the shipped one')}); give "
                         f"this grid its own folder with --out")
    model, card = load_model(source)
    spec = card["architecture"]
    print(f"[grid] teacher {source.name}: {spec['name']} {spec['config']}, copied to {folder}", flush=True)
    save_model(model, folder, {"name": "teacher", "method": "teacher",
                               "source": {"file": str(source), "sha256": digest, "detected": spec["name"]}})
    return folder


def remeasure(cfg: GridConfig, teacher_path: str | Path, out: str | Path, metrics: list[str],
              device: torch.device | str = "cpu") -> pd.DataFrame:
    """Measure `metrics` again for every finished point in one run (say latency, on a quiet machine, with the
    teacher timed in the same interleaved run as all of them), update the cards, rebuild the manifest. With a
    quality metric, the identity reference is measured again too, on all of the grid's quality metrics."""
    teacher_path, out = Path(teacher_path).resolve(), Path(out).resolve()
    digest = weights_digest(load_model(teacher_path)[0])
    folders = [teacher_path] + [f for f in sorted((out / "grid").glob("*/")) if _finished(f, digest)]
    photos = Path(load_split("test")[0]).parent
    table = evaluate_models(folders, photos, teacher_path, metrics=metrics, size=cfg.eval_size, device=device)
    if set(metrics) & set(QUALITY_METRICS):
        card = read_card(teacher_path)
        card["identity"] = {**_measure(None, teacher_path, cfg, photos, device), "teacher_digest": digest}
        write_card(teacher_path, card)
    teacher_ms = None
    for folder, (_, row) in zip(folders, table.iterrows()):
        card = read_card(folder)
        for name in [*metrics, "speedup", "compression_size", "compression_macs"]:
            if folder == teacher_path and name in QUALITY:
                continue  # the teacher is these metrics' reference: against itself it would score perfectly
            if name in row and not pd.isna(row[name]):
                card["metrics"][name] = row[name]
                card["metrics"].get("missing", {}).pop(name, None)
        if "latency_ms" in metrics:  # the teacher comes first: its deployed time is the students' reference
            card["metrics"]["runtime"] = "pytorch"  # what evaluate_models just timed
            ms = _deployed_latency_(card["metrics"], folder, cfg.eval_size, teacher_ms, folder == teacher_path)
            teacher_ms = ms if folder == teacher_path else teacher_ms
        write_card(folder, card)
    return write_manifest(out, teacher_path, digest)


#: The backbone (gs_core.eval.backbones) whose ImageNet weights each learned metric needs.
METRIC_BACKBONES = {"lpips": "alexnet", "fid": "fid_inception"}


def fetch_and_remeasure(teacher_path: str | Path, out: str | Path, metrics: tuple[str, ...] = ("lpips", "fid"),
                        timeout_s: float = 20, device: torch.device | str = "cpu") -> pd.DataFrame:
    """Download the weights `metrics` need, then measure them on every finished point of the grid in `out`
    (`remeasure`), at the size its teacher was measured at. What the app's Pareto page runs to fill its LPIPS and
    FID curves. Without internet the download raises RuntimeError with one line before anything is measured;
    `timeout_s` bounds each socket operation, so a dead network fails within it instead of hanging."""
    fetch_weights([METRIC_BACKBONES[m] for m in metrics], timeout_s=timeout_s)
    size = read_card(teacher_path).get("metrics", {}).get("eval_size", LEGACY_EVAL_SIZE)
    return remeasure(replace(GridConfig(), eval_size=size), teacher_path, out, list(metrics), device)


@dataclass
class GridRun:
    """What every point of one grid run shares. Built once by `run_grid` and handed to a backend, which trains
    points with `try_point` (a Ray backend ships a copy to each worker)."""
    cfg: GridConfig
    teacher: Generator
    digest: str  # the teacher's weights_digest
    teacher_path: Path
    out: Path
    run_dir: Path  # this teacher's run tree: run_dir / <recipe> / <point id> holds a point's resumable training state
    test_dir: Path
    inputs: torch.Tensor
    outputs: torch.Tensor
    device: torch.device  # where points train and are measured

    @cached_property
    def groups(self) -> list[str]:
        """The teacher's prunable channel groups, part of every point's recipe."""
        return prunable_groups(self.teacher)

    @cached_property
    def targets(self) -> torch.Tensor:
        """The task targets of the `prune` baseline, made when a point first needs them."""
        return task_targets(self.teacher, self.inputs)


def train_point(run: GridRun, point: Point, progress: bool = True) -> None:
    """Train one point (resuming its run folder), save it as `out/grid/<id>/` and measure it."""
    targets = run.targets if point.method == "prune" else None
    slim_cfg = SlimConfig(method=point.method, bits=point.bits, sparsity=point.sparsity,
                          batch_size=run.cfg.batch_size, channel_multiple=run.cfg.channel_multiple,
                          train=replace(run.cfg.train))
    allocation = {}
    if point.bits == "mixed":
        allocation = mixed_allocation(run.teacher, run.inputs, run.cfg.mixed_average_bits)
        slim_cfg = _size_matched(slim_cfg, allocation, run, point)
    recipe = run.cfg.recipe(point, run.groups)
    slim, card = run_method(run.teacher, run.inputs, run.outputs, slim_cfg, run.run_dir / recipe / point.id, targets,
                            progress, run.device)
    card["sparsity_target"] = point.sparsity  # the grid level, even where the budget was a size
    save_measured(slim, run.out / "grid" / point.id,
                  {"name": point.id, **card, **allocation, "teacher_digest": run.digest, "grid_recipe": recipe},
                  run.teacher_path, run.cfg, run.test_dir, run.device)


def save_measured(slim: Generator, folder: Path, card: dict, teacher_path: Path, cfg: GridConfig, test_dir: Path,
                  device) -> Path:
    """Save a trained student as a grid point in `folder` (weights, bit-packed weights, card) and measure it as
    every grid point is; a user's job (gs_core.jobs) saves its student through here too."""
    folder = save_model(slim, folder, card)
    card = read_card(folder)
    card["packed_bytes"] = save_packed(slim, folder / PACKED) // 8
    card["metrics"] = _measure(folder, teacher_path, cfg, test_dir, device)
    write_card(folder, card)
    return folder


def try_point(run: GridRun, point: Point, progress: bool = True) -> str | None:
    """`train_point`, with a failure printed and returned (as one line) instead of raised: one broken point must
    not stop the grid; it is reported and retried on the next run."""
    try:
        train_point(run, point, progress)
    except Exception as err:
        error = f"{type(err).__name__}: {err}"
        print(f"[grid] {point.id} FAILED: {error}\n{traceback.format_exc()}", flush=True)
        return error
    return None


def run_local(run: GridRun, todo: list[Point], progress: bool = True) -> dict[str, str]:
    """The default backend: the points one after another in this process, in the order given (`cfg.points()`
    puts mixed points after their references). Rewrites the manifest as each point lands; returns {point id: why
    it failed}."""
    failures = {}
    start = time.perf_counter()
    for n, point in enumerate(todo):
        elapsed = time.perf_counter() - start
        eta = f", about {elapsed / n * (len(todo) - n) / 60:.0f} min left" if n else ""
        print(f"[grid] point {n + 1}/{len(todo)}: {point.id}{eta}", flush=True)
        error = try_point(run, point, progress)
        if error:
            failures[point.id] = error
        write_manifest(run.out, run.teacher_path, run.digest)
    return failures


Backend = Callable[[GridRun, list[Point], bool], dict[str, str]]


def run_grid(cfg: GridConfig, teacher_path: str | Path, out: str | Path, run_dir: str | Path,
             only: list[str] | None = None, photos_root: Path | None = None, progress: bool = True,
             device: torch.device | str = "cpu", backend: Backend = run_local) -> pd.DataFrame:
    """Train and measure every unfinished point of `cfg` on `device`, with `backend` (`run_local`, or
    `gs_core.grid_ray.RayBackend`, whose points train on the device they asked Ray for). `teacher_path` may be any
    teacher file or folder (see import_teacher); the manifest in `out` points at the grid's own copy."""
    out, run_dir = Path(out).resolve(), Path(run_dir).resolve()
    teacher_path = import_teacher(teacher_path, out)
    teacher, _ = load_model(teacher_path)
    digest = weights_digest(teacher)
    run_dir = run_dir / digest
    train_photos = load_split("train", photos_root)
    test_dir = Path(load_split("test", photos_root)[0]).parent
    inputs, outputs = distillation_pairs(teacher, train_photos, cfg.size, run_dir / "cache", device=device)
    by_id = {p.id: p for p in cfg.points()}
    unknown = [i for i in only or () if i not in by_id]
    if unknown:
        raise ValueError(f"no grid points {unknown}; this preset has: {', '.join(by_id)}")
    points = [by_id[i] for i in only] if only else list(by_id.values())  # `only` also sets the order
    groups = prunable_groups(teacher)
    todo = [p for p in points if not _finished(out / "grid" / p.id, digest, cfg.recipe(p, groups))]
    measure_teacher(teacher_path, digest, cfg, test_dir, device)
    print(f"[grid] {len(todo)} points to train, {len(points) - len(todo)} already done", flush=True)
    run = GridRun(cfg, teacher, digest, teacher_path, out, run_dir, test_dir, inputs, outputs,
                  torch.device(device))
    failures = backend(run, todo, progress)
    (out / "grid").mkdir(parents=True, exist_ok=True)
    (out / "grid" / "failures.json").write_text(json.dumps(failures, indent=1) + "\n")
    return write_manifest(out, teacher_path, digest)
