"""Estimators of the local-entropy gradient (any sampler) and of the Gaussian-smoothed gradient.

Both follow one protocol, :class:`Estimator`: ``estimate(x, n_chains=1, generator=None)`` returns an
:class:`EstimateResult` with the same cost accounting, so that they can be compared per gradient evaluation
against the exact values that the test problems provide.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from localentropy._checks import check_choice, check_int, check_positive, check_range
from localentropy.entropy.presets import estimator_preset
from localentropy.samplers import Sampler, SamplerDivergenceError, make_sampler
from localentropy.samplers.divergence import (
    DIVERGENCE_POLICIES,
    divergence_message,
    first_nonfinite_index,
    nonfinite_chains,
)

GradFn = Callable[[Tensor], Tensor]


@dataclass
class EstimateResult:
    """One estimate and what it cost.

    grad: the estimate, shaped like x. chain_grads: (n_chains, ...) one estimate per independent chain
    (or per sample, for direct smoothing); ``grad`` is their mean. draws: (n_chains, n_draws, ...) the
    points the estimate was built from (None when the estimator was asked not to keep them).
    grad_evals: oracle calls summed over chains. seconds: wall-clock time of the call. n_diverged: chains that
    became NaN or infinite and were dropped (``on_divergence="drop"``; chain_grads and draws hold the others).
    """

    grad: Tensor
    chain_grads: Tensor
    draws: Tensor | None
    grad_evals: int
    seconds: float
    n_diverged: int = 0


@runtime_checkable
class Estimator(Protocol):
    """What every gradient estimator offers: ``n_chains`` independent repetitions around x, one generator."""

    def estimate(self, x: Tensor, n_chains: int = 1, generator: torch.Generator | None = None) -> EstimateResult:
        """The estimate at x from ``n_chains`` independent chains (or blocks of samples)."""
        ...


def _check_grad_shape(grad: Tensor, points: Tensor) -> Tensor:
    if not isinstance(grad, Tensor) or grad.shape != points.shape:
        got = type(grad).__name__ if not isinstance(grad, Tensor) else tuple(grad.shape)
        raise ValueError(f"grad_fn must return a tensor shaped like its input {tuple(points.shape)}, got {got}")
    return grad


def _check_point(x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError("x must be a tensor with at least one dimension (a single point; chains are added in front)")
    if not torch.is_floating_point(x):
        raise ValueError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    return x


class LocalEntropyEstimator:
    r"""Estimate g(x) = gamma (x - <x'>) by running a sampler on U(x') = f(x') + gamma/2 ||x' - x||^2.

    ``grad_fn`` maps an (n_chains, ...) tensor of points to grad f at each. The chains start at x (or, with
    ``warm_start``, where the previous call left them, sampler state included) and take ``n_steps`` steps;
    the first ``burn_in`` iterates are discarded. <x'> is estimated per chain by mu:
    ``averaging="uniform"`` is the plain mean of the kept iterates; a float alpha in (0, 1] is the
    exponential average mu <- (1 - alpha) mu + alpha x' over the kept iterates with mu starting at x
    (Algorithm 1 of the paper: alpha = 0.75; the authors' code: alpha = 0.25). Each chain yields
    gamma (x - mu); ``grad`` is their mean over chains.

    Temperature rule: ``temperature``, when given, defines the target exp(-U / T) and replaces the sampler's
    own (the sampler is a template whose other hyperparameters stay); when omitted, the sampler's
    temperature is used. Cost: n_chains * n_steps gradient evaluations per call.

    A chain that becomes NaN or infinite raises :class:`SamplerDivergenceError` (sampler, step size, number of
    chains; checked once per call, after the last step), or with ``on_divergence="drop"`` is left out of the
    estimate and counted in ``EstimateResult.n_diverged`` (all chains diverged still raises). A sampler that
    adapts (pSGLD with ``freeze_after``) needs ``burn_in >= sampler.adaptation_steps`` unless ``warm_start``
    (then the adaptation runs over the first calls and the kept state is reused).
    """

    def __init__(
        self,
        grad_fn: GradFn,
        gamma: float,
        sampler: Sampler,
        n_steps: int,
        *,
        temperature: float | None = None,
        burn_in: int = 0,
        averaging: str | float = "uniform",
        warm_start: bool = False,
        keep_draws: bool = True,
        on_divergence: str = "raise",
    ) -> None:
        if not callable(grad_fn):
            raise TypeError("grad_fn must be callable: (n_chains, ...) points -> their gradients")
        if not isinstance(sampler, Sampler):
            raise TypeError(f"sampler must be a localentropy Sampler (see make_sampler), got {type(sampler).__name__}")
        self.grad_fn = grad_fn
        self.gamma = check_positive("gamma", gamma)
        self.n_steps = check_int("n_steps", n_steps, 1)
        self.burn_in = check_int("burn_in", burn_in, 0)
        if self.burn_in >= self.n_steps:
            raise ValueError(f"burn_in must be < n_steps ({self.n_steps}), got {self.burn_in}")
        if isinstance(averaging, str):
            self.averaging: str | float = check_choice("averaging", averaging, ("uniform",))
        else:
            self.averaging = check_range("averaging", averaging, 0.0, 1.0, low_open=True)
        self.sampler = sampler if temperature is None else sampler.replace(temperature=temperature)
        self.temperature = self.sampler.temperature
        self.warm_start = bool(warm_start)
        self.on_divergence = check_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES)
        adaptation = getattr(self.sampler, "adaptation_steps", 0)
        if not self.warm_start and self.burn_in < adaptation:
            raise ValueError(
                f"burn_in must be >= {adaptation}: {type(self.sampler).__name__} adapts for its first {adaptation} "
                f"steps (freeze_after) and iterates taken while it adapts are burn-in; got burn_in={self.burn_in}"
            )
        self.keep_draws = bool(keep_draws)
        self._state: Any = None

    @classmethod
    def from_preset(
        cls,
        preset: str,
        grad_fn: GradFn,
        gamma: float,
        *,
        step_size: float,
        noise_scale: float,
        n_steps: int,
        **options: Any,
    ) -> LocalEntropyEstimator:
        """The inner loop as the paper's Algorithm 1 (``"paper"``) or the authors' code without its momentum
        (``"authors-sgld"``) writes it.

        Both run SGLD with step size eta' and noise scale eps; they differ in the temperature that eps
        stands for and in the averaging weight (see :mod:`localentropy.entropy.presets`).
        """
        fixed = sorted({"temperature", "averaging"} & set(options))
        if fixed:
            raise ValueError(
                f"preset {preset!r} sets {' and '.join(fixed)} from noise_scale; build the estimator directly to "
                "choose them"
            )
        convention = estimator_preset(preset)
        sampler = make_sampler(convention.sampler, step_size=step_size, temperature=convention.temperature(noise_scale))
        return cls(grad_fn, gamma, sampler, n_steps, averaging=convention.averaging, **options)

    def reset(self) -> None:
        """Forget the chains kept for a warm start."""
        self._state = None

    def _initial_state(self, x: Tensor, n_chains: int) -> Any:
        state = self._state
        if self.warm_start and state is not None:
            position = state.position
            if position.shape == (n_chains, *x.shape) and position.dtype == x.dtype:
                return state
        return self.sampler.init(x.unsqueeze(0).repeat(n_chains, *([1] * x.ndim)))

    def estimate(self, x: Tensor, n_chains: int = 1, generator: torch.Generator | None = None) -> EstimateResult:
        """Run ``n_chains`` chains around x and return the estimate of g(x)."""
        # detached: the chains are updated in place, so an x that requires grad (a parameter) would make autograd
        # record every step, and with warm_start keep growing that graph from call to call
        x = _check_point(x).detach()
        n_chains = check_int("n_chains", n_chains, 1)
        start = time.perf_counter()
        state = self._initial_state(x, n_chains)
        n_draws = self.n_steps - self.burn_in
        draws = x.new_empty((n_chains, n_draws, *x.shape)) if self.keep_draws else None
        mu = torch.zeros_like(state.position) if self.averaging == "uniform" else x.expand_as(state.position).clone()
        coupled = torch.empty_like(state.position)  # grad U, rewritten every step: no allocation in the loop
        for k in range(self.n_steps):
            position = state.position
            grad = _check_grad_shape(self.grad_fn(position), position)
            if grad.requires_grad:  # an autograd grad_fn: the chains are never differentiated through
                grad = grad.detach()
            if grad.dtype == coupled.dtype and grad.device == coupled.device:
                # grad + gamma (position - x): the same operations in the same order (the same numbers), written
                # into ``coupled``, not into grad, which grad_fn may still hold (a cached tensor, the position itself)
                torch.sub(position, x, out=coupled)
                grad = coupled.mul_(self.gamma).add_(grad)
            else:  # type promotion: leave it to torch
                grad = grad + self.gamma * (position - x)
            state = self.sampler.step(state, grad, generator)
            if k < self.burn_in:
                continue
            if self.averaging == "uniform":
                mu.add_(state.position)
            else:
                mu.lerp_(state.position, self.averaging)
            if draws is not None:
                draws[:, k - self.burn_in] = state.position
        if self.averaging == "uniform":
            mu.div_(n_draws)
        chain_grads = self.gamma * (x - mu)
        # the one host synchronisation of the check; a non-finite chain stays so, so mu and the end point suffice
        diverged = nonfinite_chains(chain_grads) | nonfinite_chains(state.position)
        n_diverged = int(diverged.sum())
        if n_diverged and (self.on_divergence == "raise" or n_diverged == n_chains):
            self._state = None
            first_step = None
            if draws is not None:
                index = first_nonfinite_index(draws)
                if bool((index >= 0).any()):
                    first_step = self.burn_in + int(index[index >= 0].min()) + 1
            where = (
                f"by step {first_step} of the {self.n_steps} steps of an estimate"
                if first_step is not None
                else f"within the {self.n_steps} steps of an estimate"
            )
            message = divergence_message(self.sampler, n_diverged, n_chains, where)
            raise SamplerDivergenceError(message, diverged, first_step)
        self._state = state if self.warm_start else None
        if n_diverged:
            chain_grads = chain_grads[~diverged]
            draws = None if draws is None else draws[~diverged]
        return EstimateResult(
            grad=chain_grads.mean(0),
            chain_grads=chain_grads,
            draws=draws,
            # exact samplers (MALA) also evaluate U and its gradient at each proposal
            grad_evals=n_chains * self.n_steps * self.sampler.gradients_per_step,
            seconds=time.perf_counter() - start,
            n_diverged=n_diverged,
        )

    def __repr__(self) -> str:
        return (
            f"LocalEntropyEstimator(gamma={self.gamma}, sampler={self.sampler!r}, n_steps={self.n_steps}, "
            f"burn_in={self.burn_in}, averaging={self.averaging!r}, warm_start={self.warm_start})"
        )


class GaussianSmoothingEstimator:
    r"""Direct smoothing: estimate grad f_sigma(x), f_sigma(x) = E f(x + sigma xi), xi ~ N(0, I).

    order=1 (LPF-SGD style) averages grad f(x + sigma xi_i) over ``n_samples`` draws and needs ``grad_fn``;
    order=0 uses Stein's identity with the baseline f(x), E[xi (f(x + sigma xi) - f(x))] / sigma, and needs
    ``loss_fn`` (an (n, ...) -> (n,) map). ``draws`` are the perturbed points, shaped (n_samples, 1, ...);
    ``chain_grads`` the per-sample terms. ``estimate(x, n_chains)`` draws ``n_chains`` blocks of ``n_samples``
    (one ``randn`` call, so n_chains = 2 draws what n_samples doubled would). Cost: n_chains * n_samples gradient
    evaluations (order 1), or n_chains * n_samples + 1 loss evaluations (order 0), reported as ``grad_evals``:
    each is one oracle call, though a loss alone is cheaper than a gradient.
    """

    def __init__(
        self,
        sigma: float,
        n_samples: int,
        *,
        grad_fn: GradFn | None = None,
        loss_fn: GradFn | None = None,
        order: int = 1,
    ) -> None:
        self.sigma = check_positive("sigma", sigma)
        self.n_samples = check_int("n_samples", n_samples, 1)
        self.order = check_int("order", order)
        if self.order not in (0, 1):
            raise ValueError(f"order must be 0 (Stein's identity, needs loss_fn) or 1 (needs grad_fn), got {order}")
        needed, fn = ("grad_fn", grad_fn) if self.order == 1 else ("loss_fn", loss_fn)
        if fn is None or not callable(fn):
            raise ValueError(f"order={self.order} needs {needed}, a callable on (n, ...) points")
        self.grad_fn = grad_fn
        self.loss_fn = loss_fn

    def estimate(self, x: Tensor, n_chains: int = 1, generator: torch.Generator | None = None) -> EstimateResult:
        """Average ``n_chains`` blocks of ``n_samples`` perturbations of x into the estimate of grad f_sigma(x)."""
        x = _check_point(x)
        n = check_int("n_chains", n_chains, 1) * self.n_samples
        start = time.perf_counter()
        xi = torch.randn((n, *x.shape), dtype=x.dtype, device=x.device, generator=generator)
        points = x + self.sigma * xi
        if self.order == 1:
            assert self.grad_fn is not None
            per_sample = _check_grad_shape(self.grad_fn(points), points)
            evals = n
        else:
            assert self.loss_fn is not None
            values = self.loss_fn(torch.cat([x.unsqueeze(0), points]))
            if not isinstance(values, Tensor) or values.shape != (n + 1,):
                got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
                raise ValueError(f"loss_fn must return a tensor of shape (n,) for n = {n + 1} points, got {got}")
            differences = (values[1:] - values[0]).reshape(-1, *([1] * x.ndim))
            per_sample = xi * differences / self.sigma
            evals = n + 1
        return EstimateResult(
            grad=per_sample.mean(0),
            chain_grads=per_sample,
            draws=points.unsqueeze(1),
            grad_evals=evals,
            seconds=time.perf_counter() - start,
        )

    def __repr__(self) -> str:
        return f"GaussianSmoothingEstimator(sigma={self.sigma}, n_samples={self.n_samples}, order={self.order})"
