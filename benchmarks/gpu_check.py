"""GPU readiness: the studio's CUDA paths run, timed and measured by one command that writes one JSON report.

    scripts/gpu_check.sh [--dry-run] [--out FILE] [--work runs/gpu_check]

The CUDA paths had never met a GPU, and a GPU may be lent for a few minutes only, so everything it should run is
prepared here and fits in 8 minutes on one H100. The steps, each a subprocess with its own time budget (a hung
step is killed and cannot eat the others' minutes; a failed step is recorded and the others still run; the exit
status is 1 when any failed):

  cuda_tests   pytest -m cuda on the test files that hold CUDA tests (CUDA_TESTS); on a GPU none may skip
  train_speed  benchmarks/train_speed.py: the plain fp32 step against GS-32 and GS-8 in fp32 and bf16 on the
               full-width ResNet-9, 256 px, batch 1 and 4, with the peak GPU memory of each configuration, and
               torch.profiler tables of GS-8 steps (where a GPU step spends its time; not in the dry run)
  teacher      (in this process) the full-width CartoonGAN, random weights, its state dict checked key by key
               against the published layout (tests/official_layouts/cartoongan.json), saved as a checkpoint
  slim         `python -m gs_core slim --device cuda`: one GS-8 point (half the MACs) from that teacher at 256 px,
               a few steps. `slim` saves the student extracted (the `extract` command takes a gated student,
               which `slim` keeps only inside its run state), so this step checks that no gate is left
  eval         `python -m gs_core eval --device cuda` of it against its teacher on the test photos at 256 px:
               params, MACs, bits, GPU latency, PSNR / SSIM / style kept against the teacher

`--dry-run` runs the same steps at toy size (widths 4, 32 px, a few steps) on whatever device is there, and writes
a report of the same shape (less the profiler tables): the suite runs it (tests/test_gpu_check.py), so the script
is known to work before a GPU is. The report (docs/gpu.md): `environment` (device name, torch / CUDA / cuDNN /
driver versions), `steps` (per step: status, exit status, seconds, budget, command, and of the step's process its
CPU seconds and peak RSS as the kernel accounts them, and peak_gpu_mb = torch.cuda.max_memory_allocated; the
figures; the end of its output when it failed) and `ok`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import runpy
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Every test file with a test marked `cuda` (tests/test_gpu_check.py fails when one is missing from this list):
# pytest collects only these, as the GPU machine may lack what other tests import (gradio, ray, playwright).
CUDA_TESTS = ("tests/test_device.py",)
CARTOONGAN_LAYOUT = REPO / "tests" / "official_layouts" / "cartoongan.json"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check.json"
WORK_MARK = ".gpu_check"  # marks a scratch folder this script made, and may empty again
SPEED_CONFIGS = ("plain fp32", "gs-32 fp32", "gs-8 fp32", "gs-32 bf16", "gs-8 bf16")  # all, on any device
EVAL_METRICS = ("params", "macs", "size_bits", "latency_ms", "psnr", "ssim", "style_retained")  # LPIPS and FID
# need ImageNet weights, which a GPU machine without internet lacks
# Seconds each step may run: 440 of the 8 minutes, the rest for the report's environment (imports, nvidia-smi).
BUDGET_S = {"cuda_tests": 90, "train_speed": 180, "teacher": 20, "slim": 90, "eval": 60}


@dataclass(frozen=True)
class Scale:
    """How big the steps run: the check itself (FULL) or its dry run (DRY)."""

    size: int  # pixels, in every step
    batches: tuple[int, ...]  # train_speed's batch sizes
    speed_steps: int  # train_speed: steps per run (the first two of each phase warm up)
    speed_rounds: int
    speed_width: int  # train_speed's ngf and ndf (64: the published ResNet-9)
    profile: bool = True  # train_speed's torch.profiler tables (on a CPU, at toy size, 3x its own time)
    cartoongan: dict = field(default_factory=dict)  # create_generator("cartoongan", **this); {}: full width
    slim_steps: int = 30
    slim_batch: int = 4
    slim_disc: tuple[int, int] = (16, 3)  # slim's discriminator: ndf, layers
    threads: int = 4


FULL = Scale(size=256, batches=(1, 4), speed_steps=6, speed_rounds=2, speed_width=64)
DRY = Scale(size=32, batches=(1, 2), speed_steps=3, speed_rounds=1, speed_width=4, profile=False,
            cartoongan={"ngf": 4, "n_blocks": 2}, slim_steps=12, slim_batch=2, slim_disc=(4, 2), threads=1)


@dataclass
class Step:
    name: str
    run: list[str] | Callable[[], dict]  # python's arguments for a subprocess, or a function run here
    figures: Callable[[], dict] = dict  # read from the step's outputs once it succeeded


def plan(scale: Scale, device: str, work: Path) -> list[Step]:
    teacher, run = work / "teacher", work / "gs8"
    slim = run / "slim"
    return [
        Step("cuda_tests", ["-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                            f"--junitxml={work / 'tests.xml'}", *CUDA_TESTS],
             lambda: _test_counts(work / "tests.xml", device)),
        Step("train_speed", [str(REPO / "benchmarks" / "train_speed.py"), "--device", device,
                             "--size", str(scale.size), "--batches", *map(str, scale.batches),
                             "--steps", str(scale.speed_steps), "--rounds", str(scale.speed_rounds),
                             "--threads", str(scale.threads), "--ngf", str(scale.speed_width),
                             "--ndf", str(scale.speed_width), "--configs", *SPEED_CONFIGS,
                             *(["--profile"] if scale.profile else []), "--out", str(work / "train_speed.json")],
             lambda: json.loads((work / "train_speed.json").read_text())),
        Step("teacher", lambda: make_teacher(scale, teacher)),
        Step("slim", ["-m", "gs_core", "slim", "--teacher", str(teacher), "--out", str(run),
                      "--size", str(scale.size), "--steps", str(scale.slim_steps),
                      "--batch-size", str(scale.slim_batch), "--bits", "8", "--sparsity", "0.5",
                      "--ndf", str(scale.slim_disc[0]), "--d-layers", str(scale.slim_disc[1]), "--log-every", "1",
                      "--threads", str(scale.threads), "--device", device],
             lambda: _slim_figures(run)),
        Step("eval", ["-m", "gs_core", "eval", str(slim), "--teacher", str(teacher), "--size", str(scale.size),
                      "--metrics", *EVAL_METRICS, "--device", device, "--out", str(work / "eval.json")],
             lambda: json.loads((work / "eval.json").read_text())[0]),
    ]


def make_teacher(scale: Scale, folder: Path) -> dict:
    """CartoonGAN with random weights at the scale's widths, saved as a checkpoint. At full width its state dict
    must be the published one, key for key and shape for shape. (Its MACs are in the eval step's figures: the
    student's `macs` times `compression_macs`.)"""
    import torch

    from gs_core.checkpoint import save_model
    from gs_core.models import create_generator

    torch.manual_seed(0)
    model = create_generator("cartoongan", **scale.cartoongan).eval()
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    if not scale.cartoongan:
        published = {key: shape for key, shape in json.loads(CARTOONGAN_LAYOUT.read_text())["state_dict"]}
        if shapes != published:
            differ = sorted(set(shapes) ^ set(published)) or [k for k in shapes if shapes[k] != published[k]]
            raise ValueError(f"full-width CartoonGAN differs from the published layout at {differ[:5]}")
    save_model(model, folder, {"name": "gpu-check teacher", "method": "teacher", "bits": 32})
    return {"layout": "toy" if scale.cartoongan else "published", "state_dict_entries": len(shapes),
            "params": sum(p.numel() for p in model.parameters())}


def _test_counts(junit: Path, device: str) -> dict:
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    if device.startswith("cuda") and counts["skipped"]:
        raise ValueError(f"{counts['skipped']} test(s) skipped on a machine with a GPU: the CUDA tests did not run")
    return counts


def _slim_figures(run: Path) -> dict:
    """Seconds per step of the pruning steps (the first, warming up, left out) and of the fine-tuning steps (the
    first after the narrowing left out), from the run's per-step log; the plan kept; the precision used."""
    card = json.loads((run / "slim" / "card.json").read_text())
    if card["architecture"].get("gated"):
        raise ValueError("the saved student still has its channel gates: slim did not extract it")
    train = card["training"]["train"]
    seconds = [record["seconds"] for record in card["history"]]
    per_step = [b - a for a, b in zip([0.0, *seconds], seconds)]  # per_step[k]: step k + 1
    prune_end = max(1, int(train["steps"] * (1 - train["finetune_fraction"])))
    pruning, finetuning = per_step[1:prune_end], per_step[prune_end + 1:]
    return {"steps": train["steps"], "train_seconds": round(seconds[-1], 3),
            "s_per_step_prune": round(statistics.median(pruning), 4) if pruning else None,
            "s_per_step_finetune": round(statistics.median(finetuning), 4) if finetuning else None,
            "precision_used": json.loads((run / "run" / "config.json").read_text())["precision_used"],
            "channels_kept": card["plan"]["channels_kept"], "channels_total": card["plan"]["channels_total"]}


def run_step(step: Step, budget_s: float, work: Path) -> dict:
    """Run one step within its budget; its record for the report (figures only when it succeeded)."""
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    record = {"status": "ok", "exit_status": 0, "seconds": 0.0, "cpu_seconds": 0.0, "budget_s": budget_s,
              "command": "in process", "peak_gpu_mb": None, "peak_rss_mb": None, "figures": {}}
    try:
        if callable(step.run):
            record["figures"] = step.run()
        else:
            record.update(_subprocess(step, budget_s, work))
            if record["status"] == "ok":
                record["figures"] = step.figures()
    except Exception as err:  # a step's failure goes into the report; the next step still runs
        record.update(status="failed", error=f"{type(err).__name__}: {err}"[:500])
        if callable(step.run):
            record["exit_status"] = 1
    record["seconds"] = round(time.perf_counter() - start, 1)
    if callable(step.run):
        after = resource.getrusage(resource.RUSAGE_SELF)
        record["cpu_seconds"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)
    return record


def _subprocess(step: Step, budget_s: float, work: Path) -> dict:
    """`python <step.run>` through `--measure`, in its own process group (killed whole past the budget); its exit
    status, CPU seconds and peak RSS (the kernel's accounts of that process), and its peak GPU memory."""
    gpu_peak = work / f"{step.name}.gpu.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", str(gpu_peak), *step.run]
    out, log = work / f"{step.name}.out", work / f"{step.name}.log"
    with open(out, "w") as stdout, open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=stdout, stderr=stderr, start_new_session=True)
        code, usage = _wait(process, budget_s)
    result = {"command": shlex.join(["python", *step.run]), "exit_status": code,
              "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024),
              "peak_gpu_mb": json.loads(gpu_peak.read_text()) if gpu_peak.is_file() else None}
    if code != 0:
        result.update(status="timed out" if code is None else "failed", output_tail=_tail(out, log))
    return result


def _wait(process: subprocess.Popen, budget_s: float) -> tuple[int | None, resource.struct_rusage]:
    """(exit status, or None when it ran past the budget and was killed with its group; its resource usage). If
    this script is interrupted meanwhile (Ctrl-C, SIGTERM), the step's group is killed too: it runs in a session of
    its own, which would outlive us."""
    deadline = time.monotonic() + budget_s
    try:
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                return process.returncode, usage
            time.sleep(0.2)
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
    return None, usage


def _tail(*files: Path, lines: int = 15) -> list[str]:
    """The last lines of the step's output (progress bars' carriage returns count as line ends)."""
    text = "\n".join(f.read_text(errors="replace") for f in files)
    return [line for line in re.split(r"[\r\n]+", text) if line.strip()][-lines:]


def measured(gpu_peak: Path, argv: list[str]) -> int:
    """Run `python ARGV` (`-m MODULE ARGS` or `SCRIPT ARGS`) in this process, as the interpreter would, then write
    the most GPU memory torch allocated in it to `gpu_peak` (null where there is no GPU or torch never loaded)."""
    code = 0
    sys.path.insert(0, str(REPO) if argv[0] == "-m" else str(Path(argv[0]).resolve().parent))
    sys.argv = argv[1:] if argv[0] == "-m" else argv
    try:
        if argv[0] == "-m":
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if not isinstance(exit_.code, int | None):
            print(exit_.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    torch = sys.modules.get("torch")
    used = torch is not None and torch.cuda.is_available()
    mib = (torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else 0) / 2 ** 20 if used else None
    gpu_peak.write_text(json.dumps(None if mib is None else round(mib, 1)))
    return code


def environment(device: str, dry_run: bool) -> dict:
    import torch

    from gs_core.deploy.latency import cpu_name
    from gs_core.slim.train import has_fast_bf16

    env = {"dry_run": dry_run, "device": device, "device_name": cpu_name(), "cpu": cpu_name(),
           "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": None, "driver": None, "gpu_memory_mb": None, "capability": None,
           "bf16_in_hardware": has_fast_bf16(torch.device(device))}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, cudnn=torch.backends.cudnn.version(), driver=_driver_version(),
                   gpu_memory_mb=round(props.total_memory / 2 ** 20), capability=f"{props.major}.{props.minor}")
    return env


def _driver_version() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None


def write_report(report: dict, out: Path) -> None:
    from gs_core.files import atomic_path

    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--measure"]:  # a step's own process (see `_subprocess`): its arguments are python's
        return measured(Path(argv[1]), argv[2:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="toy sizes, on whatever device is here")
    parser.add_argument("--out", help="the report (default: benchmarks/results/gpu_check.json; with --dry-run "
                        "runs/gpu_check_dry_run.json, so that a dry run never overwrites a GPU's report)")
    parser.add_argument("--work", default=str(REPO / "runs" / "gpu_check"),
                        help="scratch folder for the steps' files and logs (emptied first; one this script made)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: the running step is killed with us
    out = Path(args.out or (REPO / "runs" / "gpu_check_dry_run.json" if args.dry_run else DEFAULT_OUT))

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("error: no CUDA device here; run on a GPU, or with --dry-run (toy size, any device)", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(args.work)
    if work.is_dir() and any(work.iterdir()) and not (work / WORK_MARK).is_file():
        print(f"error: {work} is not empty and not a gpu_check folder; choose another --work", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / WORK_MARK).touch()
    report = {"report": "gpu_check", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "environment": environment(device, args.dry_run), "steps": {}, "ok": False}
    write_report(report, out)  # and again after every step: a run cut short still leaves what it measured
    start = time.perf_counter()
    for step in plan(DRY if args.dry_run else FULL, device, work):
        print(f"{step.name} (at most {BUDGET_S[step.name]} s) ...", flush=True)
        try:
            record = report["steps"][step.name] = run_step(step, BUDGET_S[step.name], work)
        except KeyboardInterrupt:
            print(f"interrupted in {step.name}; {out} holds the steps before it", file=sys.stderr)
            return 130
        print(f"{step.name}: {record['status']} in {record['seconds']} s"
              + "".join(f"\n  {line}" for line in record.get("output_tail", [record.get("error", "")]) if line),
              flush=True)
        report["seconds"] = round(time.perf_counter() - start, 1)
        write_report(report, out)
    report["ok"] = all(r["status"] == "ok" for r in report["steps"].values())
    write_report(report, out)
    print(f"wrote {out}: {'all steps ok' if report['ok'] else 'some steps FAILED'} in {report['seconds']} s")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
