"""Evaluate compressed generators against their teacher: one table row per model.

Quality metrics compare each model's outputs with the *teacher's* outputs on the same photos (the
student is trained to imitate the teacher, so that is what "quality" means here); FID can also be
taken against a folder of real target-domain images. Cost metrics are absolute, plus compression
ratios against the teacher.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from gs_core.checkpoint import load_model
from gs_core.eval import cost, quality
from gs_core.eval.backbones import MissingWeightsError

METRICS = ("params", "macs", "size_bits", "latency_ms", "psnr", "ssim", "lpips", "fid", "style_retained")
QUALITY_METRICS = ("psnr", "ssim", "lpips", "fid", "style_retained")
IDENTITY = "identity"  # the row of "output = the photo itself": the reference every model should beat
NO_MODEL = "output = the photo: no model, no cost"

Loader = Callable[[str], tuple[nn.Module, dict]]


def evaluate_models(model_paths: Iterable[str | Path], photos_dir: str | Path | None, teacher_path: str | Path,
                    metrics: Iterable[str] = METRICS, size: int = 256, target_dir: str | Path | None = None,
                    progress: bool = True, loader: Loader | None = None,
                    lpips_net: str = "alex", device: torch.device | str = "cpu",
                    identity: bool = False) -> pd.DataFrame:
    """Measure every model in `model_paths`; returns one row per model, and with `identity` a last row named
    "identity" for "output = the photo itself" (quality only; its costs are NaN with reason NO_MODEL).

    Columns: `name` (from the checkpoint card), `path`, each requested metric, and for each requested
    metric a `<metric>_missing_reason` column that is None when the value was computed and otherwise
    says why not (e.g. the MissingWeightsError message); the value is then NaN, never a substitute.
    Also: `compression_size` / `compression_macs` (teacher / model) with size_bits / macs,
    `speedup` (teacher latency / model latency, timed interleaved) with latency_ms, `n_photos` with
    any quality metric (FID on few images is biased and noisy: read it with N), and `fid_target`
    (FID against the real images in `target_dir`; explained by fid_missing_reason when absent) when
    `target_dir` is given with fid. `style_retained` is quality.style_retained of the model's outputs against
    the teacher's on these photos (1 for the teacher, 0 for identity). Latency is the median of an interleaved
    CPU run at 2 threads (cost.measure_latency) on `device`, where the models also stylize the photos.

    Photos are loaded as RGB, shorter side resized to `size`, center-cropped to size x size
    (quality.load_image); MACs and latency are measured at size x size too. `photos_dir` may be None
    when only cost metrics are requested. `loader` maps a path to (model in eval mode, card dict);
    it defaults to gs_core.checkpoint.load_model.
    """
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {', '.join(METRICS)}")
    quality_metrics = [m for m in metrics if m in QUALITY_METRICS]
    if quality_metrics and photos_dir is None:
        raise ValueError(f"quality metrics {quality_metrics} need photos_dir")
    load = loader or load_model
    device = torch.device(device)
    teacher = load(str(teacher_path))[0].to(device)
    models = []
    rows = []
    for path in model_paths:
        model, card = load(str(path))
        models.append(model.to(device))
        rows.append({"name": card["name"], "path": str(path)} | {f"{m}_missing_reason": None for m in metrics})

    _add_costs(rows, models, teacher, metrics, size, device)
    if identity:  # a None model: its outputs are the photos
        models.append(None)
        rows.append({"name": IDENTITY, "path": None} | {f"{m}_missing_reason": None for m in metrics})
        for metric in set(metrics) - set(QUALITY_METRICS):
            rows[-1][metric], rows[-1][f"{metric}_missing_reason"] = math.nan, NO_MODEL
    if quality_metrics:
        photos = quality.load_image_folder(photos_dir, size)
        target = quality.load_image_folder(target_dir, size) if target_dir is not None and "fid" in metrics else None
        _add_quality(rows, models, teacher, photos, target, quality_metrics, lpips_net, progress)

    columns = ["name", "path"]
    for metric in metrics:
        columns.append(metric)
        columns += {"macs": ["compression_macs"], "size_bits": ["compression_size"],
                    "latency_ms": ["speedup"], "fid": ["fid_target"] if target_dir is not None else []}.get(metric, [])
    if quality_metrics:
        columns.append("n_photos")
    columns += [f"{metric}_missing_reason" for metric in metrics]
    return pd.DataFrame(rows, columns=columns)


def _add_costs(rows: list[dict], models: list[nn.Module], teacher: nn.Module, metrics: tuple[str, ...],
               size: int, device: torch.device) -> None:
    if "params" in metrics:
        for row, model in zip(rows, models):
            row["params"] = cost.count_params(model)
    if "macs" in metrics:
        teacher_macs = cost.count_macs(teacher, (size, size))
        for row, model in zip(rows, models):
            row["macs"] = cost.count_macs(model, (size, size))
            row["compression_macs"] = cost.compression(teacher_macs, row["macs"])
    if "size_bits" in metrics:
        teacher_bits = cost.size_bits(teacher)
        for row, model in zip(rows, models):
            row["size_bits"] = cost.size_bits(model)
            row["compression_size"] = cost.compression(teacher_bits, row["size_bits"])
    if "latency_ms" in metrics:
        # The teacher is timed in the same interleaved run, so `speedup` is a like-for-like ratio.
        timed = {"teacher": teacher} | {f"model{i}": model for i, model in enumerate(models)}
        latency = cost.measure_latency(timed, input_size=(size, size), device=device)
        for i, row in enumerate(rows):
            row["latency_ms"] = latency[f"model{i}"]
            row["speedup"] = latency["teacher"] / latency[f"model{i}"]


def _add_quality(rows: list[dict], models: list[nn.Module], teacher: nn.Module, photos: torch.Tensor,
                 target: torch.Tensor | None, metrics: list[str], lpips_net: str, progress: bool) -> None:
    lpips_metric = fid_metric = None
    if "lpips" in metrics:
        lpips_metric = _construct_or_record(lambda: quality.LPIPSMetric(lpips_net), "lpips", rows)
    if "fid" in metrics:
        fid_metric = _construct_or_record(quality.FIDMetric, "fid", rows)
        if fid_metric is not None and len(photos) < 2:
            _record_missing(rows, "fid", f"FID needs at least 2 photos, got {len(photos)}")
            fid_metric = None

    runs = sum(model is not None for model in models) + 1  # the identity runs nothing; the teacher runs too
    with tqdm(total=runs * len(photos), desc="stylizing photos", disable=not progress) as bar:
        reference = _stylize_each(teacher, photos, bar)
        style = "style_retained" in metrics
        if style and torch.equal(reference, photos):
            _record_missing(rows, "style_retained", "the teacher returns these photos unchanged: no style to retain")
            style = False
        reference_features = fid_metric.features(reference) if fid_metric else None
        target_features = fid_metric.features(target) if fid_metric and target is not None else None
        for row, model in zip(rows, models):
            outputs = photos if model is None else _stylize_each(model, photos, bar)
            row["n_photos"] = len(photos)
            if "psnr" in metrics:
                row["psnr"] = quality.psnr(outputs, reference)
            if "ssim" in metrics:
                row["ssim"] = quality.ssim(outputs, reference)
            if style:
                row["style_retained"] = quality.style_retained(outputs, reference, photos)
            if lpips_metric is not None:
                row["lpips"] = float(torch.cat([lpips_metric(o[None], r[None])
                                                for o, r in zip(outputs, reference)]).mean())
            if fid_metric is not None:
                features = fid_metric.features(outputs)
                row["fid"] = quality.fid_from_features(features, reference_features)
                if target_features is not None:
                    row["fid_target"] = quality.fid_from_features(features, target_features)


def _construct_or_record(factory: Callable, metric: str, rows: list[dict]):
    """The metric object, or None after recording in every row why it cannot be built."""
    try:
        return factory()
    except MissingWeightsError as exc:
        _record_missing(rows, metric, str(exc))
        return None


def _record_missing(rows: list[dict], metric: str, reason: str) -> None:
    for row in rows:
        row[metric] = math.nan
        row[f"{metric}_missing_reason"] = reason


@torch.inference_mode()
def _stylize_each(model: nn.Module, photos: torch.Tensor, bar: tqdm) -> torch.Tensor:
    """Outputs for the photos one at a time, so memory stays that of a single image."""
    outputs = []
    device = next(model.parameters()).device
    for photo in photos:
        outputs.append(model.stylize(photo[None].to(device))[0].cpu())
        bar.update(1)
    return torch.stack(outputs)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write the table as CSV (.csv) or a JSON list of row objects (.json), chosen by extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".json":
        df.to_json(path, orient="records", indent=2)
    else:
        raise ValueError(f"table path must end in .csv or .json, got {path}")
