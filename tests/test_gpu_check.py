"""scripts/gpu_check.sh: its dry run (toy size, this machine's device) runs every step and writes the full report;
a failing or hung step is recorded without stopping the others; the real check refuses to run without a GPU."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """(exit status, report) of one dry run through the shell wrapper, with this interpreter."""
    folder = tmp_path_factory.mktemp("gpu_check")
    out = folder / "report.json"
    process = subprocess.Popen([str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--out", str(out),
                                "--work", str(folder / "work")], env={**os.environ, "PYTHON": sys.executable},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        stdout, _ = process.communicate(timeout=280)  # about 45 CPU seconds; more on a loaded machine
    except subprocess.TimeoutExpired:
        process.terminate()  # the script then kills its running step
        pytest.fail(f"the dry run took over 280 s:\n{process.communicate()[0]}")
    assert out.is_file(), stdout
    return process.returncode, json.loads(out.read_text()), stdout


def _positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_dry_run_passes_every_step(dry_run, gpu_check):
    code, report, stdout = dry_run
    assert code == 0, stdout
    assert report["ok"] and report["environment"]["dry_run"]
    assert list(report["steps"]) == list(gpu_check.BUDGET_S)
    for name, step in report["steps"].items():
        assert step["status"] == "ok" and step["exit_status"] == 0, (name, step)
        assert 0 <= step["seconds"] <= step["budget_s"], name
        if step["command"] != "in process":
            assert _positive(step["seconds"]) and _positive(step["cpu_seconds"]), name
            assert _positive(step["peak_rss_mb"]), name
            assert _positive(step["peak_gpu_mb"]) if torch.cuda.is_available() else step["peak_gpu_mb"] is None
    env = report["environment"]
    assert env["device"] == ("cuda" if torch.cuda.is_available() else "cpu") and env["torch"] == torch.__version__


def test_dry_run_figures(dry_run, gpu_check):
    steps = dry_run[1]["steps"]
    tests = steps["cuda_tests"]["figures"]
    assert tests["tests"] >= 1 and tests["failures"] == tests["errors"] == 0

    speed = steps["train_speed"]["figures"]
    rows = {(r["config"], r["batch"]): r for r in speed["results"]}
    assert set(rows) == {(c, b) for c in gpu_check.SPEED_CONFIGS for b in gpu_check.DRY.batches}
    for row in rows.values():
        assert _positive(row["s_per_it"]) and _positive(row["ratio_to_first"]) and _positive(row["peak_rss_mb"])
        if row["config"] != "plain fp32":
            assert _positive(row["s_per_it_finetune"]) and _positive(row["ratio_run_0_8"])
    assert "profile" not in speed  # profiling toy steps on a CPU would triple this test's time

    assert steps["teacher"]["figures"]["params"] > 0
    slim = steps["slim"]["figures"]
    assert 0 < slim["channels_kept"] < slim["channels_total"]
    assert _positive(slim["s_per_step_prune"]) and _positive(slim["s_per_step_finetune"])
    assert slim["steps"] == gpu_check.DRY.slim_steps and slim["precision_used"] in ("fp32", "bf16")

    row = steps["eval"]["figures"]
    for key in ("params", "macs", "size_bits", "latency_ms", "speedup", "psnr", "ssim"):
        assert _positive(row[key]), key
    # GS-8 at half the MACs: fewer MACs than the teacher, and 8-bit weights make it smaller still
    assert 1.5 < row["compression_macs"] < row["compression_size"]
    assert row["params"] < steps["teacher"]["figures"]["params"] and row["n_photos"] > 1


def test_every_test_file_with_cuda_tests_is_run(gpu_check):
    marked = {str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("test_*.py")
              if path != Path(__file__) and "mark.cuda" in path.read_text()}
    assert marked and marked <= set(gpu_check.CUDA_TESTS)


def test_budgets_fit_the_eight_minutes(gpu_check):
    assert sum(gpu_check.BUDGET_S.values()) <= 8 * 60 - 30  # half a minute for imports, nvidia-smi, the report


def test_a_failing_step_is_recorded_with_its_output(gpu_check, tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("print('step output')\nraise SystemExit(3)\n")
    record = gpu_check.run_step(gpu_check.Step("fails", [str(script)]), 60, tmp_path)
    assert record["status"] == "failed" and record["exit_status"] == 3
    assert "step output" in record["output_tail"] and record["figures"] == {}


def test_a_hung_step_is_killed_at_its_budget(gpu_check, tmp_path):
    script = tmp_path / "hangs.py"
    script.write_text("import subprocess, time\nsubprocess.Popen(['sleep', '60'])\ntime.sleep(60)\n")
    record = gpu_check.run_step(gpu_check.Step("hangs", [str(script)]), 1, tmp_path)
    assert record["status"] == "timed out" and record["exit_status"] is None and record["seconds"] < 30


def test_figures_that_cannot_be_read_fail_the_step(gpu_check, tmp_path):
    script = tmp_path / "ok.py"
    script.write_text("pass\n")
    record = gpu_check.run_step(gpu_check.Step("ok", [str(script)], lambda: json.loads("not json")), 60, tmp_path)
    assert record["status"] == "failed" and record["exit_status"] == 0 and "JSONDecodeError" in record["error"]


def test_a_folder_it_did_not_make_is_never_emptied(gpu_check, tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert gpu_check.main(["--dry-run", "--work", str(tmp_path), "--out", str(tmp_path / "r.json")]) == 2
    assert "not a gpu_check folder" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"


def test_the_real_check_needs_a_gpu(gpu_check, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.json"), "--work", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no CUDA device") and "\n" not in err and not (tmp_path / "r.json").exists()
