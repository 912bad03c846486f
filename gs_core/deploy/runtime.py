"""Run an exported ONNX generator with onnxruntime (or OpenVINO, where installed), behind the same `stylize` as a
PyTorch Generator."""
from __future__ import annotations

import copy
import functools
import importlib.util
import math
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from gs_core.deploy.onnx_export import INPUT, MIN_SIDE_KEY, OUTPUT
from gs_core.files import CheckpointError


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Every graph optimization on; `threads` intra-op threads (None: onnxruntime's default, one per core) and
    no inter-op pool: the graph is a chain, so one op at a time with all threads inside it."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: the optimizer's notes are not for users
    # Idle threads sleep instead of spinning: a process that also runs PyTorch, or other sessions (the benchmark
    # times them round-robin), would otherwise lose a core to a finished session's spinning threads.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    return path


def _check_names(path: Path, inputs: list[str], outputs: list[str]) -> None:
    if inputs != [INPUT] or outputs != [OUTPUT]:
        raise CheckpointError(f"{path}: an ONNX model with inputs {inputs} and outputs {outputs}, not a GS "
                              f"Studio export ({INPUT!r} -> {OUTPUT!r}; make one with `python -m gs_core export`)")


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"{path}: not a readable ONNX model, damaged or truncated? "
                           f"({str(err).splitlines()[0][:200]})")


class OnnxGenerator:
    """An exported graph (gs_core.deploy.onnx_export) on onnxruntime's CPU provider. `as_is` runs the file as it
    is, with no rewrite for this CPU: a deployed graph (gs_core.deploy.choose) has had its rewrite already."""

    def __init__(self, path: str | Path, threads: int | None = None, as_is: bool = False):
        path = _existing(path)
        try:
            rewrite = u8s8_saturates() and not as_is
            graph = unsigned_weights(onnx.load(path)).SerializeToString() if rewrite else str(path)
            self.session = ort.InferenceSession(graph, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for unreadable or invalid graphs
            raise _unreadable(path, err) from None
        _check_names(path, [i.name for i in self.session.get_inputs()], [o.name for o in self.session.get_outputs()])
        self.path = path
        self.min_side = int(self.session.get_modelmeta().custom_metadata_map.get(MIN_SIDE_KEY, 5))

    def run(self, rgb01: torch.Tensor) -> torch.Tensor:
        """The graph itself: N x 3 x H x W RGB [0, 1] with H, W >= min_side -> the same layout and size."""
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: rgb01.float().contiguous().numpy()})[0])

    def stylize(self, rgb01: torch.Tensor) -> torch.Tensor:
        """As Generator.stylize: any size; sides below min_side are replicate-padded, then cropped back."""
        h, w = rgb01.shape[-2:]
        x = F.pad(rgb01, (0, max(self.min_side - w, 0), 0, max(self.min_side - h, 0)), mode="replicate")
        return self.run(x)[..., :h, :w]


def has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _zero_point_to_128_(init: onnx.TensorProto) -> None:
    """A signed zero point (int8 0, scalar or per channel) rewritten in place as uint8 128 of the same shape."""
    zero = numpy_helper.to_array(init)
    if np.any(zero):
        raise ValueError(f"{init.name}: a signed zero point other than 0 (not a GS Studio export)")
    init.CopyFrom(numpy_helper.from_array(np.full(zero.shape, 128, np.uint8), init.name))


def unsigned_activations(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with every signed activation quantizer (int8, zero point 0) written as uint8 with zero point
    128: the same levels and the same dequantized values. OpenVINO computed a CartoonGAN student's colour head
    wrong from signed int8 inputs (23 dB from onnxruntime; 62 dB in this form), while onnxruntime runs the signed
    form faster (109 against 137 ms for `gs-s0.85-b8` at 512 px), so the export keeps it and OpenVINO gets this."""
    proto = copy.deepcopy(proto)
    zero_points = {node.input[2] for node in proto.graph.node
                   if node.op_type == "QuantizeLinear" and len(node.input) > 2}
    for init in proto.graph.initializer:
        if init.name in zero_points and init.data_type == onnx.TensorProto.INT8:
            _zero_point_to_128_(init)
    return proto


@functools.cache  # read once per process: every session asks
def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 "flags", ARM "Features"); None where it cannot be read."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None


def u8s8_saturates() -> bool:
    """Whether onnxruntime's integer convs of uint8 inputs by int8 weights may saturate on this CPU: x86 without
    VNNI sums pairs of products in 16 bits (onnxruntime's quantization docs say so, and recommend uint8 weights
    there). Measured on an AVX2 EPYC: a tiny random 8-bit CartoonGAN's int8 export 28 to 33 dB from the student
    it came from, 37 dB with uint8 weights, 142 dB at 7 bits, where no pair can overflow. An x86 CPU whose flags
    cannot be read counts as saturating: the uint8 form is exact everywhere, only maybe slower."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False  # ARM's integer dot products accumulate in 32 bits
    flags = cpu_flags()
    return flags is None or not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}


def unsigned_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The same graph with its int8 weight codes (zero point 0) written as uint8 with zero point 128: the same
    dequantized weights, computed by onnxruntime's uint8 x uint8 kernels, which widen to 16 bits before they
    multiply and cannot saturate (`u8s8_saturates`). A graph without int8 weights comes back unchanged."""
    proto = copy.deepcopy(proto)
    dequantized = [node.input for node in proto.graph.node if node.op_type == "DequantizeLinear"]
    inits = {init.name: init for init in proto.graph.initializer}
    for codes, _, zero in (i for i in dequantized if len(i) > 2 and i[0] in inits and i[2] in inits):
        if inits[codes].data_type != onnx.TensorProto.INT8:
            continue
        _zero_point_to_128_(inits[zero])
        shifted = numpy_helper.to_array(inits[codes]).astype(np.int16) + 128
        inits[codes].CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), codes))
    return proto


class OpenVinoGenerator(OnnxGenerator):
    """An exported graph on OpenVINO's CPU plugin (an optional runtime: `pip install openvino`), in fp32
    arithmetic outside the integer convolutions; `as_is` as for OnnxGenerator."""

    def __init__(self, path: str | Path, threads: int | None = None, as_is: bool = False):
        if not has_openvino():
            raise ValueError("OpenVINO is not installed here (pip install openvino); use --engine onnxruntime")
        import openvino as ov

        path = _existing(path)
        try:
            proto = onnx.load(path) if as_is else unsigned_activations(onnx.load(path))
            core = ov.Core()
            config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
            if threads:
                config["INFERENCE_NUM_THREADS"] = threads
            self.compiled = core.compile_model(core.read_model(proto.SerializeToString(), b""), "CPU", config)
        except Exception as err:  # onnx and OpenVINO raise their own types for unreadable or invalid graphs
            raise _unreadable(path, err) from None
        _check_names(path, [i.any_name for i in self.compiled.inputs], [o.any_name for o in self.compiled.outputs])
        self.request = self.compiled.create_infer_request()
        self.path = path
        self.min_side = int(next((p.value for p in proto.metadata_props if p.key == MIN_SIDE_KEY), 5))

    def run(self, rgb01: torch.Tensor) -> torch.Tensor:
        result = self.request.infer({INPUT: rgb01.float().contiguous().numpy()})
        return torch.from_numpy(np.array(result[self.compiled.output(OUTPUT)]))


ENGINES = {"onnxruntime": OnnxGenerator, "openvino": OpenVinoGenerator}


def agreement(model: torch.nn.Module, path: str | Path, size: int = 64) -> str:
    """How closely the exported file reproduces the PyTorch model on a smooth synthetic size x size image."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    rgb = torch.stack([yy, xx, 0.5 + 0.5 * torch.sin(12 * xx * yy)])[None]
    with torch.inference_mode():
        expected = model.stylize(rgb)
    got = OnnxGenerator(path, threads=1).run(rgb)
    mse = float(((got - expected) ** 2).mean())
    psnr = "inf" if mse == 0 else f"{10 * math.log10(1 / mse):.1f}"
    return f"max abs difference {float((got - expected).abs().max()):.1e}, PSNR {psnr} dB"
