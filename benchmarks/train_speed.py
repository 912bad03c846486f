"""Seconds per training step: GS (gates, proximal step, fake quantization) against a plain dense PyTorch step.

    python benchmarks/train_speed.py [--size 256] [--batches 1 4] [--steps 6] [--rounds 2] [--threads 2]
                                     [--device cpu] [--configs ...] [--profile] [--ngf 64] [--ndf 64]
                                     [--out benchmarks/results/train_speed.json]

The networks and losses are those of a CycleGAN user: ResNet-9 generator (ngf 64, random weights), PatchGAN
discriminator (ndf 64, 3 layers), MSE x 10 + LSGAN, Adam. The plain step is the textbook fp32 loop written out
here; the GS steps are the library's own (`run_method`, sparsity 0.5 in budget mode): pruning steps (gates,
proximal step, budget cuts on the full-width student) and fine-tuning steps (the narrowed student, after the
plan froze), in fp32 and in bf16 (left out by default where the CPU has no bf16 arithmetic: it is emulated
there, several times slower). `run_0.8` is the mean step of a run that fine-tunes 80% of its steps (the grid's
schedule), as a ratio to the plain step. Every configuration runs in this one process, `--rounds` times in
alternating order, so load on a shared machine hits them alike; the table gives the median step, its ratio to
the plain fp32 step, and the peak RSS of each run (VmHWM, reset before each run); on a GPU also its peak GPU memory
(torch.cuda.max_memory_allocated, reset before each run). `--ngf` / `--ndf` shrink both networks, for a dry run
of the benchmark itself (`benchmarks/gpu_check.py --dry-run`), not for figures.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gs_core.deploy.latency import cpu_name
from gs_core.device import resolve_device, synchronize
from gs_core.methods import SlimConfig, run_method
from gs_core.models import PatchDiscriminator, create_generator
from gs_core.slim.train import TrainConfig, has_fast_bf16

CONFIGS = ("plain fp32", "gs-32 fp32", "gs-8 fp32", "gs-32 bf16", "gs-8 bf16")


def _reset_peaks(device: torch.device) -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS
    except OSError:  # not Linux, or a sandbox without it (gVisor): the peak RSS is then the process's so far
        pass
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peaks_mb(device: torch.device) -> dict[str, float]:
    """Peak RSS since the last `_reset_peaks` (VmHWM; where /proc has none, the process's peak: ru_maxrss), and on
    a GPU the peak of memory allocated there."""
    status = Path("/proc/self/status")
    hwm = [line for line in (status.read_text().splitlines() if status.is_file() else []) if line.startswith("VmHWM:")]
    kib = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peaks = {"peak_rss_mb": kib / 1024}
    if device.type == "cuda":
        peaks["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return peaks


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def plain_steps(teacher, inputs, outputs, steps: int, batch: int, ndf: int, device) -> list[float]:
    """The dense fp32 step every GAN tutorial writes: D on real and fake, then G on MSE x 10 + LSGAN."""
    gen = create_generator(teacher.arch, **teacher.config()).to(device).train()
    gen.load_state_dict(teacher.state_dict())
    disc = PatchDiscriminator(ndf, 3).to(device)
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    times = []
    for step in range(steps):
        first = step * batch % len(inputs)
        x, y = inputs[first:first + batch].to(device), outputs[first:first + batch].to(device)
        start = time.perf_counter()
        fake = gen(x)
        pred_real, pred_fake = disc(y), disc(fake.detach())
        loss_d = 0.5 * (F.mse_loss(pred_real, torch.ones_like(pred_real))
                        + F.mse_loss(pred_fake, torch.zeros_like(pred_fake)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        pred = disc(fake)
        loss = 10 * F.mse_loss(fake, y) + 0.5 * F.mse_loss(pred, torch.ones_like(pred))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def gs_steps(teacher, inputs, outputs, steps: int, batch: int, bits: int, precision: str, ndf: int,
             device) -> tuple[list[float], list[float]]:
    """The library's GS steps, timed from its own log (one record per step, cumulative seconds): (`steps` pruning
    steps, `steps` + 1 fine-tuning steps). The freeze step (it also narrows the student and calibrates the clip
    ranges again, once per run) is left out."""
    train = TrainConfig(steps=2 * steps + 2, distill="mse", distill_weight=10.0, gan_weight=1.0, ndf=ndf, d_layers=3,
                        log_every=1, checkpoint_every=10 ** 6, finetune_fraction=0.5, precision=precision)
    cfg = SlimConfig(method="gs", bits=bits, sparsity=0.5, batch_size=batch, train=train)
    with tempfile.TemporaryDirectory() as run_dir:
        _, card = run_method(teacher, inputs, outputs, cfg, run_dir, progress=False, device=device)
    seconds = [0.0] + [r["seconds"] for r in card["history"]]
    times = [b - a for a, b in zip(seconds, seconds[1:])]
    return times[:steps], times[steps + 1:]


def run_config(name: str, teacher, inputs, outputs, steps: int, batch: int, ndf: int,
               device) -> tuple[list, list]:
    """(step times, fine-tuning step times: empty for the plain step, which has no such phase)."""
    if name == "plain fp32":
        return plain_steps(teacher, inputs, outputs, steps, batch, ndf, device), []
    method, precision = name.split()
    return gs_steps(teacher, inputs, outputs, steps, batch, int(method.split("-")[1]), precision, ndf, device)


def profile_gs_step(teacher, inputs, outputs, batch: int, precision: str, ndf: int, device, rows: int = 25) -> str:
    """torch.profiler's table (self CPU time) over the steps of a short GS-8 run."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        gs_steps(teacher, inputs, outputs, 3, batch, 8, precision, ndf, device)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first two are warm-up")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", choices=CONFIGS,
                        help="default: all, less the bf16 ones where the device has no bf16 arithmetic")
    parser.add_argument("--profile", action="store_true",
                        help="also torch.profiler tables of GS-8 steps (printed, and in the JSON under 'profile')")
    parser.add_argument("--ngf", type=int, default=64, help="generator width (64: the published ResNet-9)")
    parser.add_argument("--ndf", type=int, default=64, help="discriminator width")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.configs is None:
        args.configs = [c for c in CONFIGS if "bf16" not in c or has_fast_bf16(device)]
        if len(args.configs) < len(CONFIGS):
            print("no bf16 arithmetic on this device: bf16 configurations left out (pass --configs to time them)")
    torch.manual_seed(0)
    teacher = create_generator("cyclegan", ngf=args.ngf, n_blocks=9).eval()
    inputs = torch.rand(max(args.batches) * 2, 3, args.size, args.size) * 2 - 1
    with torch.no_grad():
        outputs = torch.cat([teacher(x[None]) for x in inputs])
    results = []
    for batch in args.batches:
        times = {name: [] for name in args.configs}
        tuning = {name: [] for name in args.configs}
        peak = {name: {} for name in args.configs}
        for round_index in range(args.rounds):
            order = args.configs if round_index % 2 == 0 else args.configs[::-1]
            for name in order:
                _reset_peaks(device)
                pruning, finetuning = run_config(name, teacher, inputs, outputs, args.steps, batch, args.ndf,
                                                 device)
                times[name] += pruning[2:]  # the first two of each phase warm up
                tuning[name] += finetuning[2:]
                peak[name] = {k: max(v, peak[name].get(k, 0.0)) for k, v in _peaks_mb(device).items()}
                print(f"batch {batch} round {round_index + 1} {name}: {statistics.median(times[name]):.3f} s/it",
                      flush=True)
        reference = statistics.median(times[args.configs[0]])
        for name in args.configs:
            median = statistics.median(times[name])
            row = {"config": name, "batch": batch, "size": args.size, "s_per_it": round(median, 3),
                   "ratio_to_first": round(median / reference, 3),
                   **{k: round(v) for k, v in peak[name].items()}, "steps_timed": len(times[name])}
            if tuning[name]:
                finetune = statistics.median(tuning[name])
                row.update(s_per_it_finetune=round(finetune, 3), ratio_finetune=round(finetune / reference, 3),
                           ratio_run_0_8=round((0.2 * median + 0.8 * finetune) / reference, 3))
            results.append(row)
    gpu = device.type == "cuda"
    print(f"\n{'config':<12} {'batch':>5} {'s/it':>7} {'ratio':>6} {'fine-tune s/it':>15} {'ratio':>6} "
          f"{'run_0.8':>8} {'peak RSS MB':>12}" + (f" {'peak GPU MB':>12}" if gpu else ""))
    for r in results:
        tune = (f"{r['s_per_it_finetune']:>15.3f} {r['ratio_finetune']:>6.2f} {r['ratio_run_0_8']:>8.2f}"
                if "s_per_it_finetune" in r else f"{'':>15} {'':>6} {'':>8}")
        print(f"{r['config']:<12} {r['batch']:>5} {r['s_per_it']:>7.3f} {r['ratio_to_first']:>6.2f} {tune} "
              f"{r['peak_rss_mb']:>12}" + (f" {r['peak_gpu_mb']:>12}" if gpu else ""))
    profiles = {}
    if args.profile:
        for precision in sorted({name.split()[1] for name in args.configs}):
            profiles[f"gs-8 {precision}, batch {args.batches[0]}"] = table = profile_gs_step(
                teacher, inputs, outputs, args.batches[0], precision, args.ndf, device)
            print(f"\nGS-8 {precision}, batch {args.batches[0]}:\n{table}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "device": str(device), "device_name": device_name(device),
                               "cpu": cpu_name(), "bf16_in_hardware": has_fast_bf16(device),
                               "torch": torch.__version__, "cuda": torch.version.cuda, "ngf": args.ngf,
                               "ndf": args.ndf, "results": results, **({"profile": profiles} if profiles else {})},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
