"""Stochastic gradient Nose-Hoover thermostat (Ding et al., NeurIPS 2014)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from localentropy._checks import check_nonnegative, check_positive
from localentropy.samplers._chains import chain_dim, chain_shape, chain_sq_norm, is_batched, per_chain
from localentropy.samplers.base import Position, Sampler, as_tensor_list, check_like, noise_buffers, zero_buffers


class SGNHTState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    momentum: list[Tensor]
    thermostat: Tensor


class SGNHT(Sampler):
    r"""Stochastic gradient Nose-Hoover thermostat: SGHMC whose friction xi adapts to the kinetic energy.

    Update (Ding et al.'s Algorithm 1 with a temperature), h the step size, A the injected noise level
    (``diffusion``), T the temperature, d the dimension of one chain and xi ~ N(0, I):

        p  <- p - h xi p - h grad U(x) + sqrt(2 A h T) xi
        x  <- x + h p
        xi <- xi + h (p^T p / d - T)

    The continuous dynamics (dp = -grad U dt - xi p dt + sqrt(2 A T) dW, dxi = (p^T p / d - T) dt) leave
    exp(-U(x) / T - |p|^2 / (2 T) - d (xi - A)^2 / (2 T)) invariant: x follows exp(-U / T), the momentum has
    variance T and the thermostat fluctuates around A with variance T / d. The thermostat absorbs an unknown
    gradient-noise level: friction settles where heating (injected plus gradient noise) balances dissipation,
    so A need not match the gradient noise. The discretisation bias is O(h): the thermostat pins the mean of
    p^T p / d at exactly T, and for this p-then-x scheme lambda Var(x) = (1 - xi h / 2) Var(p) along each
    eigenvector of a quadratic U (the frozen-thermostat recursion), so on U with Hessian M the x-covariance is
    about (1 - mean(xi) h / 2) T M^{-1} ~ (1 - A h / 2) T M^{-1}: the same relative bias in every direction.

    One thermostat per chain: with an (n_chains, ...) tensor position ``state.thermostat`` has shape
    (n_chains,) and d is the number of coordinates of one chain; a list-of-tensors position is one chain, with
    a 0-d thermostat and d the total number of parameters. The momentum starts at zero and the thermostat at
    A (Ding et al. start p ~ N(0, I); ``init`` has no generator), so the chain heats up during burn-in.

    T = 0 draws no noise: p <- (1 - h xi) p - h grad U, x <- x + h p, xi <- xi + h |p|^2 / d, i.e. SGD with
    momentum 1 - h xi and learning rate h^2 whose friction xi never decreases: a momentum method with
    adaptive friction (it damps ever more strongly while the iterates move), not a ``torch.optim`` optimiser.
    A = 0 with T > 0 is the deterministic Nose-Hoover scheme. Keep h xi < 1 (momentum factor positive).

    ``step`` updates ``state.position``, ``state.momentum`` and ``state.thermostat`` in place.

    Reference: N. Ding, Y. Fang, R. Babbush, C. Chen, R. D. Skeel and H. Neven, "Bayesian sampling using
    stochastic gradient thermostats", NeurIPS 2014.
    """

    name = "sgnht"

    def __init__(
        self,
        step_size: float,
        diffusion: float = 1.0,
        temperature: float = 1.0,
        noise: str = "gaussian",
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        self.diffusion = check_nonnegative("diffusion", diffusion)
        self._check_common(temperature, noise)

    def init(self, position: Position) -> SGNHTState:
        positions = as_tensor_list(position)
        shape = chain_shape(position)
        thermostat = torch.full(shape, self.diffusion, dtype=positions[0].dtype, device=positions[0].device)
        return SGNHTState(
            position=position,
            step=0,
            noise=noise_buffers(positions, self.noise),
            momentum=zero_buffers(positions),
            thermostat=thermostat,
        )

    def reset(self, state: SGNHTState) -> SGNHTState:
        torch._foreach_zero_(state.momentum)
        state.thermostat.fill_(self.diffusion)
        return state._replace(step=0)

    def step(
        self,
        state: SGNHTState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> SGNHTState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        if noise is not None:  # checked before any in-place update, so that a bad call changes nothing
            check_like(noise, positions, "noise")
        batched = is_batched(state.position)
        h, momentum, thermostat = self.step_size, state.momentum, state.thermostat
        torch._foreach_mul_(momentum, per_chain(1.0 - h * thermostat, positions, batched))
        torch._foreach_add_(momentum, grads, alpha=-h)
        scale = 2.0 * self.diffusion * h * self.temperature
        if scale > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_add_(momentum, xi, alpha=math.sqrt(scale))
        torch._foreach_add_(positions, momentum, alpha=h)
        dim = chain_dim(positions, batched)
        # the noise buffers are free once the noise is added: they take the squares of p (no allocation)
        thermostat.add_(chain_sq_norm(momentum, batched, state.noise), alpha=h / dim).sub_(h * self.temperature)
        return state._replace(step=state.step + 1)
