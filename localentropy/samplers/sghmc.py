"""Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin, ICML 2014), momentum form."""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from localentropy._checks import check_positive, check_range
from localentropy.samplers.base import (
    Position,
    Sampler,
    as_tensor_list,
    check_like,
    new_buffers,
    noise_buffers,
    zero_buffers,
)

RUNNING = "running"
RUNNING_AVERAGING = 0.99  # the running gradient-noise estimate's averaging constant: a window of ~200 gradients


class SGHMCState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    velocity: list[Tensor]
    # with noise_estimate="running" (None otherwise): the last gradient of this run, then scratch within a step
    grad_previous: list[Tensor] | None = None
    # the running average of half the squared successive gradient differences (not yet debiased)
    grad_variance: list[Tensor] | None = None
    variance_updates: int = 0  # differences averaged so far; kept by ``reset``, like grad_variance


class SGHMC(Sampler):
    r"""Stochastic gradient HMC in the SGD-with-momentum form of Chen et al. (2014, Sec. 4).

    Update, with eta the step size, alpha the friction, beta_hat the gradient-noise estimate, T the
    temperature and xi ~ N(0, I):

        v <- (1 - alpha) v - eta grad U(x) + sqrt(2 (alpha - beta_hat) eta T) xi
        x <- x + v

    Here ``step_size`` is the *learning rate* eta = h^2 of the paper's reparametrisation (h the leapfrog
    step of the continuous dynamics), and ``friction`` is alpha = h C, in (0, 1]. ``noise_estimate`` is
    beta_hat in [0, friction], usually 0, or ``"running"`` (below). The velocity starts at zero and is kept across
    steps. At T = 0 this is SGD with momentum 1 - alpha and learning rate eta (``torch.optim.SGD(lr=eta,
    momentum=1 - alpha)``).

    Gradient noise of variance V per coordinate adds eta^2 V to the velocity's noise each step, on top of the
    2 alpha eta T the sampler injects, so the chain samples at about T + eta V / (2 alpha). beta_hat = eta V /
    (2 T) takes it out again: the injected variance falls to 2 (alpha - beta_hat) eta T and the total is 2 alpha
    eta T, the noise-free chain's (Chen et al.'s B_hat = eta V_hat / 2, at temperature T).

    ``noise_estimate="running"`` estimates V per coordinate from the gradients the sampler is given: V_hat is a
    running average (constant ``RUNNING_AVERAGING`` = 0.99, debiased as Adam's) of half the squared difference
    of successive gradients, which minibatch noise, independent between steps, enters twice (2 V) while the
    exact gradient's change between steps is only grad^2 U times the small move v: on U = lambda x^2 / 2 its mean
    is V (1 + eta lambda) + lambda^2 E[v^2] / 2 (tested), so the estimate cools stiff directions by about
    eta^2 lambda^2 / (4 alpha) relative (E[v^2] ~ eta T). beta_hat = eta V_hat / (2 T) per coordinate, clipped to
    [0, alpha] so that the injected variance never goes negative; where eta V > 2 alpha T no noise is injected
    and the chain runs at about eta V / (2 alpha) > T. Per coordinate, so the sampler stays elementwise; two more
    buffers the size of the position. ``reset`` keeps V_hat (a property of the gradients, not of the chain), so
    inside Entropy-SGD, which resets its sampler every outer step, it averages over all inner steps of training.
    On a quadratic with gradient noise the sampled variance is the exact law of the update with the estimate's
    mean, within MCSE (tested); docs/samplers.md gives the temperatures measured in the accuracy atlas with and
    without the estimate, and its cost on exact gradients at large steps.

    Small friction gives long, weakly damped trajectories: draws can be negatively correlated (an
    efficiency above that of independent draws), but the chain is harder to tune; on a quadratic U with
    Hessian M it is stable for eta lambda_max(M) < 2 (2 - alpha).

    ``step`` updates ``state.position`` and ``state.velocity`` (and the estimate's buffers) in place.

    Reference: T. Chen, E. B. Fox and C. Guestrin, "Stochastic gradient Hamiltonian Monte Carlo", ICML 2014.
    """

    elementwise: ClassVar[bool] = True  # each coordinate's update reads only its own state
    name = "sghmc"

    def __init__(
        self,
        step_size: float,
        friction: float = 0.1,
        temperature: float = 1.0,
        noise_estimate: float | str = 0.0,
        noise: str = "gaussian",
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.friction = check_range("friction", friction, 0.0, 1.0, low_open=True)
        if noise_estimate == RUNNING:
            self.noise_estimate: float | str = RUNNING
        elif isinstance(noise_estimate, str):
            raise ValueError(f"noise_estimate must be a number in [0, friction] or {RUNNING!r}, got {noise_estimate!r}")
        else:
            self.noise_estimate = check_range("noise_estimate", noise_estimate, 0.0, self.friction)
        self._check_common(temperature, noise)

    @property
    def running(self) -> bool:
        """Whether the gradient-noise term is estimated from the gradients (``noise_estimate="running"``)."""
        return self.noise_estimate == RUNNING

    def init(self, position: Position) -> SGHMCState:
        positions = as_tensor_list(position)
        state = SGHMCState(
            position=position, step=0, noise=noise_buffers(positions, self.noise), velocity=zero_buffers(positions)
        )
        if self.running:
            state = state._replace(grad_previous=new_buffers(positions), grad_variance=zero_buffers(positions))
        return state

    def reset(self, state: SGHMCState) -> SGHMCState:
        torch._foreach_zero_(state.velocity)
        return state._replace(step=0)  # the running estimate is kept; step 0 has no gradient to difference with

    def noise_term(self, state: SGHMCState) -> list[Tensor] | float:
        """beta_hat: the float ``noise_estimate``, or the running estimate eta V_hat / (2 T) per coordinate,
        clipped to [0, friction] (0 before any difference, friction at T = 0)."""
        if not self.running:
            return float(self.noise_estimate)
        out = [torch.zeros_like(v) for v in state.grad_variance]
        if state.variance_updates:
            self._scaled_variance(state.grad_variance, state.variance_updates, out)
        return out

    def _scaled_variance(self, variance: list[Tensor], updates: int, out: list[Tensor]) -> None:
        """out <- min(eta V_hat / (2 T), alpha), V_hat the debiased running average."""
        if self.temperature == 0:
            torch._foreach_fill_(out, self.friction)
            return
        debias = 1.0 - RUNNING_AVERAGING**updates
        for v, o in zip(variance, out, strict=True):
            torch.mul(v, self.step_size / (2.0 * self.temperature * debias), out=o)
        torch._foreach_clamp_max_(out, self.friction)

    def step(
        self,
        state: SGHMCState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> SGHMCState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        if noise is not None:  # checked before any in-place update, so that a bad call changes nothing
            check_like(noise, positions, "noise")
        velocity = state.velocity
        torch._foreach_mul_(velocity, 1.0 - self.friction)
        torch._foreach_add_(velocity, grads, alpha=-self.step_size)
        if self.running:
            updates = self._running_noise(state, grads, velocity, noise, generator)
            torch._foreach_add_(positions, velocity)
            return state._replace(step=state.step + 1, variance_updates=updates)
        scale = 2.0 * (self.friction - self.noise_estimate) * self.step_size * self.temperature
        if scale > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_add_(velocity, xi, alpha=math.sqrt(scale))
        torch._foreach_add_(positions, velocity)
        return state._replace(step=state.step + 1)

    def _running_noise(
        self,
        state: SGHMCState,
        grads: list[Tensor],
        velocity: list[Tensor],
        noise: Position | None,
        generator: torch.Generator | None,
    ) -> int:
        """Update V_hat with this gradient, add sqrt(2 (alpha - beta_hat) eta T) xi to the velocity per coordinate,
        keep the gradient; return the number of differences averaged. beta_hat includes this step's difference:
        xi is independent of it, so the velocity's noise variance is still eta^2 V + 2 (alpha - E beta_hat) eta T."""
        previous, variance, updates = state.grad_previous, state.grad_variance, state.variance_updates
        if state.step > 0:
            torch._foreach_sub_(previous, grads)  # minus the difference; previous is scratch from here on
            torch._foreach_mul_(variance, RUNNING_AVERAGING)
            torch._foreach_addcmul_(variance, previous, previous, value=(1.0 - RUNNING_AVERAGING) / 2)
            updates += 1
        if self.temperature > 0:
            xi = self._noise(state.noise, as_tensor_list(state.position), noise, generator)
            if updates:
                self._scaled_variance(variance, updates, previous)  # beta_hat in [0, alpha]
                # beta_hat - alpha <= 0 exactly in floating point (beta_hat was clipped to alpha): the variance
                # -2 eta T (beta_hat - alpha) is never negative
                torch._foreach_sub_(previous, self.friction)
                torch._foreach_mul_(previous, -2.0 * self.step_size * self.temperature)
                torch._foreach_sqrt_(previous)
                torch._foreach_addcmul_(velocity, previous, xi)
            else:
                full = 2.0 * self.friction * self.step_size * self.temperature
                torch._foreach_add_(velocity, xi, alpha=math.sqrt(full))
        torch._foreach_copy_(previous, grads)
        return updates
