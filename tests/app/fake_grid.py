"""A checkpoint grid with random weights, laid out like the real one (manifest.json + one folder per model).

The tests build a tiny one (ngf=4, one block) in a temporary folder; the latency benchmark can build one
with the real teacher's width (ngf=16, four blocks), so costs match while nothing needs training:

    PYTHONPATH=. .venv/bin/python tests/app/fake_grid.py /tmp/fake_grid --ngf 16 --n-blocks 4
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from gs_core.checkpoint import save_model
from gs_core.eval.cost import count_macs, count_params, size_bits
from gs_core.models import create_generator
from gs_core.slim.plan import kept_channels
from gs_core.slim.quant import calibrate_activations, conv_layers
from gs_core.slim.student import make_student

QUALITY = ("psnr", "ssim", "lpips", "fid")
FID_MISSING = "FID needs the InceptionV3 weights, which are not in the torch cache"
#: As gs_core.grid writes it: the teacher has no quality numbers, being what they are measured against.
TEACHER_MISSING = "the teacher is the reference for this metric"
IDENTITY_PSNR = 21.5  # "output = the photo" against the teacher: below every fake student's PSNR


def _random(model):
    """Perturb every weight: a fresh generator may start as the identity (zero last layer), and a fake
    grid whose models all return the photo would hide mix-ups between students."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.03)
    return model.eval()


def _student(teacher, sparsity: float, bits, seed: int):
    """A random model with `sparsity` of every group's channels removed, quantized to `bits`."""
    widths = {g: max(1, round(w * (1 - sparsity))) for g, w in teacher.widths.items()}
    torch.manual_seed(seed)
    model = _random(create_generator(teacher.arch, **{**teacher.config(), "widths": widths}))
    if bits == 32:
        return model, widths
    if bits == "mixed":  # alternate 8 and 4 bits, so the bit-allocation plot has something to show
        bits = {name: (8, 4)[i % 2] for i, name in enumerate(conv_layers(model))}
    student = make_student(model, bits, gated=False)
    calibrate_activations(student, torch.rand(1, 3, 32, 32) * 2 - 1)
    return student.eval(), widths


def _card(teacher, model, model_id: str, method: str, bits, sparsity: float, widths: dict, seed: int) -> dict:
    dense = teacher.widths
    keep = {g: [i < widths[g] for i in range(w)] for g, w in dense.items()}
    kept = kept_channels(teacher, keep)
    bit_widths = {n: getattr(c, "weight_bits", 32) for n, c in conv_layers(model).items()}
    layers = {name: {"in": [kept[name][0], conv.in_channels], "out": [kept[name][1], conv.out_channels],
                     "bits": bit_widths[name]} for name, conv in conv_layers(teacher).items()}
    generator = torch.Generator().manual_seed(seed)
    missing = dict.fromkeys(QUALITY, TEACHER_MISSING) if method == "teacher" else {"fid": FID_MISSING}
    card = {
        "name": model_id, "method": method, "bits": bits, "metrics": {"missing": missing},
        "history": [{"step": s, "loss": 2.0 / (1 + s / 10), "distill": 1.0 / (1 + s / 10), "gan": 0.7,
                     "d": 0.6, "alive": 1 - sparsity * s / 40} for s in range(0, 41, 10)],
    }
    if method != "teacher":
        card["plan"] = {"groups": {g: [widths[g], w] for g, w in dense.items()}, "layers": layers,
                        "channels_kept": sum(widths.values()), "channels_total": sum(dense.values())}
    if method == "gs" and bits != 32:  # as the default grid trains them: quantizers on from step 24 of 40
        card["training"] = {"train": {"steps": 40, "quant_delay": 0.6}}
    if method == "gs":
        card["gammas"] = {gate: (torch.randn(dense[group.name], generator=generator).abs() * (1 - sparsity)).tolist()
                          for group in teacher.channel_groups() for gate in group.gates}
    return card


def build_fake_grid(root: str | Path, ngf: int = 4, n_blocks: int = 1, sparsities=(0.25, 0.5),
                    bits=(32, 8), extra=(("gs", 0.5, "mixed"), ("distill", 0.5, 32), ("prune", 0.5, 32)),
                    teacher=None, identity: bool = True) -> Path:
    """Write a teacher (a CartoonGAN of `ngf` and `n_blocks` unless `teacher` is given), GS students at
    sparsities x bits, `extra` (method, sparsity, bits) models and, with `identity`, the manifest's identity
    reference row (output = the photo: quality only, no folder)."""
    root = Path(root)
    torch.manual_seed(0)
    teacher = _random(teacher or create_generator("cartoongan", ngf=ngf, n_blocks=n_blocks, skip_input=True))
    teacher_macs, teacher_size = count_macs(teacher), size_bits(teacher)
    specs = [("teacher", 0.0, 32)] + [("gs", s, b) for s in sparsities for b in bits] + list(extra)
    records = []
    for index, (method, sparsity, b) in enumerate(specs):
        model_id = "teacher" if method == "teacher" else f"{method}-s{sparsity:g}-b{b}"
        path = "teacher" if method == "teacher" else f"grid/{model_id}"
        if method == "teacher":
            model, widths = teacher, dict(teacher.widths)
        else:
            model, widths = _student(teacher, sparsity, b, seed=index)
        card = _card(teacher, model, model_id, method, b, sparsity, widths, index)
        macs, size = count_macs(model), size_bits(model)
        metrics = {
            "params": count_params(model), "macs": macs, "size_bits": size,
            "compression_size": teacher_size / size, "compression_macs": teacher_macs / macs,
            "latency_ms": 2.0 + 10 * macs / teacher_macs,
            "psnr": 40 - 20 * sparsity - index * 0.1, "ssim": 1 - 0.3 * sparsity - index * 0.01,
            "lpips": 0.05 + 0.3 * sparsity + index * 0.01, "fid": None,
            "style_retained": 0.9 - 0.6 * sparsity - index * 0.01,
        }
        if method == "teacher":
            metrics.update(dict.fromkeys(QUALITY), style_retained=1.0)
        card["metrics"].update(metrics)
        save_model(model, root / path, card)
        channels_removed = 1 - sum(widths.values()) / sum(teacher.widths.values())
        records.append({"id": model_id, "method": method, "bits": b, "sparsity_target": sparsity,
                        "channels_removed": channels_removed, "macs_removed": 1 - macs / teacher_macs,
                        **metrics, "path": path})
    if identity:
        records.insert(1, {"id": "identity", "method": "identity", "psnr": IDENTITY_PSNR, "ssim": 0.8, "lpips": 0.4,
                           "fid": None, "style_retained": 0.0, "params": None, "macs": None, "size_bits": None,
                           "latency_ms": None, "path": None})
    (root / "manifest.json").write_text(json.dumps(records, indent=1))
    return root


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--ngf", type=int, default=16)
    parser.add_argument("--n-blocks", type=int, default=4)
    args = parser.parse_args()
    build_fake_grid(args.out, args.ngf, args.n_blocks, sparsities=(0.25, 0.5, 0.75), bits=(32, 8, 4))
    print(f"wrote {args.out / 'manifest.json'}")
