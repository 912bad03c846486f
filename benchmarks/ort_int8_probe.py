"""Would an output scale make onnxruntime's int8 graph fast? A probe behind docs/deployment.md.

    python benchmarks/ort_int8_probe.py [--model checkpoints/grid/gs-s0.85-b8] [--sibling checkpoints/grid/gs-s0.85-b32]
                                        [--size 512] [--threads 2]

In the int8 export, the convs whose output goes to an instance norm have no output scale (GS never quantized those
outputs), so onnxruntime runs them in float on dequantized levels. This probe gives each of them one, from the
range of its output on one random image (a post-training calibration: fine for timing, not what `export --int8`
may ship), so that onnxruntime fuses every such conv into an integer QLinearConv. It then times, interleaved, the
fp32 export of the 32-bit sibling, the shipped int8 export as it is and with uint8 weights (`unsigned_weights`, the
form `OnnxGenerator` runs on a CPU without VNNI, where int8 weights saturate) and the probe graph, prints their
PSNR against the fake-quantized PyTorch student (the sibling's against its own PyTorch model), and onnxruntime's
per-operator time (its profiler) for the probe graph and the fp32 sibling.
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper

from gs_core.checkpoint import load_model
from gs_core.deploy.onnx_export import OUTPUT, to_onnx
from gs_core.deploy.runtime import session_options, unsigned_weights
from gs_core.eval.cost import median_ms
from gs_core.eval import quality


def session(proto: onnx.ModelProto, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = session_options(threads)
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def float_output_convs(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """Convs fed by a DequantizeLinear whose output no QuantizeLinear (or ReLU before one) takes."""
    producer = {out: node for node in graph.node for out in node.output}
    users = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            users[name].append(node.op_type)
    return [node for node in graph.node if node.op_type == "Conv" and node.input[0] in producer
            and producer[node.input[0]].op_type == "DequantizeLinear"
            and not {"QuantizeLinear", "Relu"} & set(users[node.output[0]])]


def with_output_scales(proto: onnx.ModelProto, image: np.ndarray, threads: int) -> tuple[onnx.ModelProto, int]:
    """A copy of `proto` with an int8 Q/DQ pair (symmetric, scale max|y| / 127 on `image`) after every float-output
    conv; returns it and how many convs got one."""
    proto = copy.deepcopy(proto)
    convs = float_output_convs(proto.graph)
    probe = copy.deepcopy(proto)
    probe.graph.output.extend(helper.make_tensor_value_info(c.output[0], onnx.TensorProto.FLOAT, None) for c in convs)
    ranges = session(probe, threads).run([c.output[0] for c in convs], {"image": image})
    by_output = {c.output[0]: float(np.abs(y).max()) / 127 for c, y in zip(convs, ranges)}
    nodes = []
    for node in proto.graph.node:
        nodes.append(node)
        if node.output[0] in by_output:
            name = node.output[0]
            node.output[0] = name + ".raw"
            proto.graph.initializer.extend([numpy_helper.from_array(np.array(by_output[name], np.float32), name + ".s"),
                                            numpy_helper.from_array(np.array(0, np.int8), name + ".z")])
            nodes += [helper.make_node("QuantizeLinear", [name + ".raw", name + ".s", name + ".z"], [name + ".q"]),
                      helper.make_node("DequantizeLinear", [name + ".q", name + ".s", name + ".z"], [name])]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto, len(convs)


def operator_ms(proto: onnx.ModelProto, image: np.ndarray, threads: int, runs: int = 6) -> dict[str, float]:
    """Milliseconds per run spent in each operator type (onnxruntime's profiler, after one warm-up run)."""
    with tempfile.TemporaryDirectory() as folder:
        probe = session(proto, threads, f"{folder}/profile")
        for _ in range(runs + 1):
            probe.run([OUTPUT], {"image": image})
        events = json.load(open(probe.end_profiling()))
    total: collections.Counter = collections.Counter()
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    first_run = len(kernels) // (runs + 1)
    for event in kernels[first_run:]:
        total[event["args"]["op_name"]] += event["dur"] / 1000 / runs
    return dict(total.most_common())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="checkpoints/grid/gs-s0.85-b8")
    parser.add_argument("--sibling", default="checkpoints/grid/gs-s0.85-b32")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).numpy()
    student, sibling = (load_model(path)[0].eval() for path in (args.model, args.sibling))
    shipped = to_onnx(student, int8=True)
    probe, count = with_output_scales(shipped, image, args.threads)
    graphs = {"fp32 sibling": to_onnx(sibling), "int8 (shipped)": shipped,
              "int8, uint8 weights": unsigned_weights(shipped), f"int8, output scales on {count} convs": probe}
    sessions = {name: session(proto, args.threads) for name, proto in graphs.items()}
    with torch.inference_mode():
        expected = {name: (sibling if name == "fp32 sibling" else student).stylize(torch.from_numpy(image))
                    for name in graphs}
    timings = median_ms({name: (lambda s=s: s.run([OUTPUT], {"image": image})) for name, s in sessions.items()})
    for name, s in sessions.items():
        psnr = quality.psnr(torch.from_numpy(s.run([OUTPUT], {"image": image})[0]), expected[name])
        print(f"{name}: {timings[name]:.1f} ms (median of 20), against PyTorch: {psnr:.1f} dB")
    for name in ("fp32 sibling", f"int8, output scales on {count} convs"):
        ops = operator_ms(graphs[name], image, args.threads)
        print(f"{name}, ms per operator type:", ", ".join(f"{op} {ms:.1f}" for op, ms in list(ops.items())[:8]))


if __name__ == "__main__":
    main()
