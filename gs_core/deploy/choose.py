"""Deploy a generator for the CPU it runs on: every exported form in every installed engine, each checked against
PyTorch, the exact ones timed interleaved, the fastest kept.

Why measure instead of deciding once: which engine and which int8 form is fastest, and which is exact at all,
depends on the CPU (docs/deployment.md). On a VNNI Xeon OpenVINO's int8 graph was the fastest form of an 8-bit
student; on CPUs without VNNI onnxruntime's int8 convs saturate unless the weights are uint8, and OpenVINO's int8
is inexact. So every candidate is checked first and only the exact ones compete on time.

A deployed folder holds the chosen graph exactly as its engine runs it (`model.onnx`, any rewrite for this CPU
already applied, so other tools load it as it is) and `deploy.json`: the choice, the CPU and flags that decided
it, the source model, and every candidate with its fidelity, latency and why it was or was not chosen.
`load_deployed` opens such a folder in its engine with no rewrite.
"""
from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx
import torch

from gs_core.checkpoint import load_model
from gs_core.data.photoset import load_split
from gs_core.deploy.latency import cpu_name
from gs_core.deploy.onnx_export import is_quantized, to_onnx
from gs_core.deploy.runtime import (ENGINES, OnnxGenerator, cpu_flags, has_openvino, unsigned_activations,
                                    unsigned_weights)
from gs_core.eval.cost import median_ms
from gs_core.eval.quality import load_image
from gs_core.files import CheckpointError, weights_digest
from gs_core.models import Generator
from gs_core.slim.extract import extract
from gs_core.slim.gates import gates_of

DEPLOY_JSON = "deploy.json"
MODEL_FILE = "model.onnx"
# A full-precision model's graphs differ from PyTorch only in float summation order: ~1e-6, over 100 dB. 60 dB
# (an RMS error of 1e-3) leaves room for any CPU's vector width and still refuses a wrong kernel.
FLOAT_DB = 60.0
# A quantized student's graphs compute its levels exactly, but float summation order tips a few values across a
# rounding boundary (one activation step, spread by the layers after it): on the check photos every form of the
# shipped 8-bit students measured 48.6 to 58.7 dB on a VNNI Xeon; wrong kernels 12 to 33 dB (saturating int8
# convs on an AVX2 EPYC, docs/deployment.md), 21 and 24 dB (OpenVINO, two 4-bit students). The bound.
QUANTIZED_DB = 40.0
# Some students tip so many roundings that PyTorch itself, in float64, lands under 40 dB from its float32 result
# (the shipped gs-s0.4-b4: 35.1 dB on the check photos): no engine can do better than the model's own float
# noise, so there the bound is that distance less this margin (its engines' correct forms measured 34.6 to 37.3
# dB, a wrong one 21.4), and never under MIN_DB.
FLIP_MARGIN_DB = 3.0
MIN_DB = 30.0
MAX_DB = 200.0  # identical outputs: reported as this, not as an infinity JSON cannot hold
# The flags that decide which int8 kernels an engine has (VNNI and AMX: 32-bit integer dot products; without
# them x86 int8 convs sum pairs in 16 bits) and how wide its float kernels block channels.
DECIDING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16",
                  "avx512_fp16", "asimddp", "i8mm")
# {name: graph rewrite} an engine may need; "as-exported" is the file `export` writes. Neither rewrite is right
# everywhere: OpenVINO computed one student's signed int8 inputs wrong (docs/deployment.md) and, on this grid,
# two 4-bit students' unsigned ones (gs-s0.4-b4: 21.4 dB, 34.6 as exported), so each engine tries both forms.
REWRITES: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto] | None] = {
    "as-exported": None,
    "uint8-weights": unsigned_weights,  # onnxruntime without VNNI (runtime.u8s8_saturates)
    "unsigned-activations": unsigned_activations,
}
INT8_VARIANTS = {"onnxruntime": ("as-exported", "uint8-weights"),
                 "openvino": ("as-exported", "unsigned-activations")}


class DeployError(ValueError):
    """No candidate can be deployed (none exact), or the output folder cannot be used; the message says why."""


@dataclass
class Candidate:
    """One (graph form, engine) pair and what deploy found out about it."""
    engine: str
    precision: str  # "fp32" or "int8"
    variant: str  # a key of REWRITES
    fidelity_db: float | None = None  # the worst photo's PSNR against PyTorch
    latency_ms: float | None = None  # None: not timed (inexact, or failed)
    bound_db: float = FLOAT_DB
    why: str = ""
    chosen: bool = False

    @property
    def name(self) -> str:
        return f"{self.engine}-{self.precision}-{self.variant}"

    @property
    def exact(self) -> bool:
        return self.fidelity_db is not None and self.fidelity_db >= self.bound_db


def choose(candidates: list[Candidate]) -> Candidate:
    """The fastest exact timed candidate (ties: the first listed), marked chosen; every candidate's `why` is
    filled in. An inexact candidate is never chosen, however fast. Raises DeployError when none is exact."""
    timed = [c for c in candidates if c.exact and c.latency_ms is not None]
    if not timed:
        found = "; ".join(f"{c.name}: {c.why or _db(c.fidelity_db)}" for c in candidates) or "no candidates"
        raise DeployError(f"no exact candidate to deploy ({found})")
    best = min(timed, key=lambda c: c.latency_ms)  # min keeps the first of equals
    for c in candidates:
        c.chosen = c is best
        if c.chosen:
            c.why = f"chosen: the fastest exact candidate ({c.fidelity_db:.1f} dB >= {c.bound_db:g})"
        elif c.exact and c.latency_ms is not None:
            c.why = f"exact, but {c.latency_ms / best.latency_ms:.2f}x the chosen one's time"
        elif c.fidelity_db is not None and not c.exact:
            c.why = f"inexact: {c.fidelity_db:.1f} dB from PyTorch, under the {c.bound_db:g} dB bound (not timed)"
    return best


def _db(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.1f} dB"


def psnr_db(got: torch.Tensor, expected: torch.Tensor) -> float:
    """The worst image's PSNR (range 1) over a batch; MAX_DB for identical images."""
    worst = float(((got.float() - expected.float()) ** 2).flatten(1).mean(1).max())
    return MAX_DB if worst <= 10 ** (-MAX_DB / 10) else -10 * math.log10(worst)


def fidelity_bound(model: Generator, photos: torch.Tensor, expected: torch.Tensor) -> tuple[float, float | None]:
    """(the dB a candidate must reach on `photos`, PyTorch's own float64 result's dB from `expected` or None).
    FLOAT_DB for a full-precision model; for a quantized one QUANTIZED_DB, lowered where the model's own float
    noise is larger (see FLIP_MARGIN_DB)."""
    if not is_quantized(model):
        return FLOAT_DB, None
    precise = copy.deepcopy(model).double()  # outside inference mode: quantizers cache by weight version
    with torch.no_grad():
        precise = precise.stylize(photos.double()).float()
    own = round(psnr_db(precise, expected), 2)
    return max(MIN_DB, min(QUANTIZED_DB, own - FLIP_MARGIN_DB)), own


def check_photos(size: int = 128, count: int = 4) -> torch.Tensor:
    """The first `count` validation photos (never the test split the grid reports), shorter side resized to
    `size` and centre-cropped: N x 3 x size x size RGB [0, 1]."""
    paths = load_split("val")[:count]
    if not paths:
        raise DeployError("no validation photos in data/photos/val to check the exported graphs against "
                          "(python -m gs_core photos rebuilds them)")
    return torch.stack([load_image(p, size) for p in paths])


def _load(model: Generator | str | Path) -> tuple[Generator, dict]:
    """(an extracted model in eval mode, the source's description) from a model or a checkpoint path."""
    path = None
    if isinstance(model, (str, Path)):
        path = Path(model)
        model, card = load_model(path)
        name = card.get("name") or path.name
    else:  # a copy on the CPU: the caller's model keeps its device and mode
        name = getattr(model, "arch", type(model).__name__)
        model = copy.deepcopy(model).cpu()
    if gates_of(model):  # a gated student: the graph is of its extracted form, as `export` does it
        model = extract(model)
    model.eval()
    return model, {"name": name, "path": str(path) if path else None, "digest": weights_digest(model),
                   "architecture": getattr(model, "arch", type(model).__name__), "quantized": is_quantized(model)}


def _forms(model: Generator, engines: tuple[str, ...]) -> dict[tuple[str, str, str], onnx.ModelProto]:
    """{(engine, precision, variant): graph as that engine gets it} for every form that applies to `model`. A
    rewrite that changes nothing (no signed activations, say) is left out: it would be the same graph twice."""
    graphs = {"fp32": to_onnx(model)}
    if is_quantized(model):
        graphs["int8"] = to_onnx(model, int8=True)
    forms = {}
    for engine in engines:
        for precision, graph in graphs.items():
            variants = INT8_VARIANTS[engine] if precision == "int8" else ("as-exported",)
            for variant in variants:
                rewrite = REWRITES[variant]
                form = rewrite(graph) if rewrite else graph
                if rewrite and form.SerializeToString() == graph.SerializeToString():
                    continue
                forms[engine, precision, variant] = form
    return forms


def _open(candidate: Candidate, proto: onnx.ModelProto, folder: Path, threads: int) -> OnnxGenerator | None:
    """The candidate's graph written to `folder` and opened as it is; None (with `why`) where that fails."""
    if candidate.engine == "openvino" and not has_openvino():
        candidate.why = "OpenVINO is not installed here (pip install openvino)"
        return None
    path = folder / f"{candidate.name}.onnx"
    onnx.save(proto, path)
    try:
        return ENGINES[candidate.engine](path, threads=threads, as_is=True)
    except (ValueError, RuntimeError) as err:  # an engine that cannot compile this graph on this CPU
        candidate.why = f"failed to load: {str(err).splitlines()[0][:200]}"
        return None


def _fidelity(candidate: Candidate, session: OnnxGenerator, photos: torch.Tensor, expected: torch.Tensor) -> None:
    try:
        got = torch.cat([session.run(photo[None]) for photo in photos])
    except Exception as err:  # engines raise their own types for a graph they cannot run on this CPU
        candidate.why = f"failed to run: {str(err).splitlines()[0][:200]}"
        return
    candidate.fidelity_db = round(psnr_db(got, expected), 2)


@dataclass
class Evaluation:
    candidates: list[Candidate]
    files: dict[str, Path]  # {candidate name: its graph file, as its engine ran it}
    bound_db: float
    float64_db: float | None  # PyTorch's own float64 result against its float32 one (quantized models)


def evaluate_candidates(model: Generator, folder: Path, size: int, threads: int, photos: torch.Tensor,
                        warmup: int = 3, repeats: int = 20,
                        engines: tuple[str, ...] = tuple(ENGINES)) -> Evaluation:
    """Every form of `model` in every engine, written to `folder`, checked on `photos` against PyTorch, the exact
    ones timed interleaved at size x size."""
    with torch.inference_mode():
        expected = model.stylize(photos)
    bound, float64_db = fidelity_bound(model, photos, expected)
    candidates, sessions, files = [], {}, {}
    for (engine, precision, variant), proto in _forms(model, engines).items():
        candidate = Candidate(engine, precision, variant, bound_db=bound)
        candidates.append(candidate)
        session = _open(candidate, proto, folder, threads)
        if session is None:
            continue
        files[candidate.name] = session.path
        _fidelity(candidate, session, photos, expected)
        if candidate.exact:
            sessions[candidate.name] = session
    if sessions:
        rgb = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        timed = median_ms({name: (lambda s=s: s.run(rgb)) for name, s in sessions.items()}, warmup, repeats)
        for candidate in candidates:
            candidate.latency_ms = timed.get(candidate.name)
    return Evaluation(candidates, files, bound, float64_db)


def _versions() -> dict:
    versions = {"onnxruntime": importlib.metadata.version("onnxruntime"), "torch": torch.__version__}
    if has_openvino():
        versions["openvino"] = importlib.metadata.version("openvino")
    return versions


def deploy(model: Generator | str | Path, out_dir: str | Path, size: int = 512, threads: int = 2, *,
           photos: torch.Tensor | None = None, warmup: int = 3, repeats: int = 20,
           engines: tuple[str, ...] | None = None) -> dict:
    """Deploy `model` (a Generator, or a checkpoint folder / published file; a gated student is extracted first)
    to `out_dir` for this CPU; returns what deploy.json holds.

    `photos` (N x 3 x H x W RGB [0, 1]) are what every candidate is checked on; default `check_photos()`.
    `engines` limits the engines tried (default: all of ENGINES; say, only those the target machine has).
    Timing: 1 x 3 x size x size, `threads` threads, median of `repeats` interleaved rounds after `warmup`.
    The folder appears whole or not at all: it is built beside `out_dir` and renamed into place.
    """
    engines = tuple(engines or ENGINES)
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise DeployError(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    model, source = _load(model)
    photos = check_photos() if photos is None else photos
    out = Path(out_dir)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        scratch = staging / "candidates"
        scratch.mkdir()
        found = evaluate_candidates(model, scratch, size, threads, photos, warmup, repeats, engines)
        best = choose(found.candidates)
        os.replace(found.files[best.name], staging / MODEL_FILE)
        shutil.rmtree(scratch)
        info = {"engine": best.engine, "precision": best.precision, "variant": best.variant, "file": MODEL_FILE,
                "latency_ms": best.latency_ms, "fidelity_db": best.fidelity_db, "size": size, "threads": threads,
                "cpu": cpu_name(), "cpu_flags": sorted((cpu_flags() or set()) & set(DECIDING_FLAGS)),
                "source": source, "check": {"photos": len(photos), "side": list(photos.shape[-2:]),
                                            "reference": "PyTorch, the model as loaded", "bound_db": found.bound_db,
                                            "float64_db": found.float64_db},
                "timing": {"warmup": warmup, "repeats": repeats}, "versions": _versions(),
                "candidates": [asdict(c) for c in found.candidates]}
        (staging / DEPLOY_JSON).write_text(json.dumps(info, indent=1) + "\n")
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info


def _check_target(out: Path) -> None:
    """An output folder may be new, empty or an earlier deploy (replaced); anything else is the user's and kept."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / DEPLOY_JSON).is_file())):
        raise DeployError(f"{out} exists and is not a deployed folder: give --out a new or empty folder")


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename the finished folder to `out`; an earlier deploy there is moved aside first and then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_deployed(path: str | Path) -> bool:
    return (Path(path) / DEPLOY_JSON).is_file()


def read_deployed(folder: str | Path) -> dict:
    """deploy.json of a deployed folder, checked: a known engine and a graph file inside the folder."""
    folder = Path(folder)
    try:
        info = json.loads((folder / DEPLOY_JSON).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {DEPLOY_JSON} (make one with `python -m gs_core deploy`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{folder / DEPLOY_JSON}: not readable JSON, damaged? ({err})") from None
    if not isinstance(info, dict) or not {"engine", "file", "threads"} <= set(info):
        raise CheckpointError(f"{folder / DEPLOY_JSON}: not a deploy record (needs engine, file and threads)")
    if info["engine"] not in ENGINES:
        raise CheckpointError(f"{folder / DEPLOY_JSON}: unknown engine {info['engine']!r}; "
                              f"known: {', '.join(ENGINES)}")
    file = folder / str(info["file"])
    if Path(str(info["file"])).is_absolute() or not file.resolve().is_relative_to(folder.resolve()):
        raise CheckpointError(f"{folder / DEPLOY_JSON}: file {info['file']!r} is not inside the folder")
    if not file.is_file():
        raise CheckpointError(f"{folder}: {info['file']} is missing (copy the whole deployed folder)")
    return info


def load_deployed(folder: str | Path, threads: int | None = None) -> OnnxGenerator:
    """The deployed graph of `folder` in the engine deploy chose, as it is (no rewrite), with deploy's thread
    count unless `threads` is given."""
    info = read_deployed(folder)
    return ENGINES[info["engine"]](Path(folder) / info["file"], threads=threads or int(info["threads"]), as_is=True)


def runtime_label(info: dict) -> str:
    """A deploy's choice in one word, as the manifest's `runtime`: engine-precision, and the rewrite where there
    is one ("openvino-int8", "onnxruntime-int8-uint8-weights")."""
    label = f"{info['engine']}-{info['precision']}"
    return label if info.get("variant", "as-exported") == "as-exported" else f"{label}-{info['variant']}"
