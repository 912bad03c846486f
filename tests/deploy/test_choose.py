"""deploy: the choice among candidates (never an inexact one), each engine's path on tiny models, the deployed
folder (deploy.json, loading it as it is, `stylize --model DIR`) and its errors."""
import json
import math

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from gs_core.checkpoint import save_model
from gs_core.cli import main
from gs_core.deploy import choose as choose_module
from gs_core.deploy import runtime
from gs_core.deploy.choose import (DEPLOY_JSON, MODEL_FILE, Candidate, DeployError, choose, deploy,
                                   evaluate_candidates, load_deployed, psnr_db)
from gs_core.deploy.onnx_export import export_onnx
from gs_core.deploy.runtime import OnnxGenerator, has_openvino
from gs_core.files import CheckpointError
from gs_core.slim.quant import calibrate_activations
from gs_core.slim.student import make_student

FAST = dict(size=32, threads=1, warmup=1, repeats=2)  # timing is not what these tests check
needs_openvino = pytest.mark.skipif(not has_openvino(), reason="OpenVINO is not installed")


def _candidate(name: str, db: float | None, ms: float | None, bound: float = 40.0) -> Candidate:
    engine, precision, variant = name.split(":")
    return Candidate(engine, precision, variant, fidelity_db=db, latency_ms=ms, bound_db=bound)


@pytest.fixture
def photos(rgb_batch):
    return rgb_batch(2, 32, 32, seed=3)


@pytest.fixture
def student(tiny_generator, rgb_batch):
    """A tiny gate-free quantized CartoonGAN at 7 bits: no two 7-bit products can saturate a 16-bit sum, so its
    int8 graphs are exact on every x86 CPU, VNNI or not (8 bits are, on tiny random students, only with VNNI)."""
    teacher = tiny_generator("cartoongan_skip")
    model = make_student(teacher, 7, gated=False)
    calibrate_activations(model, teacher.preprocess(rgb_batch(4, 32, 32, seed=1)), quantile=0.999)
    return model.eval()


# ----------------------------------------------------------------------------------------- the choice
def test_an_inexact_candidate_is_never_chosen_however_fast():
    candidates = [_candidate("onnxruntime:fp32:as-exported", 55.0, 30.0),
                  _candidate("openvino:int8:as-exported", 23.0, 1.0),  # wrong, and timed anyway: still refused
                  _candidate("openvino:int8:unsigned-activations", 41.0, 12.0)]
    best = choose(candidates)
    assert best.name == "openvino-int8-unsigned-activations" and best.chosen
    assert [c.chosen for c in candidates] == [False, False, True]
    assert candidates[1].why.startswith("inexact: 23.0 dB") and "2.50x" in candidates[0].why


def test_ties_go_to_the_first_listed_and_failures_keep_their_reason():
    failed = _candidate("openvino:fp32:as-exported", None, None)
    failed.why = "failed to load: no CPU plugin"
    candidates = [_candidate("onnxruntime:int8:as-exported", 50.0, 20.0),
                  _candidate("onnxruntime:int8:uint8-weights", 50.0, 20.0), failed]
    assert choose(candidates) is candidates[0]
    assert failed.why == "failed to load: no CPU plugin" and not failed.chosen


def test_the_bound_decides_exactness_not_the_precision():
    full = [_candidate("onnxruntime:fp32:as-exported", 59.9, 10.0, bound=60.0),
            _candidate("openvino:fp32:as-exported", 61.0, 40.0, bound=60.0)]
    assert choose(full).engine == "openvino"


def test_nothing_exact_is_one_clear_error():
    with pytest.raises(DeployError, match="no exact candidate.*onnxruntime-int8-as-exported: 31.0 dB"):
        choose([_candidate("onnxruntime:int8:as-exported", 31.0, None)])
    with pytest.raises(DeployError, match="no candidates"):
        choose([])


def test_psnr_is_the_worst_photos_and_finite_for_identical_outputs():
    a = torch.zeros(2, 3, 4, 4)
    b = a.clone()
    b[1] += 0.01  # 40 dB on the second photo only
    assert math.isclose(psnr_db(b, a), 40.0, abs_tol=1e-3)
    assert psnr_db(a, a) == choose_module.MAX_DB


# ----------------------------------------------------------------------------------------- engines
def test_fp32_teacher_in_every_engine(tiny_generator, photos, tmp_path):
    model = tiny_generator("cartoongan")
    info = deploy(model, tmp_path / "out", photos=photos, **FAST)
    by_engine = {c["engine"]: c for c in info["candidates"]}
    assert set(by_engine) == {"onnxruntime", "openvino"}
    assert by_engine["onnxruntime"]["fidelity_db"] >= 60 and by_engine["onnxruntime"]["latency_ms"] > 0
    if has_openvino():
        assert by_engine["openvino"]["fidelity_db"] >= 60 and by_engine["openvino"]["latency_ms"] > 0
    else:
        assert "not installed" in by_engine["openvino"]["why"] and by_engine["openvino"]["latency_ms"] is None
    assert info["precision"] == "fp32" and [c["chosen"] for c in info["candidates"]].count(True) == 1


@pytest.mark.parametrize("engine", ["onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_the_deployed_folder_reproduces_the_model(engine, tiny_generator, photos, rgb_batch, tmp_path):
    model = tiny_generator("cyclegan_instance")
    info = deploy(model, tmp_path / "out", photos=photos, engines=(engine,), **FAST)
    assert info["engine"] == engine
    loaded = load_deployed(tmp_path / "out")
    rgb = rgb_batch(1, 29, 35, seed=7)  # a size that needs padding: the graph's own
    with torch.inference_mode():
        expected = model.stylize(rgb)
    assert (loaded.stylize(rgb) - expected).abs().max() <= 1e-4


def test_int8_student_in_onnxruntime(student, photos, tmp_path):
    found = evaluate_candidates(student, tmp_path, 32, 1, photos, warmup=1, repeats=2, engines=("onnxruntime",))
    candidates, files = found.candidates, found.files
    names = [c.name for c in candidates]
    assert names == ["onnxruntime-fp32-as-exported", "onnxruntime-int8-as-exported", "onnxruntime-int8-uint8-weights"]
    for c in candidates:  # a quantized student's forms are checked against the fake-quantized student at 40 dB
        assert c.bound_db == 40 and c.exact and c.latency_ms > 0, c
    # The uint8-weight candidate's file holds the rewrite itself: what is saved is what the engine ran.
    weights = [i for i in onnx.load(files["onnxruntime-int8-uint8-weights"]).graph.initializer
               if i.name.endswith(".weight.codes")]
    assert weights and all(i.data_type == onnx.TensorProto.UINT8 for i in weights)


@needs_openvino
def test_int8_student_in_openvino(student, photos, tmp_path):
    candidates = evaluate_candidates(student, tmp_path, 32, 1, photos, warmup=1, repeats=2,
                                     engines=("openvino",)).candidates
    assert {c.variant for c in candidates if c.precision == "int8"} == {"as-exported", "unsigned-activations"}
    assert all(c.fidelity_db is not None for c in candidates)
    if runtime.cpu_flags() and runtime.cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        assert any(c.exact and c.precision == "int8" for c in candidates)  # OpenVINO's int8 is exact with VNNI


def test_a_deployed_graph_is_loaded_without_a_second_rewrite(student, photos, tmp_path, monkeypatch):
    deploy(student, tmp_path / "out", photos=photos, engines=("onnxruntime",), **FAST)
    int8 = export_onnx(student, tmp_path / "int8.onnx", int8=True)
    monkeypatch.setattr(runtime, "u8s8_saturates", lambda: True)  # as on a CPU without VNNI

    def rewrite(_):
        raise AssertionError("rewritten again")

    monkeypatch.setattr(runtime, "unsigned_weights", rewrite)
    load_deployed(tmp_path / "out")  # as it is: no rewrite asked for
    with pytest.raises(CheckpointError, match="rewritten again"):  # what a plain load of an export does there
        OnnxGenerator(int8)


# ----------------------------------------------------------------------------------------- the folder
def test_deploy_json_says_what_was_chosen_and_why(student, photos, tmp_path):
    info = deploy(student, tmp_path / "out", photos=photos, **FAST)
    on_disk = json.loads((tmp_path / "out" / DEPLOY_JSON).read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [DEPLOY_JSON, MODEL_FILE]
    for key in ("engine", "precision", "variant", "file", "latency_ms", "size", "threads", "cpu", "cpu_flags",
                "source", "candidates"):
        assert key in info
    assert (info["file"], info["size"], info["threads"]) == (MODEL_FILE, 32, 1)
    assert set(info["cpu_flags"]) <= set(choose_module.DECIDING_FLAGS)
    assert info["source"]["quantized"] and len(info["source"]["digest"]) == 16
    chosen = [c for c in info["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["latency_ms"] == info["latency_ms"]
    assert all(c["why"] for c in info["candidates"])
    # The saved graph is the chosen form: an int8 form keeps its QuantizeLinear nodes, an fp32 one has none.
    ops = {n.op_type for n in onnx.load(tmp_path / "out" / MODEL_FILE).graph.node}
    assert ("QuantizeLinear" in ops) == (info["precision"] == "int8")


def test_a_checkpoint_folder_deploys_and_stylize_runs_it(tiny_generator, photos, tmp_path):
    """Through the command line, checked on the embedded validation photos (a tiny random quantized student is
    too far from itself there for any bound: its float64 result is 31 dB from its float32 one)."""
    model = tiny_generator("cyclegan_instance_affine")
    save_model(model, tmp_path / "ckpt", {"name": "tiny"})
    assert main(["deploy", str(tmp_path / "ckpt"), "--out", str(tmp_path / "out"), "--size", "32",
                 "--repeats", "1", "--threads", "1"]) == 0
    info = json.loads((tmp_path / "out" / DEPLOY_JSON).read_text())
    assert info["source"]["name"] == "tiny" and info["check"]["photos"] == 4
    rgb = (photos[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    assert main(["stylize", str(tmp_path / "p.png"), "--model", str(tmp_path / "out"), "--out",
                 str(tmp_path / "styled")]) == 0
    styled = np.asarray(Image.open(tmp_path / "styled" / "p.png")).astype(int)
    with torch.inference_mode():
        expected = model.stylize(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0]
    assert np.abs(styled - (expected.permute(1, 2, 0).numpy() * 255).round()).max() <= 1  # PNG rounding only


def test_a_redeploy_replaces_the_folder_and_a_failed_one_leaves_nothing(tiny_generator, photos, tmp_path,
                                                                          monkeypatch):
    model = tiny_generator("cartoongan")
    deploy(model, tmp_path / "out", photos=photos, **FAST)
    first = (tmp_path / "out" / DEPLOY_JSON).read_text()
    deploy(model, tmp_path / "out", photos=photos, **FAST)
    assert (tmp_path / "out" / DEPLOY_JSON).read_text() != first  # timings differ run to run
    monkeypatch.setattr(choose_module, "FLOAT_DB", 1e9)  # nothing can be exact
    with pytest.raises(DeployError, match="no exact candidate"):
        deploy(model, tmp_path / "new", photos=photos, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half folder, no staging left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DeployError, match="not a deployed folder"):
        deploy(model, tmp_path / "mine", photos=photos, **FAST)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / DEPLOY_JSON).write_text("{not json"), "not readable JSON"),
    (lambda d: (d / DEPLOY_JSON).write_text("[1, 2]"), "not a deploy record"),
    (lambda d: (d / MODEL_FILE).unlink(), "model.onnx is missing"),
    (lambda d: _edit(d, engine="tensorrt"), "unknown engine 'tensorrt'"),
    (lambda d: _edit(d, file="../elsewhere.onnx"), "not inside the folder"),
    (lambda d: (d / MODEL_FILE).write_bytes(b"\x00garbage"), "not a readable ONNX model"),
])
def test_a_damaged_deployed_folder_is_one_clear_error(damage, message, tiny_generator, photos, tmp_path, capsys):
    deploy(tiny_generator("cartoongan"), tmp_path / "out", photos=photos, engines=("onnxruntime",), **FAST)
    damage(tmp_path / "out")
    (tmp_path / "elsewhere.onnx").write_bytes((tmp_path / "out" / MODEL_FILE).read_bytes()
                                              if (tmp_path / "out" / MODEL_FILE).is_file() else b"")
    Image.new("RGB", (16, 16)).save(tmp_path / "p.png")
    assert main(["stylize", str(tmp_path / "p.png"), "--model", str(tmp_path / "out"), "--out",
                 str(tmp_path / "styled")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def _edit(folder, **changes):
    info = json.loads((folder / DEPLOY_JSON).read_text())
    (folder / DEPLOY_JSON).write_text(json.dumps({**info, **changes}))
