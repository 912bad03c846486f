"""GS and the paper's baselines, each a few calls to the same training loop with terms switched on or off.

| method          | initialisation                          | stages                            | target         |
|-----------------|-----------------------------------------|-----------------------------------|----------------|
| gs              | the teacher's weights, gated            | prune + distil + quantize at once | teacher output |
| gs-latency      | as gs, its budget a share of latency    | prune + distil + quantize at once | teacher output |
| gs-size         | as gs, its budget a share of size       | prune + distil + quantize at once | teacher output |
| distill         | uniformly thinner, random init          | distil                            | teacher output |
| prune           | the teacher's weights, gated            | prune                             | cartoon target |
| quant           | the teacher's weights                   | quantize (QAT)                    | teacher output |
| stacked         | the teacher's weights, gated            | prune, distil-finetune, QAT       | teacher output |
| stacked-scratch | thinner (half the MAC cut), random init | distil, prune, QAT                | teacher output |

Every method gets the same data and the same number of steps (the stacked ones split them in three). `stacked` is
GS's three techniques one after another from GS's starting point: the gated teacher pruned to the budget in full
precision, the extracted network distilled without gates, then quantization-aware finetuning. `stacked-scratch`
(the grid's first stacked baseline) starts from random weights, so part of its gap to GS is "scratch against
pretrained". `sparsity` is the fraction of the teacher's MACs to remove (budget mode; `train.budget_metric` may
price it in size or latency instead). `gs-latency` is GS with a latency budget: the fraction of the teacher's
onnxruntime latency to remove, priced with the per-layer table of `gs_core.deploy.latency_table`. `gs-size` is GS
with a size budget: the fraction of the fp32 teacher's size in bits to remove, the student priced at its own bit
widths (0.98 at 8 bits: a 50x smaller file). `rho` instead gives the paper's fixed-rho mode. A quantization
delay (`TrainConfig.quant_delay`) acts on the GS methods only (`delays_quantization`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from gs_core.deploy.latency_table import latency_table
from gs_core.eval.cost import count_macs
from gs_core.models import Generator, create_generator
from gs_core.slim.extract import extract
from gs_core.slim.gates import gates_of
from gs_core.slim.plan import (CostModel, channel_multiples, dense_plan, describe_widths, layer_costs,
                               parse_channel_multiple, plan_cost, plan_from_gates, round_plan)
from gs_core.slim.quant import FULL_PRECISION, calibrate_activations, layer_bits
from gs_core.slim.student import make_student
from gs_core.slim.train import StepHook, TrainConfig, fit

METHODS = ("gs", "gs-latency", "gs-size", "distill", "prune", "quant", "stacked", "stacked-scratch")
COST_SIZE = (256, 256)  # budgets are priced at this resolution (MAC ratios do not depend on it)
BUDGET_OF = {"gs-latency": "latency", "gs-size": "size_bits"}  # GS variants priced other than in MACs
GS_METHODS = ("gs", *BUDGET_OF)
LATENCY_THREADS = 2  # latency budgets are priced for deployment with this many onnxruntime threads


@dataclass
class SlimConfig:
    method: str = "gs"
    bits: int | dict = 8  # one width for every conv, or {conv name: bits} (mixed precision)
    sparsity: float = 0.5  # fraction of the teacher's MACs to remove (budget mode)
    rho: float | None = None  # fixed-rho mode: L1 weight; then `sparsity` is ignored
    per_channel: bool = True
    # Kept widths of each pruned group: a multiple of this many channels (or the whole layer), "auto" the CPU's
    # kernel block on groups wide enough for it to pay (gs_core.slim.plan.channel_multiples), 1 any width.
    channel_multiple: str = "auto"
    batch_size: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity is a fraction of MACs to remove, in [0, 1); got {self.sparsity}")
        parse_channel_multiple(self.channel_multiple)


def delays_quantization(method: str, bits: int | dict | str) -> bool:
    """Whether `TrainConfig.quant_delay` acts on this method: on GS students below 32 bits, which quantize while
    they are pruned and distilled. `quant` and stacked's last stage quantize a network already trained in full
    precision, and the others do not quantize."""
    return method in GS_METHODS and bits != FULL_PRECISION


def batches_from(inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int):
    """Step s -> a batch drawn by a generator seeded with (seed, s): resumable and reproducible."""
    def batches(step: int):
        index = torch.from_numpy(np.random.default_rng([seed, step]).integers(0, len(inputs), batch_size))
        index = index.to(inputs.device)
        return inputs[index], targets[index]
    return batches


def drawn_rows(n: int, batch_size: int, seed: int, steps: int) -> set[int]:
    """Every row that `batches_from(inputs of length n, ...)` draws in `steps` steps (every method's stages use
    steps below that and the same seed): the only teacher outputs such a run reads."""
    return {int(i) for step in range(steps) for i in np.random.default_rng([seed, step]).integers(0, n, batch_size)}


def thinner(teacher: Generator, mac_fraction: float) -> Generator:
    """The same architecture with every width scaled by one factor (ngf), nearest to `mac_fraction` MACs.
    Candidates are counted on the meta device (shapes only, no arithmetic)."""
    with torch.device("meta"):
        base = count_macs(create_generator(teacher.arch, **teacher.config()), (64, 64))
        candidates = {}
        for ngf in range(1, teacher.ngf + 1):
            model = create_generator(teacher.arch, **{**teacher.config(), "ngf": ngf, "widths": None})
            candidates[ngf] = abs(count_macs(model, (64, 64)) / base - mac_fraction)
    best = min(candidates, key=candidates.get)
    return create_generator(teacher.arch, **{**teacher.config(), "ngf": best, "widths": None})


def _train(model: Generator, inputs, targets, cfg: SlimConfig, run_dir: Path, *, bits, gated: bool,
           budget: float | None, teacher: Generator, steps: int, desc: str, progress: bool,
           device: torch.device, on_step: StepHook | None = None):
    student = make_student(model, bits, cfg.per_channel, gated=gated).to(device)
    calibrate_activations(student, inputs[:16], cfg.train.calibration_quantile)
    prune = gated and (budget is not None or cfg.rho)
    train_cfg = replace(cfg.train, steps=steps, budget=budget if prune and cfg.rho is None else None,
                        rho=(cfg.rho or 0.0) if prune else 0.0)
    cost_model = None
    if prune:
        table = (latency_table(teacher, COST_SIZE[0], LATENCY_THREADS, progress=progress)
                 if train_cfg.budget_metric == "latency" else None)
        reference = plan_cost(teacher, dense_plan(teacher), layer_costs(teacher, COST_SIZE), latency=table)
        cost_model = CostModel(layer_costs(model, COST_SIZE), reference, layer_bits(student), table,
                               channel_multiples(student, cfg.channel_multiple, device))
    history = fit(student, batches_from(inputs, targets, cfg.batch_size, cfg.train.seed), train_cfg, run_dir,
                  cost_model=cost_model, progress=progress, desc=desc, device=device, on_step=on_step)
    return student, history


def run_method(teacher: Generator, inputs: torch.Tensor, outputs: torch.Tensor, cfg: SlimConfig,
               run_dir: str | Path, task_targets: torch.Tensor | None = None,
               progress: bool = True, device: torch.device | str = "cpu",
               on_step: StepHook | None = None) -> tuple[Generator, dict]:
    """Train one compressed model on `device`; returns (the deployable slim model on the CPU, card fields
    describing it). The training pairs move to the device once, not batch by batch. `on_step` is `fit`'s hook,
    for the GS methods (one training stage): a job's progress, live view and cancel."""
    run_dir = Path(run_dir)
    device = torch.device(device)
    inputs, outputs = inputs.to(device), outputs.to(device)
    task_targets = None if task_targets is None else task_targets.to(device)
    torch.manual_seed(cfg.train.seed)  # a fresh (thinner) student starts the same whatever ran before it here
    steps = cfg.train.steps
    keep = 1 - cfg.sparsity
    gammas, history = {}, []
    if cfg.method in BUDGET_OF:
        cfg = replace(cfg, train=replace(cfg.train, budget_metric=BUDGET_OF[cfg.method]))
    if not delays_quantization(cfg.method, cfg.bits):
        cfg = replace(cfg, train=replace(cfg.train, quant_delay=0.0))
    if cfg.method in GS_METHODS:
        student, history = _train(teacher, inputs, outputs, cfg, run_dir, bits=cfg.bits, gated=True, budget=keep,
                                  teacher=teacher, steps=steps, desc="gs", progress=progress,
                                  device=device, on_step=on_step)
        gammas = _gammas(student)
        slim = _extract(student, cfg, device)
    elif cfg.method == "prune":
        if task_targets is None:
            raise ValueError("the prune baseline learns from the task targets; this teacher has none")
        student, history = _train(teacher, inputs, task_targets, cfg, run_dir, bits=FULL_PRECISION, gated=True,
                                  budget=keep, teacher=teacher, steps=steps, desc="prune", progress=progress,
                                  device=device)
        gammas = _gammas(student)
        slim = _extract(student, cfg, device)
    elif cfg.method == "quant":
        slim, history = _train(teacher, inputs, outputs, cfg, run_dir, bits=cfg.bits, gated=False, budget=None,
                               teacher=teacher, steps=steps, desc="quant", progress=progress, device=device)
    elif cfg.method == "distill":
        slim, history = _train(thinner(teacher, keep), inputs, outputs, cfg, run_dir, bits=FULL_PRECISION,
                               gated=False, budget=None, teacher=teacher, steps=steps, desc="distill",
                               progress=progress, device=device)
    elif cfg.method == "stacked":  # prune the teacher, distil-finetune the extracted network, then quantize
        third = max(1, steps // 3)
        pruned, h1 = _train(teacher, inputs, outputs, cfg, run_dir / "1-prune", bits=FULL_PRECISION, gated=True,
                            budget=keep, teacher=teacher, steps=third, desc="stacked 1/3 prune", progress=progress,
                            device=device)
        gammas = _gammas(pruned)
        tuned, h2 = _train(_extract(pruned, cfg, device), inputs, outputs, cfg, run_dir / "2-distill",
                           bits=FULL_PRECISION, gated=False, budget=None, teacher=teacher, steps=third,
                           desc="stacked 2/3 distill", progress=progress, device=device)
        slim, h3 = _train(tuned, inputs, outputs, cfg, run_dir / "3-quant", bits=_bits_for(cfg.bits), gated=False,
                          budget=None, teacher=teacher, steps=steps - 2 * third, desc="stacked 3/3 quant",
                          progress=progress, device=device)
        history = _staged(("prune", h1, 0), ("distill", h2, third), ("quant", h3, 2 * third))
    else:  # stacked-scratch: half the MAC reduction by a thinner student, the rest by pruning it, then quantize
        third = max(1, steps // 3)
        thin, h1 = _train(thinner(teacher, math.sqrt(keep)), inputs, outputs, cfg, run_dir / "1-distill",
                          bits=FULL_PRECISION, gated=False, budget=None, teacher=teacher, steps=third,
                          desc="stacked 1/3 distill", progress=progress, device=device)
        pruned, h2 = _train(thin, inputs, outputs, cfg, run_dir / "2-prune", bits=FULL_PRECISION, gated=True,
                            budget=keep, teacher=teacher, steps=third, desc="stacked 2/3 prune", progress=progress,
                            device=device)
        gammas = _gammas(pruned)
        slim, h3 = _train(_extract(pruned, cfg, device), inputs, outputs, cfg, run_dir / "3-quant",
                          bits=_bits_for(cfg.bits), gated=False, budget=None, teacher=teacher,
                          steps=steps - 2 * third, desc="stacked 3/3 quant", progress=progress, device=device)
        history = _staged(("distill", h1, 0), ("prune", h2, third), ("quant", h3, 2 * third))
    card = {
        "method": cfg.method,
        "bits": cfg.bits if isinstance(cfg.bits, int) else "mixed",
        "sparsity_target": cfg.sparsity if cfg.method != "quant" else 0.0,
        "plan": describe_widths(slim, teacher),
        "gammas": gammas,
        "history": history,
        "training": {**asdict(cfg), "train": asdict(cfg.train)},
    }
    return slim.eval(), card


def _extract(student: Generator, cfg: SlimConfig, device: torch.device) -> Generator:
    """The slim model of a trained gated student: its gates' plan with the widths rounded as training rounded
    them (channels kept only for their width have gamma 0 unless fine-tuning revived them)."""
    multiples = channel_multiples(student, cfg.channel_multiple, device)
    return extract(student, round_plan(student, plan_from_gates(student), multiples))


def _staged(*stages: tuple[str, list[dict], int]) -> list[dict]:
    """One history from the stages' (name, history, first step), each record tagged with its stage."""
    return [{**r, "stage": name, "step": r["step"] + offset} for name, history, offset in stages for r in history]


def _bits_for(bits: int | dict) -> int:
    """Stage 3 of a stacked method quantizes a different (narrower) network: only a uniform width carries over."""
    if isinstance(bits, dict):
        raise ValueError("stacked takes one bit width for all layers")
    return bits


def _gammas(student: Generator) -> dict[str, list[float]]:
    return {name: [round(v, 5) for v in gate.gamma.detach().tolist()] for name, gate in gates_of(student).items()}
