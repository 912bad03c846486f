"""A plan's latency in milliseconds, priced from a per-conv table measured once on this machine in onnxruntime.

MACs are a poor proxy for time on a CPU: onnxruntime's convs work on blocks of 8 or 16 channels, so cutting a
channel saves nothing until a layer's width crosses a block, and a full-resolution layer costs more time per MAC
than a deep one. NetAdapt and HALP price a pruning plan instead with each layer's measured latency at its
candidate widths; so does this table:

- every conv of the dense model, alone as an onnxruntime graph at its own input resolution (that of the model at
  `size`), is timed for kept input and output widths on a grid (`grid_widths`: multiples of `STEP`, the full
  width, and a few below `STEP`);
- a plan's latency is the sum over its convs, each kept width rounded up to the grid (a partial block costs a
  whole one), mapped to whole-model time by a line through two whole models measured beside the table: the
  dense model, and the model with every group at its floor (`plan.min_keep`). Convs timed alone pay a session
  call each and are not fused with their activations, while the whole model also runs norms, padding and
  resampling: the line absorbs both, and is exact at its two ends.

Measuring takes 10 to 60 s for the embedded teacher (about 700 conv shapes); the table is cached under
`data/cache/latency/`, keyed by the architecture, size, threads, onnxruntime version and CPU, so each machine
measures its own.
"""
from __future__ import annotations

import hashlib
import json
import platform
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from gs_core.deploy.latency import cpu_name
from gs_core.deploy.onnx_export import OPSET, export_onnx
from gs_core.deploy.runtime import OnnxGenerator, session_options
from gs_core.eval.cost import median_ms
from gs_core.files import atomic_path
from gs_core.models import Generator, create_generator
from gs_core.slim.plan import conv_groups, dense_plan, kept_channels, min_keep
from gs_core.slim.quant import conv_layers

STEP = 8  # width grid: onnxruntime's NCHWc blocks are 8 (AVX2) or 16 (AVX-512) channels wide
CACHE_DIR = Path(__file__).resolve().parents[2] / "data" / "cache" / "latency"
TABLE_VERSION = "3"
IR_VERSION = 8  # what onnxruntime reads for opset 17 (the installed onnx would write a newer one)


@dataclass
class LatencyTable:
    """Measured milliseconds per conv on a grid of (kept inputs, kept outputs), the two whole models measured beside
    them, and the line from the convs' sum to whole-model time."""

    size: int
    threads: int
    runtime: str
    dense_ms: float  # the whole dense model, measured
    floor_ms: float  # the whole model with every group at its floor, measured
    in_widths: dict[str, list[int]]
    out_widths: dict[str, list[int]]
    ms: dict[str, list[list[float]]]  # ms[conv][i][j]: in_widths[i] inputs, out_widths[j] outputs
    scale: float = 1.0  # whole-model ms = scale * (sum of the convs' table entries) + offset_ms
    offset_ms: float = 0.0

    def conv_ms(self, name: str, cin: int, cout: int) -> float:
        """A conv's time at (cin, cout) kept channels: the entry at the grid widths just above."""
        i = int(np.searchsorted(self.in_widths[name], cin))
        j = int(np.searchsorted(self.out_widths[name], cout))
        return self.ms[name][i][j]

    def convs_ms(self, kept: dict[str, tuple[int, int]]) -> float:
        return sum(self.conv_ms(name, cin, cout) for name, (cin, cout) in kept.items())

    def plan_ms(self, kept: dict[str, tuple[int, int]]) -> float:
        """Milliseconds of the whole slim model whose convs keep `kept` (inputs, outputs) channels."""
        return self.scale * self.convs_ms(kept) + self.offset_ms

    @staticmethod
    def widths(width: int) -> list[int]:
        """The widths measured for a prunable axis of `width` channels (the steps a kept width is priced at)."""
        return grid_widths(width, prunable=True)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "LatencyTable":
        return cls(**json.loads(text))


def grid_widths(width: int, prunable: bool) -> list[int]:
    """The widths a table measures for an axis of `width` channels: multiples of STEP (of a larger multiple of it
    past 64 channels, so that a full-width ResNet's table stays a few minutes of timing) and the width itself, and
    below STEP the group's floor and 2 and 4 channels (a conv into few outputs, the last 7x7 one, runs unblocked:
    at 256 px it takes 2.5 ms from 2 inputs, 9 ms from 8 and 21 ms from 16)."""
    if not prunable:
        return [width]
    step = STEP * max(1, round(width / (8 * STEP)))  # about 8 steps an axis: 8 up to 64 channels, 32 for 256
    floor = min_keep(width)
    low = {w for w in (floor, 2, 4) if floor <= w < min(step, width)}
    return sorted(low | set(range(step, width, step)) | {width})


def _conv_graph(conv: nn.Module, cin: int, cout: int, height: int, width: int) -> bytes:
    """One conv with the layer's kernel, stride and padding, `cin` -> `cout` channels, random weights."""
    transposed = isinstance(conv, nn.ConvTranspose2d)
    depthwise = conv.groups > 1
    groups = cout if depthwise else 1
    shape = (cin, cout // groups, *conv.kernel_size) if transposed else (cout, cin // groups, *conv.kernel_size)
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.05, "w")]
    inputs = ["x", "w"]
    if conv.bias is not None:
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), "b"))
        inputs.append("b")
    pad_h, pad_w = conv.padding if isinstance(conv.padding, tuple) else (0, 0)  # "same"/"valid" strings: none here
    attrs = dict(kernel_shape=list(conv.kernel_size), strides=list(conv.stride), dilations=list(conv.dilation),
                 pads=[pad_h, pad_w, pad_h, pad_w], group=groups)
    if transposed:
        attrs["output_padding"] = list(conv.output_padding)
    node = helper.make_node("ConvTranspose" if transposed else "Conv", inputs, ["y"], **attrs)
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                          [1, cin, height, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return model.SerializeToString()


def _median_ms(run, warmup: int, repeats: int) -> float:
    return median_ms({"run": run}, warmup, repeats)["run"]


def _conv_inputs(model: Generator, size: int) -> dict[str, tuple[int, int]]:
    """Each conv's input (H, W) when the model runs at size x size (meta device: shapes only)."""
    with torch.device("meta"):
        shadow = create_generator(model.arch, **model.config())
    shapes, hooks = {}, []
    for name, conv in conv_layers(shadow).items():
        hooks.append(conv.register_forward_hook(
            lambda module, args, out, name=name: shapes.__setitem__(name, tuple(args[0].shape[-2:]))))
    with torch.no_grad():
        shadow(torch.zeros(1, 3, size, size, device="meta"))
    for hook in hooks:
        hook.remove()
    return shapes


def prunable_axes(model: Generator) -> dict[str, tuple[bool, bool]]:
    """Per conv: whether its input and its output channels belong to a channel group (can be pruned)."""
    return {name: (ins is not None, outs is not None) for name, (ins, outs) in conv_groups(model).items()}


def measure_table(model: Generator, size: int = 256, threads: int = 2, warmup: int = 2,
                  repeats: int = 7) -> LatencyTable:
    """Time every conv of the dense `model` at every grid width pair, and two whole models (dense, and every
    group at its floor) for the line from the convs' sum to whole-model time."""
    shapes, axes = _conv_inputs(model, size), prunable_axes(model)
    in_widths, out_widths, ms = {}, {}, {}
    x = {}
    for name, conv in conv_layers(model).items():
        h, w = shapes[name]
        ins = grid_widths(conv.in_channels, axes[name][0])
        outs = grid_widths(conv.out_channels, axes[name][1])
        rows = []
        for cin in ins:
            x.setdefault((cin, h, w), np.random.default_rng(0).random((1, cin, h, w), np.float32))
            row = []
            for cout in outs:
                if conv.groups > 1 and cin != cout:  # a depthwise conv keeps as many inputs as outputs
                    row.append(float("nan"))
                    continue
                session = ort.InferenceSession(_conv_graph(conv, cin, cout, h, w), session_options(threads),
                                               providers=["CPUExecutionProvider"])
                feed = {"x": x[cin, h, w]}
                row.append(_median_ms(lambda: session.run(None, feed), warmup, repeats))
            rows.append(row)
        in_widths[name], out_widths[name], ms[name] = ins, outs, _monotone(rows, conv.groups > 1)
    table = LatencyTable(size=size, threads=threads, runtime=f"onnxruntime {ort.__version__}", dense_ms=0.0,
                         floor_ms=0.0, in_widths=in_widths, out_widths=out_widths, ms=ms)
    floor = {group.name: [c < min_keep(width) for c in range(width)] for group, width in
             ((g, model.widths[g.name]) for g in model.channel_groups())}
    floor_model = create_generator(model.arch, **model.slim_config({k: sum(v) for k, v in floor.items()}))
    with tempfile.TemporaryDirectory() as folder:
        rgb = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        sessions = {name: OnnxGenerator(export_onnx(m, Path(folder) / f"{name}.onnx"), threads=threads)
                    for name, m in (("dense", model), ("floor", floor_model))}
        # Two numbers fix the line for every plan: timed longer than a table entry, interleaved.
        whole = median_ms({name: lambda s=s: s.run(rgb) for name, s in sessions.items()}, warmup, 3 * repeats)
    table.dense_ms, table.floor_ms = whole["dense"], whole["floor"]
    dense_convs = table.convs_ms(kept_channels(model, dense_plan(model)))
    floor_convs = table.convs_ms(kept_channels(model, floor))
    if dense_convs > floor_convs:  # else (a model too narrow to prune a block) the line is a plain offset
        table.scale = (table.dense_ms - table.floor_ms) / (dense_convs - floor_convs)
    table.offset_ms = table.dense_ms - table.scale * dense_convs
    return table


def _monotone(rows: list[list[float]], depthwise: bool) -> list[list[float]]:
    """Never cheaper with more channels: a running maximum along both axes (timing noise would otherwise make a
    wider layer look faster and the budget search's cost non-monotone). A depthwise conv is measured on the
    diagonal only (as many inputs as outputs); entry (i, j) takes the diagonal's at the larger of the two."""
    ms = np.array(rows, dtype=np.float64)
    if depthwise:
        index = np.arange(len(ms))
        ms = np.diagonal(ms)[np.maximum.outer(index, index)]
    ms = np.maximum.accumulate(np.maximum.accumulate(ms, axis=0), axis=1)
    return ms.round(5).tolist()


def _key(model: Generator, size: int, threads: int) -> str:
    parts = [TABLE_VERSION, model.arch, json.dumps(model.config(), sort_keys=True), str(size), str(threads),
             ort.__version__, platform.machine(), cpu_name()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def latency_table(model: Generator, size: int = 256, threads: int = 2, cache_dir: str | Path | None = None,
                  progress: bool = True) -> LatencyTable:
    """The table of `model`'s architecture on this machine: from the cache (`cache_dir`, default CACHE_DIR), or
    measured now and cached."""
    path = Path(cache_dir or CACHE_DIR) / f"table-{_key(model, size, threads)}.json"
    if path.is_file():
        try:
            return LatencyTable.from_json(path.read_text())
        except (ValueError, TypeError):
            pass  # a damaged cache entry is measured again
    if progress:
        print(f"[latency] measuring the per-layer latency table of {model.arch} at {size} px, {threads} threads "
              f"(once on this machine; cached in {path.parent})", flush=True)
    table = measure_table(model, size, threads)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(table.to_json())
    return table

