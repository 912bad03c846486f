"""How much of each activation range should a clip range start with? Post-training quantization of a 32-bit
student at several calibration quantiles and bit widths, measured against the teacher.

    python benchmarks/calibration_quantile.py [--model checkpoints/grid/gs-s0.85-b32] [--photos data/photos/val]
                                              [--bits 8 6 4] [--quantiles 0.99 0.999 0.9999 1.0]

Each variant is the model with its weights and conv inputs fake-quantized (`make_student`, per-channel weights),
its clip ranges calibrated at the quantile on 32 training crops (96 px) and not trained further: what a quantized
student starts from when its quantizers come on. This chose `quant.calibration_quantile`.
"""
from __future__ import annotations

import argparse

import torch

from gs_core.checkpoint import load_model
from gs_core.eval import quality
from gs_core.eval.evaluate import evaluate_models
from gs_core.slim.quant import calibrate_activations
from gs_core.slim.student import make_student


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="checkpoints/grid/gs-s0.85-b32")
    parser.add_argument("--teacher", default="checkpoints/teacher")
    parser.add_argument("--photos", default="data/photos/val")
    parser.add_argument("--bits", type=int, nargs="+", default=[8, 6, 4])
    parser.add_argument("--quantiles", type=float, nargs="+", default=[0.99, 0.999, 0.9999, 1.0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.model)
    crops = model.preprocess(quality.load_image_folder("data/photos/train", 96)[:32])
    variants = {"as trained": model}
    for bits in args.bits:
        for q in args.quantiles:
            student = make_student(model, bits, gated=False).eval()
            calibrate_activations(student, crops, quantile=q)
            variants[f"{bits} bits, quantile {q}"] = student
    models = {args.teacher: (load_model(args.teacher)[0], {"name": "teacher"})}
    models |= {name: (student, {"name": name}) for name, student in variants.items()}
    table = evaluate_models(list(variants), args.photos, args.teacher, metrics=("psnr", "style_retained"),
                            progress=False, loader=models.__getitem__)
    print(f"{args.model} against {args.teacher} on {args.photos}:")
    print(table[["name", "psnr", "style_retained"]].to_string(index=False))


if __name__ == "__main__":
    main()
