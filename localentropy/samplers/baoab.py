"""BAOAB splitting of underdamped Langevin dynamics (Leimkuhler & Matthews, 2013)."""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from localentropy._checks import check_positive
from localentropy.samplers.base import Position, Sampler, as_tensor_list, check_like, noise_buffers, zero_buffers


class BAOABState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    momentum: list[Tensor]
    pending_kick: float


class BAOAB(Sampler):
    r"""BAOAB: the Leimkuhler-Matthews splitting of underdamped Langevin dynamics, unit mass.

    One BAOAB step, h the step size, gamma the friction, T the temperature, c1 = exp(-gamma h), xi ~ N(0, I):

        B: p <- p - h/2 grad U(x)
        A: x <- x + h/2 p
        O: p <- c1 p + sqrt(T (1 - c1^2)) xi
        A: x <- x + h/2 p
        B: p <- p - h/2 grad U(x)

    The contract gives one gradient per step, at ``state.position``, so this runs the equivalent
    one-gradient form: the final B of a step and the first B of the next use the same gradient, and ``step``
    applies them together, p <- p - h grad U(x) (only h/2 on the very first step), then A O A. The final
    half-kick of the last step taken is therefore *pending*: ``state.momentum`` is the momentum after O, the
    BAOAB momentum at ``state.position`` is state.momentum - h/2 grad U(x), and ``state.pending_kick`` holds
    that h/2 (0 before the first step; kept per step, so a step size changed between steps stays exact).
    The positions are exactly BAOAB's. The momentum starts at zero.

    BAOAB's configurational (x) law has an O(h^2) bias in general, smaller than that of SGLD and of the other
    splittings, and for a quadratic U with Hessian M (unit mass) its stationary x-covariance is exactly
    T M^{-1} at every stable h and every friction (the stored after-O momentum has covariance exactly T I),
    whereas SGLD's is T M^{-1} (I - h M / 2)^{-1}. Stable for h < 2 / sqrt(lambda_max(M)), like leapfrog. As
    gamma h grows it becomes SGLD with learning rate h^2 / 2 with the noise averaged over two steps (c1 -> 0).

    T = 0 draws no noise: q <- c1 q - h grad U, x <- x + h (1 + c1) / 2 q, i.e. SGD with momentum c1 and
    learning rate h^2 (1 + c1) / 2 (``torch.optim.SGD``, apart from a first step half as long).

    ``step`` updates ``state.position`` and ``state.momentum`` in place.

    Reference: B. Leimkuhler and C. Matthews, "Rational construction of stochastic numerical methods for
    molecular sampling", Applied Mathematics Research eXpress 2013(1), 34-56 (2013).
    """

    elementwise: ClassVar[bool] = True  # each coordinate's update reads only its own state
    name = "baoab"

    def __init__(
        self,
        step_size: float,
        friction: float = 1.0,
        temperature: float = 1.0,
        noise: str = "gaussian",
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.friction = check_positive("friction", friction)
        self._check_common(temperature, noise)

    def init(self, position: Position) -> BAOABState:
        positions = as_tensor_list(position)
        return BAOABState(
            position=position,
            step=0,
            noise=noise_buffers(positions, self.noise),
            momentum=zero_buffers(positions),
            pending_kick=0.0,
        )

    def reset(self, state: BAOABState) -> BAOABState:
        torch._foreach_zero_(state.momentum)
        return state._replace(step=0, pending_kick=0.0)

    def step(
        self,
        state: BAOABState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> BAOABState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        if noise is not None:  # checked before any in-place update, so that a bad call changes nothing
            check_like(noise, positions, "noise")
        h, momentum = self.step_size, state.momentum
        c1 = math.exp(-self.friction * h)  # computed here, so that a schedule may change step_size between steps
        torch._foreach_add_(momentum, grads, alpha=-(state.pending_kick + h / 2))  # the pending B, then B
        torch._foreach_add_(positions, momentum, alpha=h / 2)  # A
        torch._foreach_mul_(momentum, c1)  # O
        scale = self.temperature * (1.0 - c1 * c1)
        if scale > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_add_(momentum, xi, alpha=math.sqrt(scale))
        torch._foreach_add_(positions, momentum, alpha=h / 2)  # A
        return state._replace(step=state.step + 1, pending_kick=h / 2)
