"""Export a generator (a teacher or an extracted student) to ONNX, in fp32 or with integer convolutions.

The graph does what `Generator.stylize` does: input `image`, float32 N x 3 x H x W, RGB in [0, 1], H and W any
size from 5 up (dynamic); output `stylized`, the same layout, range and size. The model's own pre- and
post-processing and the reflect padding to a multiple of 4 are part of the graph.

A quantized student's convs read their input through the student's own learned activation quantizer: scale
alpha / steps and the level range of `quant.activation_levels` (uint8 with zero point 0 for unsigned inputs, int8
for signed ones). Below 8 bits the levels still fit the 8-bit container; a clamp to the student's range in front
of QuantizeLinear keeps them there, so the pair stays exact (a 4-bit student is an int8 graph with 16 levels per
activation and 15 per weight). No scale is calibrated here: all of them are the ones GS trained.
- fp32 export: the fake-quantized weights as floats, the activation levels in float ops: the graph computes what
  the PyTorch student computes, in fp32.
- int8 export: QuantizeLinear -> DequantizeLinear on the inputs, the weights as int8 codes with their
  per-output-channel scales (`quant.weight_scale`) behind DequantizeLinear. onnxruntime turns a conv into an
  integer one (QLinearConv) where its output is quantized too, that is where it feeds another quantized conv
  directly or through a ReLU (CartoonGAN's stride-2 convs and its colour head). Where the output goes to an
  instance norm GS never quantized it, and onnxruntime runs that conv in float on the dequantized levels: an
  integer conv there needs an output scale the student does not have (and given one, onnxruntime's integer convs
  were no faster than its fp32 ones on the CPU measured: `benchmarks/ort_int8_probe.py`).
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from gs_core.files import atomic_path
from gs_core.models import Generator
from gs_core.models.cartoongan import InstanceNormScaleShift
from gs_core.slim.gates import ChannelGate
from gs_core.slim.quant import (FULL_PRECISION, ActivationQuantizer, activation_levels, conv_layers,
                                quantize_weight, weight_scale)

EXPORT_FORMATS = ("onnx",)
OPSET = 17
INPUT, OUTPUT = "image", "stylized"
MIN_SIDE_KEY = "gs_min_side"  # metadata: the smallest H and W the graph accepts (OnnxGenerator pads up to it)
_PREFIX = "model."  # the wrapper's attribute: initializers are named "model.<conv>.weight"


class _Stylize(nn.Module):
    """`Generator.stylize` in a form the ONNX tracer records with symbolic H and W (sides >= min_side(model))."""

    def __init__(self, model: Generator):
        super().__init__()
        self.model = model

    def forward(self, rgb01: torch.Tensor) -> torch.Tensor:
        h, w = rgb01.shape[-2:]
        m = self.model.size_multiple
        x = F.pad(self.model.preprocess(rgb01), (0, (-w) % m, 0, (-h) % m), mode="reflect")
        return self.model.postprocess(self.model(x))[..., :h, :w]


def _instance_norm(norm: InstanceNormScaleShift) -> nn.InstanceNorm2d:
    """The same normalization as one ONNX InstanceNormalization node instead of nine elementwise ones."""
    plain = nn.InstanceNorm2d(norm.scale.numel(), eps=norm.eps, affine=True)
    with torch.no_grad():
        plain.weight.copy_(norm.scale)
        plain.bias.copy_(norm.shift)
    return plain


@torch.no_grad()
def float_copy(model: Generator) -> Generator:
    """A copy of `model` with plain convs holding the fake-quantized weights and no activation quantizers (the
    graph gets those from `_quantize_graph`), and CartoonGAN's instance norms as nn.InstanceNorm2d."""
    plain = copy.deepcopy(model).eval()
    for name, module in list(plain.named_modules()):
        if isinstance(module, InstanceNormScaleShift):
            _replace(plain, name, _instance_norm(module))
    for name, conv in conv_layers(plain).items():
        bits = getattr(conv, "weight_bits", FULL_PRECISION)
        if bits != FULL_PRECISION or getattr(conv, "act", None) is not None:
            conv.weight.copy_(quantize_weight(conv.weight, bits, conv.channel_axis))
            conv.act = None
            conv.weight_bits = FULL_PRECISION
    return plain


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _trace(model: Generator) -> onnx.ModelProto:
    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # the TorchScript exporter warns that it is deprecated, and about traced shapes
        warnings.simplefilter("ignore")
        torch.onnx.export(_Stylize(model), (torch.rand(1, 3, 64, 64),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT], output_names=[OUTPUT], dynamic_axes={INPUT: dynamic, OUTPUT: dynamic})
    return onnx.load_from_string(buffer.getvalue())


def _activation_quantizer(conv_name: str, act: ActivationQuantizer, source: str,
                          int8: bool) -> tuple[list, list, str]:
    """(nodes, initializers, output name): `source` through the student's own activation quantizer.

    int8: QuantizeLinear -> DequantizeLinear (what onnxruntime fuses into integer convs). fp32: the same levels in
    float ops, round(x * (1 / scale)) clipped to the levels, times scale, as torch.fake_quantize_per_tensor_affine
    computes them; a float Q/DQ pair would be fused too, and the "fp32" graph would not compute in fp32.
    """
    steps, lowest, highest = activation_levels(act.bits, bool(act.signed))
    scale = np.float32(float(act.alpha.detach()) / steps)
    name = f"{conv_name}.act."
    inits = [numpy_helper.from_array(np.array(scale), name + "scale")]
    if not int8:
        inits += [numpy_helper.from_array(np.array(1 / scale, np.float32), name + "inverse"),
                  numpy_helper.from_array(np.array(lowest, np.float32), name + "lowest"),
                  numpy_helper.from_array(np.array(highest, np.float32), name + "highest")]
        nodes = [helper.make_node("Mul", [source, name + "inverse"], [name + "scaled"]),
                 helper.make_node("Round", [name + "scaled"], [name + "rounded"]),
                 helper.make_node("Clip", [name + "rounded", name + "lowest", name + "highest"], [name + "codes"]),
                 helper.make_node("Mul", [name + "codes", name + "scale"], [name + "dq"])]
        return nodes, inits, name + "dq"
    inits.append(numpy_helper.from_array(np.array(0, dtype=np.int8 if lowest < 0 else np.uint8), name + "zero"))
    nodes = []
    if highest - lowest < 255:
        # Fewer levels than the container holds: clamp to the student's own range first. Max and Min, not Clip:
        # onnxruntime's optimizer drops a Clip in front of QuantizeLinear even when it is narrower than the
        # container (a 4-bit student fell from 142 to 13 dB).
        inits += [numpy_helper.from_array(np.array(lowest * scale, np.float32), name + "low"),
                  numpy_helper.from_array(np.array(highest * scale, np.float32), name + "high")]
        nodes += [helper.make_node("Max", [source, name + "low"], [name + "above"]),
                  helper.make_node("Min", [name + "above", name + "high"], [name + "clipped"])]
        source = name + "clipped"
    nodes += [helper.make_node("QuantizeLinear", [source, name + "scale", name + "zero"], [name + "q"]),
              helper.make_node("DequantizeLinear", [name + "q", name + "scale", name + "zero"], [name + "dq"])]
    return nodes, inits, name + "dq"


def _weight_dq(conv_name: str, conv: nn.Module) -> tuple[list, list, str]:
    """(nodes, initializers, output name): the conv's int8 weight codes and their scales, dequantized."""
    w = conv.weight.detach()
    qmax = 2 ** (conv.weight_bits - 1) - 1
    scale = weight_scale(w, conv.weight_bits, conv.channel_axis)
    codes = torch.round(w / scale).clamp(-qmax, qmax)
    axis = conv.channel_axis
    scale = scale.flatten().numpy().astype(np.float32) if axis is not None else np.float32(scale)
    zero = np.zeros(np.shape(scale), np.int8)
    names = {k: f"{conv_name}.weight.{k}" for k in ("codes", "scale", "zero", "dq")}
    inits = [numpy_helper.from_array(codes.to(torch.int8).numpy(), names["codes"]),
             numpy_helper.from_array(np.asarray(scale), names["scale"]), numpy_helper.from_array(zero, names["zero"])]
    node = helper.make_node("DequantizeLinear", [names["codes"], names["scale"], names["zero"]], [names["dq"]],
                            **({} if axis is None else {"axis": axis}))
    return [node], inits, names["dq"]


def _quantize_graph(graph: onnx.GraphProto, model: Generator, int8: bool) -> None:
    """Put the student's activation quantizers (and, for int8, its integer weights) in front of its convs."""
    quantized = {name: conv for name, conv in conv_layers(model).items()
                 if getattr(conv, "act", None) is not None or getattr(conv, "weight_bits", FULL_PRECISION) < 32}
    nodes, found, float_weights = [], set(), set()
    for node in graph.node:
        is_conv = node.op_type in ("Conv", "ConvTranspose")
        conv_name = node.input[1].removeprefix(_PREFIX).removesuffix(".weight") if is_conv else None
        conv = quantized.get(conv_name)
        if conv is not None:
            found.add(conv_name)
            additions = []
            if conv.act is not None:
                additions.append(_activation_quantizer(conv_name, conv.act, node.input[0], int8))
                node.input[0] = additions[-1][2]
            if int8 and conv.weight_bits < FULL_PRECISION:
                float_weights.add(node.input[1])
                additions.append(_weight_dq(conv_name, conv))
                node.input[1] = additions[-1][2]
            for added, inits, _ in additions:
                nodes += added
                graph.initializer.extend(inits)
        nodes.append(node)
    if found != set(quantized):  # a conv the tracer named otherwise would silently lose its quantization
        raise RuntimeError(f"quantized convs missing from the traced graph: {sorted(set(quantized) - found)}")
    kept = [i for i in graph.initializer if i.name not in float_weights]
    del graph.initializer[:], graph.node[:]
    graph.initializer.extend(kept)
    graph.node.extend(nodes)


def is_quantized(model: nn.Module) -> bool:
    return any(getattr(c, "weight_bits", FULL_PRECISION) != FULL_PRECISION or getattr(c, "act", None) is not None
               for c in conv_layers(model).values())


def min_side(model: Generator) -> int:
    """The smallest side the exported graph accepts: padded to a multiple of `size_multiple`, it must reach the
    model's own `min_side` (5 for CartoonGAN and CycleGAN, padded to 8; 8 for AnimeGANv2, which pads nothing)."""
    return model.min_side - model.size_multiple + 1


def to_onnx(model: Generator, int8: bool = False) -> onnx.ModelProto:
    """The ONNX graph of `model` (eval mode; an extracted student or a teacher, never a gated student)."""
    if any(isinstance(m, ChannelGate) for m in model.modules()):
        raise ValueError("this student still has its channel gates: extract it first "
                         "(python -m gs_core extract STUDENT --out DIR), then export DIR")
    if int8 and not is_quantized(model):
        raise ValueError("--int8 needs a quantized student (its scales are the ones GS learned); this model is "
                         "full precision: export it without --int8")
    proto = _trace(float_copy(model))
    _quantize_graph(proto.graph, model, int8)
    onnx.helper.set_model_props(proto, {MIN_SIDE_KEY: str(min_side(model))})
    onnx.checker.check_model(proto)
    return proto


def export_onnx(model: Generator, path: str | Path, int8: bool = False) -> Path:
    """Write `model`'s ONNX graph to `path` (atomically); returns the path."""
    proto = to_onnx(model, int8)
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
    return path
