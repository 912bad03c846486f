"""`python -m gs_core <command>`: argument parsing only; every command calls the library.

Errors users can cause (bad files, bad arguments, a diverged run) print one clear line and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TEACHER = REPO / "checkpoints" / "teacher"


def _add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --option per scalar field of a config dataclass, defaulting to the dataclass default."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or f.default is dataclasses.MISSING:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=f.default, help=f"(default: {f.default})")


def _add_device_arg(parser: argparse.ArgumentParser) -> None:
    from gs_core.device import DEVICE_CHOICES

    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default: auto, CUDA when present)")


def _dataclass_from_args(cls, args: argparse.Namespace, **extra):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names}, **extra)


def cmd_info(args) -> int:
    from gs_core.checkpoint import load_model
    from gs_core.eval.cost import count_macs, count_params, size_bits

    model, card = load_model(args.file)
    summary = {"file": str(args.file), "architecture": card.get("architecture"), "params": count_params(model),
               "macs_256": count_macs(model, (256, 256)), "size_bits": size_bits(model)}
    summary.update({k: v for k, v in card.items() if k not in ("architecture", "history", "gammas")})
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return 0
    arch = summary["architecture"] or {}
    print(f"{args.file}: {arch.get('name')} (ngf {arch.get('config', {}).get('ngf')}), "
          f"{summary['params']:,} params, {summary['macs_256'] / 1e9:.3f} GMACs at 256x256, "
          f"{summary['size_bits'] / 8e6:.3f} MB at its bit widths")
    for key in ("method", "bits", "sparsity_target", "metrics", "metrics_vs_target"):
        if key in card:
            print(f"  {key}: {json.dumps(card[key], default=str)}")
    if "plan" in card:
        groups = card["plan"]["groups"]
        print("  channels kept: " + ", ".join(f"{g} {k}/{t}" for g, (k, t) in groups.items()))
    return 0


def cmd_stylize(args) -> int:
    import torch

    from gs_core.checkpoint import load_model
    from gs_core.data.images import ImageLoadError, load_rgb, to_tensor, to_uint8
    from gs_core.deploy.choose import is_deployed, load_deployed
    from gs_core.device import resolve_device
    from PIL import Image

    device = resolve_device(args.device)
    if Path(args.model).suffix == ".onnx":  # an exported model runs in onnxruntime (or OpenVINO), on the CPU
        from gs_core.deploy.runtime import ENGINES

        model, device = ENGINES[args.engine](args.model, threads=args.threads), torch.device("cpu")
    elif is_deployed(args.model):  # a deployed folder: its own engine and graph, on the CPU
        model, device = load_deployed(args.model, threads=args.threads), torch.device("cpu")
    else:
        model = load_model(args.model)[0].to(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures, written = 0, set()
    for path in _image_paths(args.inputs):
        try:
            rgb, notices = load_rgb(path, max_side=args.max_side)
        except ImageLoadError as err:
            print(f"skipped {path}: {err}", file=sys.stderr)
            failures += 1
            continue
        with torch.inference_mode():
            styled = model.stylize(to_tensor(rgb)[None].to(device))[0].cpu()
        target = _unused(out, path.stem, written)
        Image.fromarray(to_uint8(styled)).save(target)
        print(f"{path} -> {target}" + "".join(f" ({n})" for n in notices))
    return 1 if failures else 0


def _image_paths(inputs: list[str]) -> list[Path]:
    """The files as given, a folder standing for the images in it (sorted by name)."""
    from gs_core.data.images import list_images

    return [image for item in map(Path, inputs) for image in (list_images(item) if item.is_dir() else [item])]


def _unused(out: Path, stem: str, written: set[Path]) -> Path:
    """out/stem.png, or out/stem-2.png, -3, ... where this run already wrote that name (photo.jpg and
    photo.png, or two folders' photo.jpg): one output per input, none overwritten."""
    target, n = out / f"{stem}.png", 1
    while target in written:
        n += 1
        target = out / f"{stem}-{n}.png"
    written.add(target)
    return target


def cmd_slim(args) -> int:
    import torch

    from gs_core.checkpoint import load_model, save_model
    from gs_core.data.images import list_images
    from gs_core.data.teacher_cache import CROPS_PER_PHOTO, distillation_pairs, task_targets
    from gs_core.device import resolve_device
    from gs_core.methods import SlimConfig, drawn_rows, run_method
    from gs_core.slim.train import TrainConfig

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    teacher, _ = load_model(args.teacher)
    photos = list_images(args.photos)
    train = _dataclass_from_args(TrainConfig, args)
    cfg = _dataclass_from_args(SlimConfig, args, train=train)
    needed = drawn_rows(len(photos) * CROPS_PER_PHOTO, cfg.batch_size, train.seed, train.steps)
    inputs, outputs = distillation_pairs(teacher, photos, args.size, REPO / "data" / "cache", device=device,
                                         needed=needed)
    targets = task_targets(teacher, inputs) if cfg.method == "prune" else None
    slim, card = run_method(teacher, inputs, outputs, cfg, Path(args.out) / "run", targets, device=device)
    folder = save_model(slim, Path(args.out) / "slim", {"name": Path(args.out).name, **card})
    print(f"saved {folder}")
    return 0


def cmd_extract(args) -> int:
    from gs_core.checkpoint import load_model, save_model
    from gs_core.slim.extract import extract
    from gs_core.slim.plan import describe_widths
    from gs_core.models import create_generator

    student, card = load_model(args.student)
    slim = extract(student)
    dense = create_generator(student.arch, **student.config())
    card = {**card, "plan": describe_widths(slim, dense)}
    card.pop("architecture", None)
    print(f"saved {save_model(slim, args.out, card)}")
    return 0


def cmd_export(args) -> int:
    from gs_core.checkpoint import load_model
    from gs_core.deploy.onnx_export import EXPORT_FORMATS, export_onnx
    from gs_core.deploy.runtime import agreement
    from gs_core.slim.extract import extract
    from gs_core.slim.gates import gates_of

    if args.format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {args.format!r}; supported: {', '.join(EXPORT_FORMATS)}")
    model, _ = load_model(args.model)
    if gates_of(model):
        print("this student still has its channel gates: extracting it first (as `extract` does)")
        model = extract(model)
    try:
        path = export_onnx(model, args.out, int8=args.int8)
    except OSError as err:
        raise ValueError(f"cannot write {args.out}: {err.strerror or err}") from None
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB, {'int8' if args.int8 else 'fp32'}); "
          f"against PyTorch on a 64 px image: {agreement(model, path)}")
    return 0


def cmd_deploy(args) -> int:
    from gs_core.deploy.choose import deploy

    info = deploy(args.model, args.out, size=args.size, threads=args.threads, repeats=args.repeats,
                  engines=args.engines)
    print(f"{'candidate':42}{'fidelity':>10}{'latency':>12}  why")
    for c in info["candidates"]:
        db = "-" if c["fidelity_db"] is None else f"{c['fidelity_db']:.1f} dB"
        ms = "-" if c["latency_ms"] is None else f"{c['latency_ms']:.1f} ms"
        print(f"{c['engine'] + ' ' + c['precision'] + ' ' + c['variant']:42}{db:>10}{ms:>12}  {c['why']}")
    print(f"deployed {info['engine']} {info['precision']} ({info['variant']}) to {args.out}: "
          f"{info['latency_ms']:.1f} ms at {info['size']} px, {info['threads']} threads, on {info['cpu']}")
    return 0


def cmd_eval(args) -> int:
    from gs_core.device import resolve_device
    from gs_core.eval.evaluate import METRICS, evaluate_models, write_table

    metrics = args.metrics or METRICS
    table = evaluate_models(args.models, args.photos, args.teacher, metrics=metrics, size=args.size,
                            target_dir=args.target, device=resolve_device(args.device))
    print(table.to_string())
    if args.out:
        write_table(table, args.out)
        print(f"wrote {args.out}")
    return 0


def cmd_fetch_weights(args) -> int:
    from gs_core.eval.backbones import fetch_weights

    try:
        paths = fetch_weights(args.names or None, timeout_s=args.timeout)
    except RuntimeError as err:  # no network: the message says what to do instead, a traceback would not
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"ok {path}")
    return 0


def cmd_photos(args) -> int:
    from gs_core.data.photoset import build_photoset, photoset_dir

    build_photoset(Path(args.out) if args.out else photoset_dir())
    return 0


def cmd_train_teacher(args) -> int:
    import torch

    from gs_core.device import resolve_device
    from gs_core.teacher import preset, train_teacher

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    card = train_teacher(preset(args.preset, args.steps), args.out, args.run_dir, device=device)
    print(json.dumps(card["metrics_vs_target"], indent=1))
    return 0


def cmd_grid(args) -> int:
    import torch

    from gs_core.device import resolve_device
    from gs_core.grid import grid_preset, remeasure, run_grid, run_local
    from gs_core.slim.plan import parse_channel_multiple

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    backend = run_local
    if args.backend == "ray":
        from gs_core.grid_ray import RayBackend

        backend = RayBackend(args.address, cpus_per_point=args.threads, gpus_per_point=args.gpus_per_point)
    elif args.address or args.gpus_per_point:
        raise ValueError("--address and --gpus-per-point are options of --backend ray")
    parse_channel_multiple(args.channel_multiple)  # a wrong value fails here, not in every point
    cfg = dataclasses.replace(grid_preset(args.preset), channel_multiple=args.channel_multiple)
    if args.remeasure:
        manifest = remeasure(cfg, args.teacher, args.out, args.remeasure, device)
    else:
        manifest = run_grid(cfg, args.teacher, args.out, args.run_dir, only=args.only,
                            device=device, backend=backend)
    print(manifest.to_string())
    return 0


def cmd_jobs(args) -> int:
    import torch

    from gs_core import jobs
    from gs_core.device import resolve_device

    if args.action == "worker":
        torch.set_num_threads(args.threads)
        jobs.work(args.workspace, args.backend, resolve_device(args.device), parent=args.parent, once=args.once)
        return 0
    if args.action == "estimate":
        print(json.dumps(jobs.estimate(_dataclass_from_args(jobs.JobSpec, args), args.workspace)))
        return 0
    queue = jobs.JobQueue(args.workspace)
    if args.action == "submit":
        spec = _dataclass_from_args(jobs.JobSpec, args)
        print(jobs.inspect_teacher(jobs.EMBEDDED_TEACHER if not spec.teacher else spec.teacher))
        if args.estimate:
            guess = jobs.estimate(spec, args.workspace)
            print(f"about {guess['seconds'] / 60:.1f} min and {guess['disk_bytes'] / 1e6:.0f} MB ({guess['how']})")
        print(queue.submit(spec))
    elif args.action == "cancel":
        queue.cancel(args.job)
    for job in queue.jobs() if args.action == "list" else ():
        eta = f", about {job['eta_s'] / 60:.1f} min left" if job["eta_s"] else ""
        print(f"{job['id']}  {job['state']:9}  {job['step']}/{job['steps']}{eta}  {job['teacher']}  "
              f"{job['model'] or job['error'] or ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gs_core.jobs import JobSpec
    from gs_core.methods import SlimConfig
    from gs_core.slim.train import TrainConfig

    parser = argparse.ArgumentParser(prog="gs_core", description="GAN Slimming: compress image-to-image GANs.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print the card of a checkpoint (ours or an official .pth)")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("stylize", help="stylize RGB images with a model (a checkpoint, an exported .onnx or a "
                       "deployed folder)")
    p.add_argument("inputs", nargs="+", help="image files, or folders of them")
    p.add_argument("--model", default=str(DEFAULT_TEACHER))
    p.add_argument("--out", required=True, help="folder for the styled PNGs (one per input, named after it)")
    p.add_argument("--max-side", type=int, default=1024, help="downscale larger images (default 1024)")
    p.add_argument("--engine", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the runtime an .onnx model runs in (default onnxruntime; openvino where installed)")
    p.add_argument("--threads", type=int, help="threads of an .onnx or deployed model (default: a deployed "
                   "folder's own, else one per core)")
    _add_device_arg(p)
    p.set_defaults(run=cmd_stylize)

    p = sub.add_parser("slim", help="one GS run (or baseline): teacher + photo folder -> slim student")
    p.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    p.add_argument("--photos", default=str(REPO / "data" / "photos" / "train"))
    p.add_argument("--out", required=True, help="run folder; rerunning the same command resumes it")
    p.add_argument("--size", type=int, default=96, help="training crop size (default 96)")
    p.add_argument("--threads", type=int, default=2)
    _add_device_arg(p)
    _add_dataclass_args(p, SlimConfig, skip=("train",))
    _add_dataclass_args(p, TrainConfig, skip=("rho", "budget"))  # set through --rho / --sparsity
    p.set_defaults(run=cmd_slim)

    p = sub.add_parser("extract", help="remove pruned channels of a gated GS student")
    p.add_argument("student")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_extract)

    p = sub.add_parser("export", help="export a teacher or student for deployment (ONNX, fp32 or int8)")
    p.add_argument("model", help="checkpoint folder or file (a gated student is extracted first)")
    p.add_argument("--format", default="onnx", help="onnx (the only one so far)")
    p.add_argument("--int8", action="store_true",
                   help="integer convs with the student's own GS scales (quantized students only)")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("deploy", help="the fastest exact engine and form for this CPU: a folder stylize runs")
    p.add_argument("model", help="checkpoint folder or file (a gated student is extracted first)")
    p.add_argument("--out", required=True, help="the folder to write (model.onnx + deploy.json); an earlier "
                   "deploy there is replaced")
    p.add_argument("--size", type=int, default=512, help="side of the square image timed (default 512)")
    p.add_argument("--threads", type=int, default=2, help="threads the engines time with and run with (default 2)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds per candidate (default 20)")
    p.add_argument("--engines", nargs="+", choices=("onnxruntime", "openvino"),
                   help="only these engines (default: every installed one), say those the target machine has")
    p.set_defaults(run=cmd_deploy)

    p = sub.add_parser("eval", help="quality and cost of checkpoints against a teacher")
    p.add_argument("models", nargs="+")
    p.add_argument("--photos", default=str(REPO / "data" / "photos" / "test"))
    p.add_argument("--teacher", default=str(DEFAULT_TEACHER))
    p.add_argument("--metrics", nargs="+")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--target", help="folder of target-domain images: FID against it too")
    p.add_argument("--out", help="table file (.csv or .json)")
    _add_device_arg(p)
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("fetch-weights", help="download LPIPS / FID backbone weights (needs internet)")
    p.add_argument("names", nargs="*")
    p.add_argument("--timeout", type=float, default=30)
    p.set_defaults(run=cmd_fetch_weights)

    p = sub.add_parser("photos", help="rebuild the embedded photo set from installed packages")
    p.add_argument("--out")
    p.set_defaults(run=cmd_photos)

    p = sub.add_parser("train-teacher", help="train the embedded teacher (resumable)")
    p.add_argument("--preset", default="default")
    p.add_argument("--steps", type=int)
    p.add_argument("--out", default=str(DEFAULT_TEACHER))
    p.add_argument("--run-dir", default=str(REPO / "runs" / "teacher"))
    p.add_argument("--threads", type=int, default=2)
    _add_device_arg(p)
    p.set_defaults(run=cmd_train_teacher)

    p = sub.add_parser("grid", help="train the sparsity x bits grid and baselines (resumable, incremental)")
    p.add_argument("--preset", default="default")
    p.add_argument("--teacher", default=str(DEFAULT_TEACHER),
                   help="our teacher folder, or an official CartoonGAN / CycleGAN .pth (copied into OUT/teacher)")
    p.add_argument("--out", default=str(REPO / "checkpoints"))
    p.add_argument("--run-dir", default=str(REPO / "runs" / "grid"))
    p.add_argument("--only", nargs="+", help="train only these point ids, in this order")
    p.add_argument("--channel-multiple", default="auto", help="kept widths a multiple of N channels, or auto (the "
                   "CPU's kernel block where it pays; see slim --help); 1: any width (default: auto)")
    p.add_argument("--remeasure", nargs="+", metavar="METRIC",
                   help="train nothing: measure these metrics again for every finished point (e.g. latency_ms)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (with --backend ray: per point, and the "
                   "CPUs each point requests)")
    _add_device_arg(p)
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: the points one after another here (default); ray: one Ray task per point")
    p.add_argument("--address", help="with --backend ray: the Ray cluster to use (its head's host:port); default: "
                   "RAY_ADDRESS, else a Ray instance started on this machine, else a new local one")
    p.add_argument("--gpus-per-point", type=float, default=0,
                   help="with --backend ray: GPUs each point requests, and trains on (else on the CPU)")
    p.set_defaults(run=cmd_grid)

    p = sub.add_parser("jobs", help="users' compression jobs: a queue on disk and the worker that runs it")
    actions = p.add_subparsers(dest="action", required=True)
    worker = actions.add_parser("worker", help="run the queued jobs one at a time (the app starts one)")
    worker.add_argument("--backend", choices=("local", "ray"), default="local")
    worker.add_argument("--threads", type=int, default=2)
    worker.add_argument("--parent", type=int, help="leave once the queue is empty and this process has gone")
    worker.add_argument("--once", action="store_true", help="leave once the queue is empty")
    _add_device_arg(worker)
    submit = actions.add_parser("submit", help="queue a job (the teacher is checked and copied first)")
    submit.add_argument("--estimate", action="store_true", help="time a few steps first and say how long")
    _add_dataclass_args(submit, JobSpec)
    estimate = actions.add_parser("estimate", help="time a few steps of the job and print the estimate as JSON")
    _add_dataclass_args(estimate, JobSpec)
    actions.add_parser("list", help="every job, newest first")
    cancel = actions.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job")
    for action in (worker, submit, estimate, cancel, actions.choices["list"]):
        action.add_argument("--workspace", default=str(REPO / "workspace"))
    p.set_defaults(run=cmd_jobs)
    return parser


def main(argv: list[str] | None = None) -> int:
    from gs_core.checkpoint import CheckpointError
    from gs_core.data.images import ImageLoadError
    from gs_core.eval.backbones import MissingWeightsError
    from gs_core.slim.train import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CheckpointError, ImageLoadError, MissingWeightsError, TrainingDiverged, ValueError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
