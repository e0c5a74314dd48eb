"""Optimizers of ``localentropy train`` by name, the counted SAM step, and per-epoch learning-rate schedules.

Every optimizer here is stepped as ``optimizer.step(closure)`` where ``closure()`` reads a fresh minibatch,
runs forward and backward and returns the loss, and ``closure(reuse=True)`` does the same on the minibatch of
the previous call (SAM's second pass). ``passes_per_step`` says how many forward-backward passes one step makes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

import torch
from pydantic import BeforeValidator, Field, WithJsonSchema
from torch import Tensor
from torch.optim import SGD, Adam, Optimizer

from localentropy.entropy.optim import LPFSGD, EntropyAdam, EntropySGD, Parle
from localentropy.entropy.presets import OPTIMIZER_PRESETS, PARLE_PRESETS, optimizer_preset, parle_preset
from localentropy.experiments.core.config import (
    Check,
    Problem,
    Table,
    as_integer,
    choice,
    fail,
    got,
    integer,
    label_field,
    label_text,
    nonempty_text,
    number,
    table,
)
from localentropy.experiments.core.labels import lying_label
from localentropy.experiments.training.sam import _ADAM, _SGD, SAMStep, _tuple_betas, check_options
from localentropy.samplers import available_samplers

OPTIMIZER_KINDS = ("sgd", "adam", "entropy-sgd", "entropy-adam", "lpf-sgd", "sam", "parle")
ENTROPY_KINDS = ("entropy-sgd", "entropy-adam")
SAMPLER_KINDS = (*ENTROPY_KINDS, "parle")  # the kinds whose inner loop is a sampler (sampler, sampler_options)
# The kinds whose processes hold different weights (replicas): trained on n processes, they are not one process on
# the whole batch. Every other kind under DDP is (the replicas stay equal: tests/entropy/optim/test_distributed.py).
REPLICA_KINDS = ("parle",)
PARLE_RHO = 0.01  # rho when a parle optimizer's options leave it out: the default of the authors' code
SCHEDULE_KINDS = ("constant", "step", "multistep", "cosine")
_ENTROPY = {
    "gamma",
    "scoping",
    "inner_steps",
    "temperature",
    "averaging",
    "weight_decay",
    "outer_scale",
    "coupling",
    "warm_start",
    "noise_stream",
}
OPTIONS: dict[str, set[str]] = {
    "sgd": _SGD,
    "adam": _ADAM,
    "entropy-sgd": _ENTROPY | {"momentum", "nesterov"},
    "entropy-adam": _ENTROPY | {"betas", "eps", "amsgrad"},
    "lpf-sgd": {"sigma", "n_samples", "momentum", "nesterov", "weight_decay", "sigma_schedule", "sigma_growth"}
    | {"total_steps"},
    "sam": {"rho", "adaptive", "base"} | _SGD | _ADAM,
    "parle": (_ENTROPY - {"temperature"})
    | {"momentum", "nesterov", "rho", "gamma_max", "rho_max", "inner_noise", "rho_scale", "reduction"},
}


def _milestones(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ValueError("a non-empty list of increasing epoch numbers")
    problems = []
    for i, m in enumerate(value):
        try:
            as_integer(m, 1)
        except ValueError as exc:
            problems.append(((i,), got(m, str(exc))))
    if problems:
        fail(problems)
    if value != sorted(set(value)):
        raise ValueError("strictly increasing epoch numbers")
    return value


class ScheduleConfig(Table):
    """``[schedule]``: lr(e) for the e-th epoch (0-based) of an optimizer's run, set before the epoch starts."""

    kind: choice(SCHEDULE_KINDS) = Field(
        "constant",
        description="constant; step: x gamma every step_size epochs; multistep: x gamma at each milestone; cosine: "
        "down to min_lr.",
    )
    step_size: integer(1) = Field(1, description="Step: the epochs between decays (required then).")
    gamma: number(0.0, 1.0, low_open=True) = Field(0.1, description="Step, multistep: the decay factor.")
    milestones: Annotated[
        list[int],
        BeforeValidator(Check("a non-empty list of increasing epoch numbers", _milestones)),
        WithJsonSchema({"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1}),
    ] = Field(
        default_factory=list,
        validate_default=False,
        description="Multistep: the epochs at which lr is multiplied by gamma, strictly increasing (required then).",
    )
    min_lr: number(0.0) = Field(0.0, description="Cosine: the final learning rate.")

    def __init__(self, kind: str = "constant", **fields: Any) -> None:
        super().__init__(kind=kind, **fields)

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        own = {"step": {"step_size", "gamma"}, "multistep": {"milestones", "gamma"}, "cosine": {"min_lr"}}
        kind = data.get("kind", "constant")
        return {"kind"} | (own.get(kind, set()) if isinstance(kind, str) else set())

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        kind = data.get("kind")
        needs = {"step": "step_size", "multistep": "milestones"}.get(kind) if isinstance(kind, str) else None
        return [((needs,), "missing (required)")] if needs and needs not in data else []


class OptimizerConfig(Table):
    """``[[optimizers]]``: one optimizer compared; its kind narrows the fields it takes."""

    label: label_text() = label_field()
    kind: choice(OPTIMIZER_KINDS) = Field(description="The optimizer.")
    lr: number(0.0, low_open=True) = Field(description="The (outer) learning rate.")
    options: table() = Field(
        default_factory=dict,
        description="The optimizer's arguments: "
        + "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in OPTIONS.items())
        + " (Entropy-SGD and Parle need gamma).",
    )
    sampler: choice(tuple(available_samplers())) | None = Field(
        None,
        description="entropy-sgd, entropy-adam: the inner sampler (required unless `preset`); parle: the "
        "replicas' inner sampler (default sgld).",
    )
    sampler_options: table() = Field(
        default_factory=dict, description="entropy-sgd, entropy-adam, parle: the sampler's arguments."
    )
    preset: nonempty_text() | None = Field(
        None,
        description="entropy-sgd, entropy-adam: an inner loop as published (one of "
        + ", ".join(map(repr, OPTIMIZER_PRESETS))
        + "), not with sampler; parle: the outer loop of the paper or "
        "the authors' code (one of " + ", ".join(map(repr, PARLE_PRESETS)) + ").",
    )
    schedule: ScheduleConfig | None = Field(
        None, description="This optimizer's own learning-rate schedule (a `[schedule]` table; default: the config's)."
    )

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        kind = data.get("kind")
        sampler_fields = {"sampler", "sampler_options", "preset"}
        own = kind in SAMPLER_KINDS or kind not in OPTIMIZER_KINDS
        return set(cls.keys()) - (set() if own else sampler_fields)

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        kind = data.get("kind")
        options = data.get("options") if isinstance(data.get("options"), dict) else {}
        problems: list[Problem] = []
        if kind in OPTIMIZER_KINDS:
            allowed = OPTIONS[kind]
            problems += [
                (("options", key), f"unknown for {kind!r}; allowed: {', '.join(sorted(allowed))}")
                for key in sorted(set(options) - allowed)
            ]
        if kind in ENTROPY_KINDS:
            if "preset" in data and "sampler" in data:
                problems.append(
                    (("sampler",), got(data["sampler"], "no sampler: a preset runs its own (remove one of the two)"))
                )
            elif "preset" not in data and "sampler" not in data:
                problems.append((("sampler",), "missing (required)"))
            if "gamma" not in options:
                problems.append((("options", "gamma"), "missing (required: the scope of Entropy-SGD)"))
        if kind == "parle" and "gamma" not in options:
            problems.append((("options", "gamma"), "missing (required: the scope of each replica's inner loop)"))
        return problems

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        presets = PARLE_PRESETS if self.kind == "parle" else OPTIMIZER_PRESETS
        if self.preset is not None and self.preset not in presets:
            problems.append((("preset",), got(self.preset, "one of " + ", ".join(map(repr, presets)))))
        if self.label:  # a label may not name an optimizer kind or sampler this optimizer does not run
            used = {self.kind, self.sampler}
            if self.preset in OPTIMIZER_PRESETS and self.kind in ENTROPY_KINDS:
                used.add(optimizer_preset(self.preset).sampler)
            wrapped = self.sampler_options.get("sampler")
            if isinstance(wrapped, dict) and isinstance(wrapped.get("name"), str):
                used.add(wrapped["name"])
            runs = f"{self.kind!r}" + (f" with sampler {self.sampler!r}" if self.sampler else "")
            reason = lying_label(self.label, used, set(OPTIMIZER_KINDS) | set(available_samplers()), runs)
            if reason is not None:
                problems.append((("label",), reason))
        if not problems and not self.precheck(self.model_dump(exclude_unset=True)):
            built = check_optimizer(self)  # the real optimizer, built: a config that validates runs
            problems += [built] if built is not None else []
        return problems


def learning_rate(schedule: ScheduleConfig, base_lr: float, epoch: int, total_epochs: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based) out of ``total_epochs`` (torch's schedulers stepped per epoch)."""
    if schedule.kind == "step":
        return base_lr * schedule.gamma ** (epoch // schedule.step_size)
    if schedule.kind == "multistep":
        return base_lr * schedule.gamma ** sum(1 for m in schedule.milestones if m <= epoch)
    if schedule.kind == "cosine":
        progress = min(epoch, total_epochs) / max(total_epochs, 1)
        return schedule.min_lr + (base_lr - schedule.min_lr) * (1 + math.cos(math.pi * progress)) / 2
    return base_lr


def passes_per_step(optimizer: Any) -> int:
    """Forward-backward passes (closure calls) that one ``step`` makes."""
    if isinstance(optimizer, SAMStep):
        return 2
    if isinstance(optimizer, (EntropySGD, EntropyAdam)):
        return optimizer.inner_steps
    if isinstance(optimizer, LPFSGD):
        return optimizer.n_samples
    return 1


def spec_passes(spec: OptimizerConfig) -> int:
    """``passes_per_step`` of the optimizer ``spec`` describes, known before it is built."""
    if spec.kind == "sam":
        return 2
    if spec.kind in ENTROPY_KINDS:
        return int(spec.options.get("inner_steps", 20))
    if spec.kind == "parle":
        return int(spec.options.get("inner_steps", 25))
    if spec.kind == "lpf-sgd":
        return int(spec.options.get("n_samples", 1))
    return 1


def build_optimizer(
    spec: OptimizerConfig,
    params: Iterable[Tensor],
    total_steps: int | None = None,
    batches_per_epoch: int | None = None,
) -> Any:
    """The optimizer that ``spec`` names, on ``params``; LPF-SGD's cosine sigma schedule gets ``total_steps``.

    Parle's ``preset="authors"`` scopes by 1 + 0.5 / nb per outer step: it gets ``batches_per_epoch`` (nb, one
    replica's minibatches per pass over the data; 1 when not given). Parle runs in the process group torch.distributed
    has initialised, if any (one replica per rank)."""
    check_options(spec.options)
    options = _tuple_betas(dict(spec.options))
    params = list(params)
    if spec.kind == "sgd":
        return SGD(params, lr=spec.lr, **options)
    if spec.kind == "adam":
        return Adam(params, lr=spec.lr, **options)
    if spec.kind == "sam":
        return SAMStep(params, lr=spec.lr, **options)
    if spec.kind == "lpf-sgd":
        if options.get("sigma_schedule") == "cosine" and "total_steps" not in options:
            options["total_steps"] = max(int(total_steps or 1), 1)
        return LPFSGD(params, lr=spec.lr, **options)
    if spec.kind in ENTROPY_KINDS:
        cls = EntropySGD if spec.kind == "entropy-sgd" else EntropyAdam
        sampler_options = dict(spec.sampler_options)
        return cls(
            params, lr=spec.lr, sampler=spec.sampler, sampler_options=sampler_options, preset=spec.preset, **options
        )
    if spec.kind == "parle":
        if spec.preset is not None and parle_preset(spec.preset).needs_batches_per_epoch:
            options["batches_per_epoch"] = max(int(batches_per_epoch or 1), 1)
        options.setdefault("rho", PARLE_RHO)
        return Parle(
            params,
            lr=spec.lr,
            sampler=spec.sampler,
            sampler_options=dict(spec.sampler_options),
            preset=spec.preset,
            **options,
        )
    raise ValueError(f"unknown optimizer kind {spec.kind!r}; available: {', '.join(OPTIMIZER_KINDS)}")


def check_optimizer(spec: OptimizerConfig) -> Problem | None:
    """Build ``spec`` on a dummy parameter: None if it works, else the reason, under the field of the optimizer's
    table that the constructor's error names (``sampler_options.step_size: step_size must be > 0, got -0.1``)."""
    probe = torch.nn.Parameter(torch.zeros(2))
    try:
        build_optimizer(spec, [probe], total_steps=1)
    except (ValueError, TypeError, ArithmeticError, ImportError) as exc:
        if isinstance(exc, ArithmeticError):  # an integer beyond the float range: say where it was
            return (), f"{exc} (options {spec.options!r:.80}, sampler_options {spec.sampler_options!r:.80})"
        # a name given in both tables: the sampler's own errors are the likelier (EntropySGD checks its options first)
        fields: dict[str, tuple[str, ...]] = {"lr": ("lr",)} | {k: ("options", k) for k in spec.options}
        fields |= {k: ("sampler_options", k) for k in spec.sampler_options if k not in spec.options}
        first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", str(exc))
        return fields.get(first.group(0), ()) if first else (), str(exc)
    return None


def set_learning_rate(optimizer: Any, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def unwrap(optimizer: Any) -> Optimizer:
    return optimizer.sam if isinstance(optimizer, SAMStep) else optimizer
