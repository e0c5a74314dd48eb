"""Stochastic gradient Langevin dynamics (Welling & Teh, ICML 2011)."""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from localentropy._checks import check_positive
from localentropy.samplers.base import Position, Sampler, as_tensor_list, check_like, noise_buffers


class SGLDState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]


class SGLD(Sampler):
    r"""Stochastic gradient Langevin dynamics.

    Update, with h the step size, T the temperature and xi ~ N(0, I) drawn fresh every step:

        x <- x - h grad U(x) + sqrt(2 h T) xi

    It samples exp(-U / T) as h -> 0. On a quadratic U with Hessian M the chain's stationary law is Gaussian
    with the exact mean and covariance T M^{-1} (I - h M / 2)^{-1}; it is stable only for
    h < 2 / lambda_max(M). At T = 0 it is plain gradient descent with learning rate h.

    The paper's Algorithm 1 writes the noise as sqrt(h) eps xi (T = eps^2 / 2); the authors' code uses
    eps sqrt(2 h) xi (T = eps^2).

    ``step`` updates ``state.position`` in place.

    Reference: M. Welling and Y. W. Teh, "Bayesian learning via stochastic gradient Langevin dynamics",
    ICML 2011.
    """

    elementwise: ClassVar[bool] = True  # each coordinate's update reads only its own state
    name = "sgld"

    def __init__(self, step_size: float, temperature: float = 1.0, noise: str = "gaussian") -> None:
        self.step_size = check_positive("step_size", step_size)
        self._check_common(temperature, noise)

    def init(self, position: Position) -> SGLDState:
        positions = as_tensor_list(position)
        return SGLDState(position=position, step=0, noise=noise_buffers(positions, self.noise))

    def reset(self, state: SGLDState) -> SGLDState:
        return state._replace(step=0)

    def step(
        self,
        state: SGLDState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> SGLDState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        if noise is not None:  # checked before any in-place update, so that a bad call changes nothing
            check_like(noise, positions, "noise")
        torch._foreach_add_(positions, grads, alpha=-self.step_size)
        if self.temperature > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_add_(positions, xi, alpha=math.sqrt(2.0 * self.step_size * self.temperature))
        return state._replace(step=state.step + 1)
