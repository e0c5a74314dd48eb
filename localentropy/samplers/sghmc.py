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
    noise_buffers,
    zero_buffers,
)


class SGHMCState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    velocity: list[Tensor]


class SGHMC(Sampler):
    r"""Stochastic gradient HMC in the SGD-with-momentum form of Chen et al. (2014, Sec. 4).

    Update, with eta the step size, alpha the friction, beta_hat the gradient-noise estimate, T the
    temperature and xi ~ N(0, I):

        v <- (1 - alpha) v - eta grad U(x) + sqrt(2 (alpha - beta_hat) eta T) xi
        x <- x + v

    Here ``step_size`` is the *learning rate* eta = h^2 of the paper's reparametrisation (h the leapfrog
    step of the continuous dynamics), and ``friction`` is alpha = h C, in (0, 1]. ``noise_estimate`` is
    beta_hat in [0, friction], usually 0. The velocity starts at zero and is kept across steps. At T = 0 this
    is SGD with momentum 1 - alpha and learning rate eta (``torch.optim.SGD(lr=eta, momentum=1 - alpha)``).

    Small friction gives long, weakly damped trajectories: draws can be negatively correlated (an
    efficiency above that of independent draws), but the chain is harder to tune; on a quadratic U with
    Hessian M it is stable for eta lambda_max(M) < 2 (2 - alpha).

    ``step`` updates ``state.position`` and ``state.velocity`` in place.

    Reference: T. Chen, E. B. Fox and C. Guestrin, "Stochastic gradient Hamiltonian Monte Carlo", ICML 2014.
    """

    elementwise: ClassVar[bool] = True  # each coordinate's update reads only its own state
    name = "sghmc"

    def __init__(
        self,
        step_size: float,
        friction: float = 0.1,
        temperature: float = 1.0,
        noise_estimate: float = 0.0,
        noise: str = "gaussian",
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.friction = check_range("friction", friction, 0.0, 1.0, low_open=True)
        self.noise_estimate = check_range("noise_estimate", noise_estimate, 0.0, self.friction)
        self._check_common(temperature, noise)

    def init(self, position: Position) -> SGHMCState:
        positions = as_tensor_list(position)
        return SGHMCState(
            position=position, step=0, noise=noise_buffers(positions, self.noise), velocity=zero_buffers(positions)
        )

    def reset(self, state: SGHMCState) -> SGHMCState:
        torch._foreach_zero_(state.velocity)
        return state._replace(step=0)

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
        scale = 2.0 * (self.friction - self.noise_estimate) * self.step_size * self.temperature
        if scale > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_add_(velocity, xi, alpha=math.sqrt(scale))
        torch._foreach_add_(positions, velocity)
        return state._replace(step=state.step + 1)
