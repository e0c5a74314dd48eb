"""SAM (Foret et al. 2021) as an optimizer of ``localentropy train`` (one closure per step, its passes counted),
and the checks of the torch optimizers' options that every optimizer built here passes first."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam

from localentropy._checks import check_int, check_range
from localentropy.entropy.optim import DivergenceError

SAM_EXTRA = "train"
_SGD = {"momentum", "dampening", "weight_decay", "nesterov"}
_ADAM = {"betas", "eps", "weight_decay", "amsgrad"}
SAM_BASES = {"sgd": (SGD, _SGD), "adam": (Adam, _ADAM)}


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

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        rho: float = 0.05,
        adaptive: bool = False,
        base: str = "sgd",
        **base_options: Any,
    ) -> None:
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
        self.sam = SAM(list(params), cls, rho=float(rho), adaptive=bool(adaptive), lr=lr, **_tuple_betas(base_options))
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
            raise DivergenceError(
                f"SAM: a non-finite loss or update at w + eps of step {self.steps}; the parameters were restored"
            )
        self.steps += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {"sam": self.sam.state_dict(), "steps": self.steps, "grad_evals": self.grad_evals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sam.load_state_dict(state["sam"])
        self.steps, self.grad_evals = int(state["steps"]), int(state["grad_evals"])
