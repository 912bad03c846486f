"""Latency of models in the runtimes they can be deployed to, timed interleaved in one process (by
`gs_core.eval.cost.median_ms`, the library's one timer, from the runners made here).

Runtimes: `pytorch` (eager, the checkpoint as it is), `onnxruntime` (the fp32 export) and `onnxruntime-int8` (the
int8 export, quantized students only), and where OpenVINO is installed `openvino` and `openvino-int8`, the same
two files on OpenVINO's CPU plugin, each as the runtime classes load it. Which of them a model is deployed in is
measured, not decided here: gs_core.deploy.choose.
"""
from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path

import torch

from gs_core.deploy.onnx_export import export_onnx, is_quantized
from gs_core.deploy.runtime import OnnxGenerator, OpenVinoGenerator, has_openvino

RUNTIMES = ("pytorch", "onnxruntime", "onnxruntime-int8") + (("openvino", "openvino-int8") if has_openvino() else ())
EXPORTED = {"onnxruntime": (OnnxGenerator, False), "onnxruntime-int8": (OnnxGenerator, True),
            "openvino": (OpenVinoGenerator, False), "openvino-int8": (OpenVinoGenerator, True)}


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where available (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def runners(models: dict[str, torch.nn.Module], size: int, threads: int, folder: Path,
            runtimes: tuple[str, ...] = RUNTIMES) -> dict[tuple[str, str], Callable[[], object]]:
    """{(model name, runtime): callable running one 1 x 3 x size x size stylization}; ONNX files go to
    `folder`. The PyTorch runners use `threads` only while torch.set_num_threads(threads) is in force."""
    rgb = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    out: dict[tuple[str, str], Callable[[], object]] = {}
    for name, model in models.items():
        model.eval()
        if "pytorch" in runtimes:
            out[name, "pytorch"] = lambda model=model: _eager(model, rgb)
        for runtime, (engine, int8) in EXPORTED.items():
            if runtime in runtimes and (not int8 or is_quantized(model)):
                path = Path(folder) / f"{name}-{'int8' if int8 else 'fp32'}.onnx"
                if not path.exists():
                    export_onnx(model, path, int8=int8)
                session = engine(path, threads=threads)
                out[name, runtime] = lambda session=session: session.run(rgb)
    return out


def _eager(model: torch.nn.Module, rgb: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.stylize(rgb)
