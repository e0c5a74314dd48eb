"""SGLD with heavy-ball or Nesterov momentum on the gradient: the inner loop of the authors' Entropy-SGD code."""

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


class MomentumSGLDState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    momentum_buffer: list[Tensor]
    direction: list[Tensor]


class MomentumSGLD(Sampler):
    r"""Langevin noise on top of SGD with momentum, as the Entropy-SGD authors' code runs its inner loop.

    Update, with h the step size, m the momentum, T the temperature, xi ~ N(0, I), and an optional extra
    force F applied outside the momentum buffer (``step(..., force=F)``):

        b <- m b + grad U(x)                      (torch.optim.SGD's buffer, no dampening)
        d = grad U(x) + m b   (nesterov)   or   d = b
        x <- x - h (d + F) + sqrt(2 h T / (1 - m)) xi

    Momentum amplifies the drift by 1 / (1 - m) at low frequencies, so the noise is scaled to match: the chain
    samples exp(-U / T) as h -> 0 (at m = 0 it is SGLD), but its discretisation bias grows like h / (1 - m)^2,
    not h: on U = lambda x^2 / 2 the exact stationary variance (:func:`quadratic_variance_ratio`, from the
    discrete Lyapunov equation; tested) is T / lambda times 1 + 95 h lambda (heavy ball) or 1 + 86 h lambda
    (Nesterov) to first order at m = 0.9, against 1 + h lambda / 2 for SGLD. The accuracy atlas
    (docs/samplers.md) shows the same on its other targets: keep h lambda_max (1 - m)^-2 small. Code that adds
    noise eps sqrt(2 h) xi under momentum m, as the authors' does, therefore runs at T = eps^2 (1 - m).
    A force passed as F is not amplified: the authors' PyTorch port adds the Entropy-SGD coupling this way,
    which weakens the scope gamma to gamma (1 - m) relative to the data gradient. At T = 0 this is
    ``torch.optim.SGD(lr=h, momentum=m, nesterov=...)``.

    ``step`` updates ``state.position`` and ``state.momentum_buffer`` in place (``state.direction`` is scratch).

    Reference: P. Chaudhari et al., "Entropy-SGD: biasing gradient descent into wide valleys", ICLR 2017,
    and the authors' code (ucla-vision/entropy-sgd).
    """

    elementwise: ClassVar[bool] = True  # each coordinate's update reads only its own state
    name = "msgld"
    accepts_force: ClassVar[bool] = True

    def __init__(
        self,
        step_size: float,
        momentum: float = 0.9,
        nesterov: bool = False,
        temperature: float = 1.0,
        noise: str = "gaussian",
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.momentum = check_range("momentum", momentum, 0.0, 1.0, high_open=True)
        if not isinstance(nesterov, bool):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = nesterov
        self._check_common(temperature, noise)

    def init(self, position: Position) -> MomentumSGLDState:
        positions = as_tensor_list(position)
        return MomentumSGLDState(
            position=position,
            step=0,
            noise=noise_buffers(positions, self.noise),
            momentum_buffer=zero_buffers(positions),
            direction=new_buffers(positions),
        )

    def reset(self, state: MomentumSGLDState) -> MomentumSGLDState:
        torch._foreach_zero_(state.momentum_buffer)  # the direction is scratch, rewritten every step
        return state._replace(step=0)

    def step(
        self,
        state: MomentumSGLDState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
        force: Position | None = None,
    ) -> MomentumSGLDState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        forces = None if force is None else check_like(force, positions, "force")
        buffer, direction = state.momentum_buffer, state.direction
        torch._foreach_mul_(buffer, self.momentum)
        torch._foreach_add_(buffer, grads)
        # d = g + m b (Nesterov) or b, plus the force: written in one pass per operation (the same numbers as a
        # copy followed by in-place additions); without Nesterov or a force, d is b itself and is not copied.
        if self.nesterov:
            for g, b, d in zip(grads, buffer, direction, strict=True):
                torch.add(g, b, alpha=self.momentum, out=d)
            if forces is not None:
                torch._foreach_add_(direction, forces)
        elif forces is not None:
            for b, f, d in zip(buffer, forces, direction, strict=True):
                torch.add(b, f, out=d)
        else:
            direction = buffer
        torch._foreach_add_(positions, direction, alpha=-self.step_size)
        if self.temperature > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            scale = math.sqrt(2.0 * self.step_size * self.temperature / (1.0 - self.momentum))
            torch._foreach_add_(positions, xi, alpha=scale)
        return state._replace(step=state.step + 1)


def quadratic_variance_ratio(step_size: float, curvature: float, momentum: float, nesterov: bool = False) -> float:
    r"""lambda Var(x) / T for MomentumSGLD's stationary law on U(x) = lambda x^2 / 2, exactly (1 = no bias).

    With a = h lambda and m the momentum, the chain (x, b) is linear and its stationary covariance solves the
    discrete Lyapunov equation S = A S A^T + Q, Q = diag(2 h T / (1 - m), 0). Heavy ball,
    A = [[1 - a, -h m], [lambda, m]]:

        lambda Var(x) / T = ((1 + m) (1 - m)^2 + 2 m a) / ((1 - m)^2 (1 + m - a / 2)),

    stable for a < 2 (1 + m); to first order 1 + a / (2 (1 + m)) + 2 m a / ((1 - m)^2 (1 + m)), i.e. 1 + 95 a
    at m = 0.9. Nesterov, A = [[1 - a (1 + m), -h m^2], [lambda, m]]:

        lambda Var(x) / T = 2 ((1 - m)^2 (1 + m) + a m (1 + 2 m - m^2))
                            / ((1 - m) (1 - m + a m) (2 (1 + m) - a (1 + 2 m))),

    stable for a < 2 (1 + m) / (1 + 2 m); about 1 + 86 a at m = 0.9. Both are 1 / (1 - a / 2) (SGLD's) at m = 0.
    """
    a, m = step_size * curvature, momentum
    if nesterov:
        numerator = 2 * ((1 - m) ** 2 * (1 + m) + a * m * (1 + 2 * m - m * m))
        return numerator / ((1 - m) * (1 - m + a * m) * (2 * (1 + m) - a * (1 + 2 * m)))
    return ((1 + m) * (1 - m) ** 2 + 2 * m * a) / ((1 - m) ** 2 * (1 + m - a / 2))
