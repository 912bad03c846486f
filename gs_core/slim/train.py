"""The GS objective in one training loop.

    min_{W, gamma} max_D   beta * distill(G(x), y)  +  gan * LSGAN(D; real = y, fake = G(x))  +  rho * ||gamma||_1

y is the teacher's output for GS students (or the cartoon target when the teacher itself is trained: the same
loop, with no gammas). Weights W use Adam; gammas use plain SGD followed by the proximal step of the L1 term
(soft thresholding), which makes pruned channels exact zeros; quantization lives inside the model (fake quant
+ STE), so it is trained through. Switching terms off gives the baselines: gan = 0, rho = 0, bits = 32.

Schedule: the first (1 - finetune_fraction) of the steps prune; then the plan is frozen (pruned gammas stay 0,
no more L1) and the rest fine-tunes the narrowed student (`extract.narrowed`: the kept channels only, so each
step costs what the slim model costs; Adam's moments are narrowed with it), written back into the full-width
student at every checkpoint and at the end. Learning rates follow a cosine; with `finetune_restart` (when
pruning) one cosine spans the pruning phase and a second, from the full rate, the fine-tuning. In budget mode rho
is steered so the plan's cost follows a line down to the requested fraction of the teacher's cost, and at the
freeze the smallest gammas are cut until the budget holds. With `quant_delay` the quantizers stay off (full
precision) for that fraction of the steps and come on calibrated on the batch of the step they start at.

Runs on the device it is given. `precision="bf16"` runs the forward and backward passes under bf16 autocast with
channels_last, while weights, optimizer states, gammas and clip ranges stay fp32; the default, "auto", picks bf16
where it is faster: on a GPU, and on the CPU for wide generators only (`resolve_precision`).

Every `checkpoint_every` steps the whole state (model, D, optimizers, RNG, rho, plan, history) is written
atomically to `run_dir/state.pt`; a rerun with the same arguments resumes from it and ends with the same weights
as an uninterrupted run, because batches are a pure function of the step number.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gs_core.files import atomic_torch_save
from gs_core.models import PatchDiscriminator
from gs_core.slim.gates import gamma_parameters, gates_of, soft_threshold_
from gs_core.slim.extract import narrow, narrowed, plan_slices, widen_student_
from gs_core.slim.plan import CostModel, Plan, dense_plan, enforce_budget, plan_cost, plan_from_gates, round_plan
from gs_core.slim.quant import calibrate_activations, set_quantizing_

DISTILL_LOSSES = ("l1", "mse", "lpips", "lpips-vgg")
PRECISIONS = ("auto", "bf16", "fp32")
BF16_MIN_WIDTH = 128  # "auto" on the CPU: bf16 for generators with a conv at least this wide, else fp32
BUDGET_METRICS = ("macs", "size_bits", "latency")
STATE = "state.pt"
LOG = "log.jsonl"


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 2e-4  # Adam, weights and activation clip ranges
    lr_gamma: float = 0.05  # SGD on gammas; the proximal threshold is lr_gamma * rho
    rho: float = 0.0  # L1 weight on gammas (fixed-rho mode), or the starting rho in budget mode
    budget: float | None = None  # budget mode: keep this fraction of the teacher's `budget_metric`
    budget_metric: str = "macs"  # "macs", "size_bits" or "latency" (ms, from a measured per-layer table)
    # Prune in the first fifth, then fine-tune on a cosine of its own (restarted at the freeze; a pruning run only):
    # the schedule chosen on the validation photos for the shipped grid (gs_core.grid).
    finetune_fraction: float = 0.8
    finetune_restart: bool = True
    # Delayed quantization (TensorFlow's "quant delay"): the first `quant_delay` of the steps train the student in
    # full precision; then its quantizers come on, calibrated on that step's batch, and the remaining steps learn
    # them. 0 quantizes from the first step.
    quant_delay: float = 0.0
    # Where the activation clip ranges start, each at this quantile of |x| on a real batch (then learned); None:
    # quant.calibration_quantile of each quantizer's bit width.
    calibration_quantile: float | None = None
    distill: str = "l1"  # "l1", "mse", or L1 plus a perceptual term: "lpips" (AlexNet) or "lpips-vgg" (VGG16)
    distill_weight: float = 10.0  # beta
    gan_weight: float = 1.0  # 0 switches the discriminator off
    ndf: int = 16
    d_layers: int = 3
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    # "bf16": forward and backward under bf16 autocast, channels_last (weights, Adam and gammas stay fp32);
    # "fp32" computes everything in fp32; "auto": whichever is faster for this model and device
    # (`resolve_precision`). 8-bit levels are exact in bf16 (8 significant bits).
    precision: str = "auto"

    def __post_init__(self):
        if self.distill not in DISTILL_LOSSES:
            raise ValueError(f"distill must be one of {DISTILL_LOSSES}, got {self.distill!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.budget_metric not in BUDGET_METRICS:
            raise ValueError(f"budget_metric must be one of {', '.join(BUDGET_METRICS)}, got {self.budget_metric!r}")
        if self.budget is not None and not 0 < self.budget <= 1:
            raise ValueError(f"budget is a fraction of the teacher's cost in (0, 1], got {self.budget}")
        if self.steps < 1 or not 0 <= self.finetune_fraction < 1 or not 0 <= self.quant_delay < 1:
            raise ValueError("steps must be >= 1, and finetune_fraction and quant_delay in [0, 1)")
        if self.calibration_quantile is not None and not 0 < self.calibration_quantile <= 1:
            raise ValueError(f"calibration_quantile must be in (0, 1], got {self.calibration_quantile}")

    @property
    def quant_start(self) -> int:
        """The step the quantizers come on (0: from the first)."""
        return int(self.steps * self.quant_delay)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the last good checkpoint is left untouched."""


Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
StepHook = Callable[[int, nn.Module, Plan], None]


def has_fast_bf16(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: a GPU that supports it, or a CPU with AVX-512 BF16 or AMX. Without them
    oneDNN emulates bf16, and a full-width ResNet-9 GS step ran 3.6x slower than in fp32 (on an AVX-512 Xeon
    without BF16, 256 px, 2 threads: 6.4 against 1.76 s)."""
    if device.type == "cuda":  # not emulation, which is_bf16_supported() also counts by default (pre-Ampere GPUs)
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str, model: nn.Module, device: torch.device) -> str:
    """"auto" -> "bf16" where the hardware computes bf16 (`has_fast_bf16`), and on the CPU only for a generator with
    a conv of BF16_MIN_WIDTH channels or more; else "fp32". Measured on a 2-core AVX-512 BF16 CPU: bf16 made a
    full-width CycleGAN ResNet-9 GS step (256 channels, 256 px, 2 threads) 1.4x faster, but a step of the embedded
    teacher (64 channels at most, 96 px crops, batch 4, 1 thread) 2.1x slower and of its GS-8 students 1.9x
    slower."""
    if precision != "auto":
        return precision
    if not has_fast_bf16(device):
        return "fp32"
    if device.type != "cpu":
        return "bf16"
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    widest = max((max(m.in_channels, m.out_channels) for m in convs), default=0)
    return "bf16" if widest >= BF16_MIN_WIDTH else "fp32"


def _cosine(step: int, steps: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / steps))


def _distillation_loss(kind: str, model: nn.Module):
    """Pixel loss, or L1 plus LPIPS on RGB images (the GS paper distils with VGG features; LPIPS-VGG is a
    calibrated distance on those features). The perceptual ones need ImageNet weights in the torch cache and
    raise MissingWeightsError at once when they are absent."""
    if kind in ("l1", "mse"):
        return F.l1_loss if kind == "l1" else F.mse_loss
    from gs_core.eval.quality import LPIPSMetric

    perceptual = LPIPSMetric("alex" if kind == "lpips" else "vgg")
    return lambda fake, target: (F.l1_loss(fake, target)
                                 + perceptual.distance(model.postprocess(fake), model.postprocess(target)).mean())


def _check_same_run(state: dict, cfg: TrainConfig, run_dir: Path) -> None:
    """Resuming with other settings would silently mix two runs: refuse, naming what differs."""
    saved = json.loads(state.get("config") or "{}")
    differ = {k: (saved[k], v) for k, v in asdict(cfg).items() if k in saved and saved[k] != v}
    if differ:
        changes = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in differ.items())
        raise ValueError(f"{run_dir} holds a run with other settings ({changes}); rerun with the same settings "
                         f"to resume it, or use another run folder")


def _check_finite(loss: torch.Tensor, which: str, step: int, state_path: Path) -> None:
    if not torch.isfinite(loss):
        kept = f"the last good checkpoint {state_path} is kept" if state_path.exists() else "no checkpoint yet"
        raise TrainingDiverged(f"{which} loss became {loss.item()} at step {step + 1}; training stopped and "
                               f"{kept}. Lower the learning rate or check the data.")


def _keep_one_channel_per_group_(model: nn.Module, before: dict[int, torch.Tensor]) -> None:
    """Undo the proximal step on the strongest channel of a group it would empty: a group with no channel
    left would cut the network in two (there would be nothing to extract)."""
    gates = gates_of(model)
    with torch.no_grad():
        for group in model.channel_groups():
            members = [gates[name] for name in group.gates if name in gates]
            if not members or any(bool(g.alive().any()) for g in members):
                continue
            strength = torch.stack([before[id(g.gamma)].abs() for g in members]).max(dim=0).values
            keep = int(strength.argmax())
            for gate in members:
                gate.gamma[keep] = before[id(gate.gamma)][keep]


def _optimizers(net: nn.Module, cfg: TrainConfig) -> tuple[list, torch.optim.Adam, torch.optim.SGD | None]:
    """(gammas, Adam on every other parameter, plain SGD on the gammas or None)."""
    gammas = gamma_parameters(net)
    gamma_ids = {id(g) for g in gammas}
    opt_w = torch.optim.Adam([p for p in net.parameters() if id(p) not in gamma_ids], lr=cfg.lr, betas=(0.5, 0.999))
    return gammas, opt_w, torch.optim.SGD(gammas, lr=cfg.lr_gamma) if gammas else None


def _narrow_moments_(opt_w: torch.optim.Adam, model: nn.Module, new_opt: torch.optim.Adam, net: nn.Module,
                     plan: Plan) -> None:
    """Carry Adam's moments over from the full-width student to its narrowed copy (`net`), channel by channel."""
    slices = plan_slices(model, plan)
    names = {id(p): name for name, p in model.named_parameters()}
    params = dict(net.named_parameters())
    for param, state in opt_w.state.items():
        name = names[id(param)]
        new_opt.state[params[name]] = {k: narrow(v, slices.get(name, [])) if v.dim() else v.clone()
                                       for k, v in state.items()}


def _apply_plan_(model: nn.Module, plan: Plan, weights_too: bool = True) -> None:
    """Zero the gammas of removed channels (every gate of the group) and, once the plan is frozen, the conv
    weights that write or read them. Those weights no longer change the output, but zeroing them makes the
    fake-quant scales (max |w|) those of the slim model, so extraction is exact with quantization too."""
    gates = gates_of(model)
    device = next(model.parameters()).device
    with torch.no_grad():
        for group in model.channel_groups():
            dead = (~torch.tensor(plan[group.name])).nonzero().flatten().to(device)
            for name in group.gates:
                if name in gates:
                    gates[name].gamma[dead] = 0
            if not weights_too:
                continue
            for conv, axis in (*group.producers, *group.consumers):
                model.get_submodule(conv).weight.index_fill_(axis, dead, 0)
            for conv, _ in group.producers:
                bias = model.get_submodule(conv).bias
                if bias is not None:
                    bias[dead] = 0


def fit(model: nn.Module, batches: Batches, cfg: TrainConfig, run_dir: str | Path, *,
        cost_model: tuple | None = None, progress: bool = True, desc: str = "train",
        device: torch.device | str = "cpu", on_step: StepHook | None = None) -> list[dict]:
    """Train `model` in place with the GS objective on `device`; returns the history (one dict per logged step).
    The model comes back on the CPU, in eval mode.

    on_step(steps done, the network being trained, the current plan) runs after every step (and its checkpoint):
    the seam for progress reports and live previews of a job. The network is the student, or after the freeze its
    narrowed copy; the hook must leave it as it found it. An exception raised there stops training (that is how a
    job is cancelled); the last checkpoint is kept.

    cost_model (a `plan.CostModel`, or the tuple (layer costs, reference cost, bits)) lets budget mode and the
    progress bar price the plan; a latency budget needs its `latency` table.
    """
    cost_model = CostModel(*cost_model) if cost_model is not None else None
    if cfg.budget is not None and cfg.budget_metric == "latency" and getattr(cost_model, "latency", None) is None:
        raise ValueError("a latency budget needs a latency table in the cost model (gs_core.deploy.latency_table)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    precision = resolve_precision(cfg.precision, model, device)
    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format
    model.to(device, memory_format=layout)
    disc = PatchDiscriminator(cfg.ndf, cfg.d_layers).to(device, memory_format=layout) if cfg.gan_weight > 0 else None
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.999)) if disc else None
    gammas = gamma_parameters(model)
    distill = _distillation_loss(cfg.distill, model)
    # At least one pruning step, so even a very short run freezes a plan and meets its budget.
    prune_end = max(1, int(cfg.steps * (1 - cfg.finetune_fraction))) if gammas else 0
    pruning = bool(gammas) and (cfg.rho > 0 or cfg.budget is not None)
    quant_on = cfg.quant_start  # the quantizers compute in the steps from this one on

    start, rho, frozen, history = 0, cfg.rho, None, []
    if pruning and cfg.budget is not None and not cfg.rho:
        # Budget mode's default rho: a quarter of the pressure that would bring the median gamma to zero by the
        # end of pruning (the cosine schedule averages ~0.8 of lr_gamma there). Enough to separate the channels
        # the loss defends from the others; the budget itself is met by cutting the smallest gammas.
        median = torch.cat([g.detach().abs().flatten() for g in gammas]).median().item()
        rho = median / (4 * 0.8 * cfg.lr_gamma * prune_end)
    state_path = run_dir / STATE
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        _check_same_run(state, cfg, run_dir)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError:
            raise ValueError(f"{run_dir} holds a run of a different model (other architecture or bits); "
                             f"use another run folder, or delete this one to start over") from None
        if disc:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        torch.set_rng_state(state["rng"].cpu())
        start, rho, frozen, history = state["step"], state["rho"], state["plan"], state["history"]
    # `net` is what the steps train: the student itself, or after the freeze its narrowed copy.
    net = model if frozen is None else narrowed(model, frozen).to(memory_format=layout)
    set_quantizing_(net, start >= quant_on)
    gammas, opt_w, opt_g = _optimizers(net, cfg)
    if state_path.exists():
        opt_w.load_state_dict(state["opt_w"])
        if opt_g:
            opt_g.load_state_dict(state["opt_g"])
    (run_dir / "config.json").write_text(json.dumps({**asdict(cfg), "precision_used": precision}, indent=1))

    def save(step: int):
        if net is not model:
            widen_student_(model, net, frozen)
        atomic_torch_save({"model": model.state_dict(), "opt_w": opt_w.state_dict(),
                           "opt_g": opt_g.state_dict() if opt_g else None,
                           "disc": disc.state_dict() if disc else None,
                           "opt_d": opt_d.state_dict() if opt_d else None, "rng": torch.get_rng_state(),
                           "step": step, "rho": rho, "plan": frozen, "history": history,
                           "config": json.dumps(asdict(cfg))}, state_path)

    multiples = cost_model.multiples if cost_model is not None else None

    def current_plan() -> Plan:
        """The frozen plan, or before the freeze the gates' plan with its widths rounded as the budget prices it."""
        return frozen if frozen is not None else round_plan(model, plan_from_gates(model), multiples)

    def cost_fraction(plan: Plan | None = None) -> float:
        cost = plan_cost(model, plan or current_plan(), cost_model.costs, cost_model.bits, cost_model.latency)
        return getattr(cost, cfg.budget_metric) / getattr(cost_model.reference, cfg.budget_metric)

    # The gradual budget starts from the dense student's own cost: below 1 where it is priced at fewer bits than
    # the teacher (a size budget for an 8-bit student starts at 0.25).
    start_fraction = cost_fraction(dense_plan(model)) if cfg.budget is not None else 1.0

    def lr_scale(step: int) -> float:
        if not (pruning and cfg.finetune_restart):
            return _cosine(step, cfg.steps)
        return _cosine(step, prune_end) if step < prune_end else _cosine(step - prune_end, cfg.steps - prune_end)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    net.train()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, disable=not progress,
               dynamic_ncols=True)
    t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)  # seconds add up over resumes
    with open(run_dir / LOG, "a") as log:
        for step in bar:
            scale = lr_scale(step)
            for group in opt_w.param_groups:
                group["lr"] = cfg.lr * scale
            if opt_g:
                opt_g.param_groups[0]["lr"] = cfg.lr_gamma * scale
            x, y = (t.to(device, memory_format=layout) for t in batches(step))
            if step == quant_on > 0:
                set_quantizing_(net, True)
                calibrate_activations(net, x, cfg.calibration_quantile)
            with autocast:
                fake = net(x)

            # Discriminator: teacher outputs (or targets) are real, student outputs fake (LSGAN).
            loss_d = torch.zeros(())
            if disc:
                for group in opt_d.param_groups:
                    group["lr"] = cfg.lr * scale
                with autocast:
                    pred_real, pred_fake = disc(y).float(), disc(fake.detach()).float()
                    loss_d = 0.5 * (F.mse_loss(pred_real, torch.ones_like(pred_real))
                                    + F.mse_loss(pred_fake, torch.zeros_like(pred_fake)))
                _check_finite(loss_d, "discriminator", step, state_path)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()

            with autocast:
                loss_distill = distill(fake.float(), y)
                loss_gan = torch.zeros((), device=device)
                if disc:
                    disc.requires_grad_(False)  # G's step needs gradients through D, not D's weight gradients
                    pred = disc(fake).float()
                    disc.requires_grad_(True)
                    loss_gan = 0.5 * F.mse_loss(pred, torch.ones_like(pred))
                loss = cfg.distill_weight * loss_distill + cfg.gan_weight * loss_gan
            _check_finite(loss, "generator", step, state_path)
            opt_w.zero_grad(set_to_none=True)
            if opt_g:
                opt_g.zero_grad(set_to_none=True)
            loss.backward()
            opt_w.step()
            if opt_g:
                opt_g.step()

            # The L1 term, as its proximal operator; then, after the freeze, keep pruned channels at zero.
            if pruning and step < prune_end:
                before = [g.detach().clone() for g in gammas]
                soft_threshold_(gammas, opt_g.param_groups[0]["lr"] * rho)
                _keep_one_channel_per_group_(model, dict(zip((id(g) for g in gammas), before)))
                if cfg.budget is not None:
                    # Gradual budget: the plan's cost follows a straight line from the dense student's down to the
                    # budget, cutting the channels with the smallest |gamma| (those the L1 term has pushed down).
                    wanted = start_fraction - (start_fraction - cfg.budget) * (step + 1) / prune_end
                    target = wanted * getattr(cost_model.reference, cfg.budget_metric)
                    plan = enforce_budget(model, plan_from_gates(model), cost_model.costs, target, cfg.budget_metric,
                                          cost_model.bits, cost_model.latency, multiples)
                    _apply_plan_(model, plan, weights_too=False)
            if pruning and step + 1 == prune_end:
                frozen = current_plan()
                _apply_plan_(model, frozen)
                # Pruning changed what flows into each conv: clip ranges calibrated on the dense student would
                # waste levels, so calibrate them again on this batch before fine-tuning learns them further.
                if step >= quant_on:
                    calibrate_activations(model, x, cfg.calibration_quantile)
                net = narrowed(model, frozen).to(memory_format=layout)
                set_quantizing_(net, step >= quant_on)
                gammas, new_opt_w, opt_g = _optimizers(net, cfg)
                _narrow_moments_(opt_w, model, new_opt_w, net, frozen)
                opt_w = new_opt_w

            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                plan = current_plan()
                alive = sum(sum(m) for m in plan.values()) / max(1, sum(len(m) for m in plan.values()))
                record = {"step": step + 1, "loss": loss.item(), "distill": loss_distill.item(),
                          "gan": loss_gan.item(), "d": loss_d.item(), "rho": rho, "alive": alive, "lr": cfg.lr * scale,
                          "seconds": time.perf_counter() - t0}
                if cost_model and gammas:
                    record["cost_fraction"] = cost_fraction()
                history.append(record)
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(distill=f"{record['distill']:.4f}", gan=f"{record['gan']:.3f}",
                                alive=f"{alive:.1%}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                save(step + 1)
            if on_step:
                on_step(step + 1, net, current_plan())
    if net is not model:
        widen_student_(model, net, frozen)
    set_quantizing_(model, True)  # a narrowed `net` may have switched its quantizers on after the freeze
    model.to("cpu", memory_format=torch.contiguous_format)
    model.eval()
    return history
