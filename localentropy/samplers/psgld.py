"""Preconditioned SGLD with an RMSprop preconditioner (Li, Chen, Carlson & Carin, AAAI 2016)."""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from localentropy._checks import check_choice, check_int, check_positive, check_range
from localentropy.samplers.base import (
    Position,
    Sampler,
    as_tensor_list,
    check_like,
    new_buffers,
    noise_buffers,
    zero_buffers,
)

DAMPING_PLACEMENTS = ("outside", "inside")


class PSGLDState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    square_avg: list[Tensor]
    preconditioner: list[Tensor]
    adapted: int = 0  # steps that updated V; with freeze_after, kept by ``reset``


class PSGLD(Sampler):
    r"""Preconditioned SGLD with the RMSprop preconditioner.

    Update, with h the step size, beta the averaging constant, lambda the damping, T the temperature,
    xi ~ N(0, I) and all products elementwise:

        V <- beta V + (1 - beta) g * g,          g = grad U(x)
        G = 1 / (lambda + sqrt(V))               (damping="outside", the paper's form)
        G = 1 / sqrt(lambda + V)                 (damping="inside", TensorFlow Probability's form)
        x <- x - h G * g + sqrt(2 h T G) * xi

    V starts at zero, as in the paper's Algorithm 1, so the first steps are large (RMSprop's behaviour: the first
    G is 1 / sqrt(1 - beta) times its steady value, 10 at beta = 0.99). ``debias=True`` divides V by 1 - beta^t
    (Adam's correction: V starts at the first squared gradient; tested). A chain whose first gradients are near
    zero (started at a stationary point) still gets G near 1 / damping: damping bounds that first step.

    The correction term Gamma(x) = T sum_j d G_ij / d x_j of the paper is dropped, as the paper and most
    implementations do. Its omission is not small wherever the gradient's magnitude changes across the target: V
    then tracks the position, and the sampled law is biased by an amount that does not shrink with h. Measured in
    the accuracy atlas (docs/samplers.md: covariance error, relative Frobenius in whitened coordinates, at h*/32
    with 256 chains): on the banana 0.58 +- 0.19 at beta = 0.99 and 0.83 +- 0.40 at 0.999, growing at larger h (1.2
    and 3.4 at h*/8); on the two-mode mixture 0.36, 0.29 and 0.17 at h*/32, h*/8 and h*/2, a floor. On a Gaussian
    the bias is milder (the trace of the sampled covariance over that of the frozen-preconditioner law: 1.196 at
    beta = 0.99, 1.033 at 0.999; tested).

    ``freeze_after=N`` (N > 0) removes the bias: V adapts for the first N steps, then stays fixed, so the chain is
    SGLD with a constant diagonal preconditioner G, whose law on a quadratic is known exactly (tested) and whose
    bias vanishes as h -> 0 (atlas: on the banana 0.12 +- 0.09 at h*/32, within 2 MCSE of the truth; on the
    Student-t and the mixture the error falls about fourfold per fourfold smaller h, 0.52 -> 0.12 and 0.17 ->
    0.045). Draws taken while V adapts are burn-in (``sample`` and the estimators require burn_in >= N). ``reset``
    keeps V when N > 0, so inside Entropy-SGD, which resets its sampler every outer step, V adapts over the first N
    inner steps of training and is then kept. A preconditioner frozen from a bad V inherits its defect: use
    ``debias=True`` (without it a V frozen after N steps is 1 - beta^N of the mean squared gradient) and a damping
    of at least a few per cent of the gradient's root mean square (on the banana started at its mode, at h = 0.1
    damping 0.01 left a covariance error of 0.49 +- 0.19 and 0.03 none measurable; tested). The shipped configs that
    sample at T = 0.1 use ``freeze_after=10, debias=True, damping=0.03``.

    ``step`` updates ``state.position``, ``state.square_avg`` and the scratch ``state.preconditioner``
    in place.

    Reference: C. Li, C. Chen, D. Carlson and L. Carin, "Preconditioned stochastic gradient Langevin
    dynamics for deep neural networks", AAAI 2016.
    """

    elementwise: ClassVar[bool] = True  # each coordinate's update reads only its own state
    name = "psgld"

    def __init__(
        self,
        step_size: float,
        beta: float = 0.99,
        damping: float = 1e-5,
        temperature: float = 1.0,
        damping_placement: str = "outside",
        noise: str = "gaussian",
        freeze_after: int = 0,
        debias: bool = False,
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.beta = check_range("beta", beta, 0.0, 1.0, high_open=True)
        self.damping = check_positive("damping", damping)
        self.damping_placement = check_choice("damping_placement", damping_placement, DAMPING_PLACEMENTS)
        self._check_common(temperature, noise)
        self.freeze_after = check_int("freeze_after", freeze_after, 0)
        if not isinstance(debias, bool):
            raise ValueError(f"debias must be True or False, got {debias!r}")
        self.debias = debias

    @property
    def adaptation_steps(self) -> int:
        """Steps during which the preconditioner still changes (``freeze_after``; 0 when it never freezes):
        draws taken during them are burn-in."""
        return self.freeze_after

    def init(self, position: Position) -> PSGLDState:
        positions = as_tensor_list(position)
        return PSGLDState(
            position=position,
            step=0,
            noise=noise_buffers(positions, self.noise),
            square_avg=zero_buffers(positions),
            preconditioner=new_buffers(positions),
        )

    def reset(self, state: PSGLDState) -> PSGLDState:
        if self.freeze_after:  # V adapts over the first freeze_after steps of all runs, then is kept
            return state._replace(step=0)
        torch._foreach_zero_(state.square_avg)  # the preconditioner is scratch, rewritten every step
        return state._replace(step=0, adapted=0)

    def step(
        self,
        state: PSGLDState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> PSGLDState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        if noise is not None:  # checked before any in-place update, so that a bad call changes nothing
            check_like(noise, positions, "noise")
        square_avg, precond, adapted = state.square_avg, state.preconditioner, state.adapted
        if not self.freeze_after or adapted < self.freeze_after:
            torch._foreach_mul_(square_avg, self.beta)
            torch._foreach_addcmul_(square_avg, grads, grads, value=1.0 - self.beta)
            adapted += 1
        # V / (1 - beta^t), t = adapted: the weighted mean of the squared gradients seen, Adam's correction
        scale = 1.0 / (1.0 - self.beta**adapted) if self.debias and self.beta > 0 else 1.0
        # The first operation on the scratch reads square_avg and writes precond in one pass (same numbers as a
        # copy followed by the in-place operation).
        if self.damping_placement == "outside":
            for v, out in zip(square_avg, precond, strict=True):
                torch.sqrt(v, out=out)
            if scale != 1.0:
                torch._foreach_mul_(precond, math.sqrt(scale))
            torch._foreach_add_(precond, self.damping)
            torch._foreach_reciprocal_(precond)
        else:
            if scale == 1.0:
                for v, out in zip(square_avg, precond, strict=True):
                    torch.add(v, self.damping, out=out)
            else:
                for v, out in zip(square_avg, precond, strict=True):
                    torch.mul(v, scale, out=out)
                torch._foreach_add_(precond, self.damping)
            torch._foreach_rsqrt_(precond)
        torch._foreach_addcmul_(positions, precond, grads, value=-self.step_size)
        if self.temperature > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_sqrt_(precond)  # the scratch buffer now holds sqrt(G)
            torch._foreach_addcmul_(positions, precond, xi, value=math.sqrt(2.0 * self.step_size * self.temperature))
        return state._replace(step=state.step + 1, adapted=adapted)
