"""How exactly the ONNX exports reproduce their PyTorch models, on the test photos (every shipped model).

    python benchmarks/export_fidelity.py [--checkpoints checkpoints] [--out export_fidelity.json]

fp32 export of every model and int8 export of every quantized one, each against the PyTorch model it came from
(a quantized student against its own fake-quantized self): max abs difference and PSNR over the test photos at
their own size (RGB in [0, 1]).
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import torch

from gs_core.checkpoint import load_model
from gs_core.data.images import load_rgb, to_tensor
from gs_core.data.photoset import load_split
from gs_core.deploy.onnx_export import export_onnx, is_quantized
from gs_core.deploy.runtime import OnnxGenerator


def fidelity(model, path: Path, photos: list[torch.Tensor]) -> dict:
    session = OnnxGenerator(path, threads=2)
    worst, squared, count = 0.0, 0.0, 0
    for rgb in photos:
        with torch.inference_mode():
            expected = model.stylize(rgb)
        diff = session.stylize(rgb) - expected
        worst = max(worst, float(diff.abs().max()))
        squared += float((diff ** 2).sum())
        count += diff.numel()
    mse = squared / count
    return {"max_abs": worst, "psnr": math.inf if mse == 0 else 10 * math.log10(1 / mse)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    parser.add_argument("--out", type=Path, default=Path("export_fidelity.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    photos = [to_tensor(load_rgb(p)[0])[None] for p in load_split("test")]
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for record in json.loads((args.checkpoints / "manifest.json").read_text()):
            if record["path"] is None:  # the identity row: a reference, not a model
                continue
            model, _ = load_model(args.checkpoints / record["path"])
            row = {"fp32": fidelity(model, export_onnx(model, Path(tmp) / "fp32.onnx"), photos)}
            if is_quantized(model):
                row["int8"] = fidelity(model, export_onnx(model, Path(tmp) / "int8.onnx", int8=True), photos)
            report[record["id"]] = row
            print(record["id"], "  ".join(f"{kind}: max abs {r['max_abs']:.1e}, PSNR {r['psnr']:.1f} dB"
                                          for kind, r in row.items()), flush=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
