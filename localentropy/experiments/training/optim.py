"""Optimizers of ``localentropy train`` by name, the counted SAM step, and per-epoch learning-rate schedules.

Every optimizer here is stepped as ``optimizer.step(closure)`` where ``closure()`` reads a fresh minibatch,
runs forward and backward and returns the loss, and ``closure(reuse=True)`` does the same on the minibatch of
the previous call (SAM's second pass). ``passes_per_step`` says how many forward-backward passes one step makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam, Optimizer

from localentropy._checks import check_int, check_range
from localentropy.entropy.optim import LPFSGD, DivergenceError, EntropyAdam, EntropySGD, Parle
from localentropy.entropy.presets import parle_preset
from localentropy.experiments.core.config import constructor_problem

OPTIMIZER_KINDS = ("sgd", "adam", "entropy-sgd", "entropy-adam", "lpf-sgd", "sam", "parle")
ENTROPY_KINDS = ("entropy-sgd", "entropy-adam")
SAMPLER_KINDS = (*ENTROPY_KINDS, "parle")  # the kinds whose inner loop is a sampler (sampler, sampler_options)
PARLE_RHO = 0.01  # rho when a parle optimizer's options leave it out: the default of the authors' code
SCHEDULE_KINDS = ("constant", "step", "multistep", "cosine")
SAM_EXTRA = "train"
_SGD = {"momentum", "dampening", "weight_decay", "nesterov"}
_ADAM = {"betas", "eps", "weight_decay", "amsgrad"}
_ENTROPY = {"gamma", "scoping", "inner_steps", "temperature", "averaging", "weight_decay", "outer_scale", "coupling",
            "warm_start", "noise_stream"}
OPTIONS: dict[str, set[str]] = {
    "sgd": _SGD,
    "adam": _ADAM,
    "entropy-sgd": _ENTROPY | {"momentum", "nesterov"},
    "entropy-adam": _ENTROPY | {"betas", "eps", "amsgrad"},
    "lpf-sgd": {"sigma", "n_samples", "momentum", "nesterov", "weight_decay", "sigma_schedule", "sigma_growth"}
    | {"total_steps"},
    "sam": {"rho", "adaptive", "base"} | _SGD | _ADAM,
    "parle": (_ENTROPY - {"temperature"}) | {"momentum", "nesterov", "rho", "gamma_max", "rho_max", "inner_noise",
                                             "rho_scale", "reduction"},
}
SAM_BASES = {"sgd": (SGD, _SGD), "adam": (Adam, _ADAM)}


@dataclass
class ScheduleConfig:
    """lr(e) for the e-th epoch (0-based) of an optimizer's run, set before the epoch starts."""

    kind: str = "constant"
    step_size: int = 1  # step: multiply by gamma every step_size epochs
    gamma: float = 0.1
    milestones: list[int] = field(default_factory=list)  # multistep: multiply by gamma at each
    min_lr: float = 0.0  # cosine: the floor


@dataclass
class OptimizerConfig:
    label: str
    kind: str
    lr: float
    options: dict[str, Any] = field(default_factory=dict)
    sampler: str | None = None
    sampler_options: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None
    schedule: ScheduleConfig | None = None  # None: the config's top-level schedule


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


def _range(name: str, value: Any, low: float | None, high: float | None = None, **open_ends: bool) -> float:
    try:
        return check_range(name, value, low, high, **open_ends)
    except OverflowError:  # an integer beyond the float range
        raise ValueError(f"{name} must be finite, got an integer of {len(str(abs(value)))} digits") from None


def check_options(options: dict[str, Any]) -> None:
    """Check the values of the common optimizer options, naming the field, the value and what is expected.

    torch's SGD and Adam check few of them (``momentum = nan`` or ``2`` and ``eps = inf`` pass, ``betas = 0.9``
    fails with a TypeError naming neither): every optimizer built here is checked the same way first.
    """
    for key, value in options.items():
        if key in ("nesterov", "amsgrad", "adaptive"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r} ({type(value).__name__})")
        elif key == "momentum":
            _range(key, value, 0.0, 1.0, high_open=True)
        elif key == "dampening":
            _range(key, value, 0.0, 1.0)
        elif key == "weight_decay":
            _range(key, value, 0.0)
        elif key == "eps":
            _range(key, value, 0.0, low_open=True)
        elif key == "betas":
            if not isinstance(value, list | tuple) or len(value) != 2:
                raise ValueError(f"betas must be a list of two numbers in [0, 1), got {value!r}")
            for i, beta in enumerate(value):
                _range(f"betas[{i}]", beta, 0.0, 1.0, high_open=True)
        elif key == "total_steps" and value is not None:
            check_int(key, value, 1)


def _tuple_betas(options: dict[str, Any]) -> dict[str, Any]:
    if "betas" in options and isinstance(options["betas"], list):
        return {**options, "betas": tuple(options["betas"])}
    return options


class SAMStep:
    """SAM (Foret et al. 2021) from ``pytorch-optimizer``, stepped with one closure and counted: 2 passes per step.

    ``step(closure)`` calls ``closure()`` (a fresh minibatch, the gradient at w), then lets SAM move to
    w + rho g / ||g||, calls ``closure(reuse=True)`` (the same minibatch, the gradient there), move back and take
    the base optimizer's step at w. A non-finite loss or gradient raises :class:`DivergenceError` before the
    parameters move.
    """

    passes_per_step = 2

    def __init__(self, params: Iterable[Tensor], lr: float, rho: float = 0.05, adaptive: bool = False,
                 base: str = "sgd", **base_options: Any) -> None:  # fmt: skip
        try:
            from pytorch_optimizer import SAM
        except ImportError as exc:
            raise ImportError(
                f"the 'sam' optimizer needs the pytorch-optimizer package: pip install 'localentropy[{SAM_EXTRA}]' "
                "(or pip install pytorch-optimizer)"
            ) from exc
        if base not in SAM_BASES:
            raise ValueError(f"base must be one of {sorted(SAM_BASES)}, got {base!r}")
        cls, allowed = SAM_BASES[base]
        unknown = sorted(set(base_options) - allowed)
        if unknown:
            raise ValueError(f"base {base!r} takes options {sorted(allowed)}; unknown: {unknown}")
        _range("lr", lr, 0.0, low_open=True)
        _range("rho", rho, 0.0, low_open=True)
        check_options({"adaptive": adaptive, **base_options})
        self.sam = SAM(list(params), cls, rho=float(rho), adaptive=bool(adaptive), lr=lr,
                       **_tuple_betas(base_options))  # fmt: skip
        self.steps = 0
        self.grad_evals = 0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.sam.param_groups

    def _params(self) -> list[Tensor]:
        return [p for g in self.sam.param_groups for p in g["params"]]

    def _check(self, loss: Tensor, which: str) -> None:
        grads = [p.grad for p in self._params() if p.grad is not None]
        finite = bool(torch.isfinite(loss).all()) and all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            raise DivergenceError(f"SAM: a non-finite loss or gradient at {which} of step {self.steps}")

    def step(self, closure: Callable[..., Tensor]) -> Tensor:
        loss = closure()
        self.grad_evals += 1
        self._check(loss, "w")
        second: list[Tensor] = []

        def again() -> Tensor:
            second.append(closure(reuse=True))
            return second[-1]

        params = self._params()
        saved = [p.detach().clone() for p in params]
        self.sam.step(again)
        self.grad_evals += 1
        if not bool(torch.isfinite(second[0]).all()) or not all(bool(torch.isfinite(p).all()) for p in params):
            with torch.no_grad():
                for p, s in zip(params, saved, strict=True):
                    p.copy_(s)
            raise DivergenceError(f"SAM: a non-finite loss or update at w + eps of step {self.steps}; "
                                  "the parameters were restored")  # fmt: skip
        self.steps += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"sam": self.sam.state_dict(), "steps": self.steps, "grad_evals": self.grad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sam.load_state_dict(state["sam"])
        self.steps, self.grad_evals = int(state["steps"]), int(state["grad_evals"])


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


def build_optimizer(spec: OptimizerConfig, params: Iterable[Tensor], total_steps: int | None = None,
                    batches_per_epoch: int | None = None) -> Any:  # fmt: skip
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
        return cls(params, lr=spec.lr, sampler=spec.sampler, sampler_options=sampler_options, preset=spec.preset,
                   **options)  # fmt: skip
    if spec.kind == "parle":
        if spec.preset is not None and parle_preset(spec.preset).needs_batches_per_epoch:
            options["batches_per_epoch"] = max(int(batches_per_epoch or 1), 1)
        options.setdefault("rho", PARLE_RHO)
        return Parle(params, lr=spec.lr, sampler=spec.sampler, sampler_options=dict(spec.sampler_options),
                     preset=spec.preset, **options)  # fmt: skip
    raise ValueError(f"unknown optimizer kind {spec.kind!r}; available: {', '.join(OPTIMIZER_KINDS)}")


def check_optimizer(spec: OptimizerConfig, path: str | None = None) -> str | None:
    """Build ``spec`` on a dummy parameter: None if it works, else the reason (for the config's problem list).

    With ``path`` (``"optimizers[2]"``), the reason comes under the config field that the constructor's error
    names: ``optimizers[2].sampler_options.step_size: step_size must be > 0, got -0.1``.
    """
    probe = torch.nn.Parameter(torch.zeros(2))
    try:
        build_optimizer(spec, [probe], total_steps=1)
    except (ValueError, TypeError, ArithmeticError, ImportError) as exc:
        if isinstance(exc, ArithmeticError):  # an integer beyond the float range: say where it was
            reason = f"{exc} (options {spec.options!r:.80}, sampler_options {spec.sampler_options!r:.80})"
            return reason if path is None else f"{path}: {reason}"
        if path is None:
            return str(exc)
        # a name given in both tables: the sampler's own errors are the likelier (EntropySGD checks its options first)
        fields = {"lr": f"{path}.lr"} | {k: f"{path}.options.{k}" for k in spec.options}
        fields |= {k: f"{path}.sampler_options.{k}" for k in spec.sampler_options if k not in spec.options}
        return constructor_problem(path, exc, fields)
    return None


def set_learning_rate(optimizer: Any, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def unwrap(optimizer: Any) -> Optimizer:
    return optimizer.sam if isinstance(optimizer, SAMStep) else optimizer
