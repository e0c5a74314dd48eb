"""LPF-SGD (Bisla et al., AISTATS 2022): SGD on the gradient averaged over random weight perturbations."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD

from localentropy._checks import check_choice, check_int, check_nonnegative, check_range
from localentropy.entropy.optim.base import Closure, DirectionOptimizer, DivergenceError, check_finite_loss

SIGMA_SCHEDULES = ("constant", "cosine")


def filter_norms(param: Tensor) -> Tensor:
    """||row|| per output filter, broadcastable to ``param``; a 1-D tensor (bias) uses its whole norm."""
    if param.ndim <= 1:
        return param.norm().reshape([1] * param.ndim)
    return param.reshape(param.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (param.ndim - 1)))


class LPFSGD(DirectionOptimizer):
    r"""Low-pass-filter SGD: a direct (first-order) Gaussian smoothing of the loss, scaled per filter.

    One ``step(closure)`` calls the closure ``n_samples`` (M) times. Before each call every weight tensor W
    is perturbed by noise of standard deviation sigma_t ||W_i|| per output filter i (a bias by
    sigma_t ||b||); the gradient there is accumulated and the noise removed. The averaged gradient goes to
    SGD (``momentum``, default 0.9, ``nesterov``, ``weight_decay``). The noise scale is ``sigma`` (Bisla et
    al. call it gamma: here gamma is Entropy-SGD's scope); with ``sigma_schedule="cosine"`` it rises as
    sigma_t = sigma (1 + (growth - 1)(1 - cos(pi t / total_steps)) / 2) (the paper: sigma = 5e-4,
    growth = 15). ``step`` returns the loss of the first call, taken at perturbed weights. Non-finite losses
    or gradients raise :class:`DivergenceError` once per step. x is kept and copied back after every sample,
    so on any exception (divergence, KeyboardInterrupt, an error in the closure) the parameters are x bit for
    bit. A parameter with no gradient in any sample is skipped, as torch's optimizers skip it.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        *,
        sigma: float,
        n_samples: int = 1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        sigma_schedule: str = "constant",
        sigma_growth: float = 15.0,
        total_steps: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        lr = check_nonnegative("lr", lr)
        defaults = {"lr": lr, "sigma": check_nonnegative("sigma", sigma)}
        self.n_samples = check_int("n_samples", n_samples, 1)
        self.sigma_schedule = check_choice("sigma_schedule", sigma_schedule, SIGMA_SCHEDULES)
        self.sigma_growth = check_range("sigma_growth", sigma_growth, 1.0)
        if self.sigma_schedule == "cosine":
            if total_steps is None:
                raise ValueError("sigma_schedule='cosine' needs total_steps, the number of optimizer steps")
            total_steps = check_int("total_steps", total_steps, 1)
        self.total_steps = total_steps
        base_options = {
            "lr": lr,
            "momentum": check_range("momentum", momentum, 0.0, 1.0, high_open=True),
            "nesterov": bool(nesterov),
            "weight_decay": check_nonnegative("weight_decay", weight_decay),
        }
        super().__init__(params, defaults, SGD, base_options, generator)

    def current_sigmas(self) -> list[float]:
        """sigma_t of each parameter group for the next step."""
        factor = 1.0
        if self.sigma_schedule == "cosine":
            assert self.total_steps is not None
            progress = min(self.outer_steps, self.total_steps) / self.total_steps
            factor = 1.0 + (self.sigma_growth - 1.0) * (1.0 - math.cos(math.pi * progress)) / 2.0
        return [group["sigma"] * factor for group in self.param_groups]

    def _direction(self, closure: Closure) -> tuple[Any, int, list[Tensor]]:
        sigmas = dict(zip(map(id, self.param_groups), self.current_sigmas(), strict=True))
        groups = [(ps, sigmas[id(g)]) for g, ps in self._trainable()]
        # x is kept, and put back exactly after each sample ((x + n) - n would differ from x by rounding)
        anchors = [self._buffers(params, "anchor") for params, _ in groups]
        for (params, _), anchor in zip(groups, anchors, strict=True):
            torch._foreach_copy_(anchor, params)
        try:
            return self._average_gradient(closure, groups, anchors)
        finally:  # x again, whether the samples completed, diverged or were interrupted
            for (params, _), anchor in zip(groups, anchors, strict=True):
                torch._foreach_copy_(params, anchor)

    def _average_gradient(self, closure: Closure, groups: list, anchors: list[list[Tensor]]) -> tuple[Any, int, list]:
        trainable = [p for params, _ in groups for p in params]
        nonfinite = torch.zeros((), dtype=torch.bool, device=trainable[0].device)
        accumulated = [self._buffers(params, "accumulated") for params, _ in groups]
        noises = [self._buffers(params, "noise") for params, _ in groups]
        for total in accumulated:
            torch._foreach_zero_(total)
        reached: set[int] = set()  # the parameters that had a gradient in some sample (torch skips the others)
        generator = self.generator
        first_loss = None
        for k in range(self.n_samples):
            for (params, sigma), noise in zip(groups, noises, strict=True):
                for p, n in zip(params, noise, strict=True):
                    n.normal_(generator=generator)
                    n.mul_(filter_norms(p) * sigma)
                torch._foreach_add_(params, noise)
            loss, hits = self._call_closure(closure, trainable, track=True)
            reached |= {id(p) for p, hit in zip(trainable, hits, strict=True) if hit}
            if k == 0:
                first_loss = loss
            check_finite_loss(nonfinite, loss)
            for (params, _), anchor, total in zip(groups, anchors, accumulated, strict=True):
                torch._foreach_copy_(params, anchor)
                for p, t in zip(params, total, strict=True):
                    if id(p) in reached and p.grad is not None:
                        t.add_(p.grad)
            if not reached:
                raise self._no_gradient_error()
        for total in accumulated:
            torch.logical_or(nonfinite, ~torch.isfinite(torch.stack(torch._foreach_norm(total))).all(), out=nonfinite)
        if self._check_step(nonfinite, first_loss):
            raise DivergenceError(
                f"LPFSGD: a non-finite loss or gradient at step {self.outer_steps}; the parameters are unchanged. "
                "Try a smaller lr or sigma. If the closure scales its loss for a torch.amp.GradScaler, step with "
                "scaler.step(optimizer, closure): optimizer.step(closure) leaves the gradients multiplied by the scale."
            )
        stepped = []
        for (params, _), total in zip(groups, accumulated, strict=True):
            torch._foreach_mul_(total, 1.0 / self.n_samples)
            for p, t in zip(params, total, strict=True):
                if id(p) in reached:
                    p.grad = t.clone() if p.grad is None else p.grad.copy_(t)
                    stepped.append(p)
                else:
                    p.grad = None
        return first_loss, self.n_samples, stepped
