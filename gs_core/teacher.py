"""The embedded teacher: a narrowed CartoonGAN trained here on photo -> cartoon-target pairs.

Same trainer as the GS students (`slim.train.fit`): the teacher is a "student" with no gammas, no quantization,
whose distillation target is the cartoon style instead of a teacher's output. `skip_input` (the network adds its
output to the photo) keeps absolute colour, which instance norms would otherwise throw away, and the colour head
applies the style's pointwise colour rules to it (without it the teacher stayed near +2.7 dB over "output = the
photo", however long it trained).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gs_core.checkpoint import save_model
from gs_core.data.cartoon_style import cartoonize
from gs_core.data.images import load_rgb, to_tensor
from gs_core.data.paired import PairedCrops
from gs_core.data.photoset import load_split
from gs_core.eval.cost import count_macs, count_params
from gs_core.eval.quality import psnr, ssim
from gs_core.models import create_generator
from gs_core.slim.train import TrainConfig, fit


@dataclass
class TeacherConfig:
    ngf: int = 16
    n_blocks: int = 4
    colour_head: int = 32  # width of CartoonGAN's pointwise colour head (0: none)
    crop: int = 96
    batch_size: int = 4
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=6000, lr=5e-4, distill_weight=20.0, gan_weight=0.5, ndf=16, checkpoint_every=100, log_every=25))


PRESETS = {
    "default": TeacherConfig(),
    # A few seconds, for tests: proves the pipeline, not the style.
    "quick": TeacherConfig(ngf=4, n_blocks=1, colour_head=4, crop=32, batch_size=2,
                           train=TrainConfig(steps=6, ndf=4, d_layers=1, checkpoint_every=3, log_every=2)),
}


def paired_batches(dataset: PairedCrops, batch_size: int, seed: int):
    """Batch for step s: its own crops (epoch = s) of photos drawn with a generator seeded by (seed, s)."""
    def batches(step: int):
        dataset.set_epoch(step)
        rng = np.random.default_rng([seed, step])
        pairs = [dataset[int(i)] for i in rng.integers(0, len(dataset), batch_size)]
        photos, targets = (torch.stack(t) * 2 - 1 for t in zip(*pairs))
        return photos.flip(1), targets.flip(1)  # CartoonGAN works in BGR, [-1, 1]
    return batches


@torch.no_grad()
def evaluate_against_target(model, photos: list[Path]) -> dict:
    """PSNR / SSIM of the teacher and of "output = the photo" against the cartoon target, whole test photos."""
    rows = {"teacher_psnr": [], "teacher_ssim": [], "identity_psnr": [], "identity_ssim": []}
    for path in photos:
        rgb, _ = load_rgb(path)
        photo, target = to_tensor(rgb)[None], to_tensor(cartoonize(rgb))[None]
        out = model.stylize(photo)
        rows["teacher_psnr"].append(psnr(out, target))
        rows["teacher_ssim"].append(ssim(out, target))
        rows["identity_psnr"].append(psnr(photo, target))
        rows["identity_ssim"].append(ssim(photo, target))
    return {k: float(np.mean(v)) for k, v in rows.items()} | {"test_photos": len(photos)}


def train_teacher(cfg: TeacherConfig, out_dir: str | Path, run_dir: str | Path, photos_root: Path | None = None,
                  progress: bool = True, device: torch.device | str = "cpu") -> dict:
    """Train (or resume) the teacher in run_dir, then save it with its card in out_dir; returns the card."""
    train_photos, test_photos = load_split("train", photos_root), load_split("test", photos_root)
    dataset = PairedCrops(train_photos, crop=cfg.crop, seed=cfg.train.seed)
    model = create_generator("cartoongan", ngf=cfg.ngf, n_blocks=cfg.n_blocks, skip_input=True,
                             colour_head=cfg.colour_head)
    start = time.perf_counter()
    history = fit(model, paired_batches(dataset, cfg.batch_size, cfg.train.seed), cfg.train, run_dir,
                  progress=progress, desc="teacher", device=device)
    card = {
        "name": "teacher",
        "method": "teacher",
        "description": f"CartoonGAN (ngf {cfg.ngf}, {cfg.n_blocks} residual blocks, skip_input, colour head "
                       f"{cfg.colour_head}) trained on {len(train_photos)} photos -> cartoon targets",
        "params": count_params(model),
        "macs_256": count_macs(model, (256, 256)),
        "training": {"config": asdict(cfg), "steps": cfg.train.steps,
                     "seconds_this_run": round(time.perf_counter() - start, 1),
                     "seconds_total": round(history[-1]["seconds"], 1) if history else None,
                     "threads": torch.get_num_threads()},
        "metrics_vs_target": evaluate_against_target(model, test_photos),
        "history": history,
    }
    save_model(model, out_dir, card)
    return card


def preset(name: str, steps: int | None = None) -> TeacherConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown teacher preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = PRESETS[name]
    return cfg if steps is None else replace(cfg, train=replace(cfg.train, steps=steps))
