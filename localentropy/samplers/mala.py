"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996): SGLD's proposal with an exact correction."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from localentropy._checks import check_positive
from localentropy.samplers._chains import chain_shape, chain_sq_norm, is_batched, per_chain
from localentropy.samplers.base import Position, Sampler, as_tensor_list, check_like, new_buffers, noise_buffers


class MALAState(NamedTuple):
    position: Position
    step: int
    noise: list[Tensor]
    proposal: list[Tensor]
    potential: Tensor
    accepted: Tensor
    acceptance_rate: Tensor


class MALA(Sampler):
    r"""Metropolis-adjusted Langevin algorithm: full-batch and exact, exp(-U / T) is invariant at every h.

    Proposal, h the step size, T the temperature, xi ~ N(0, I), then a Metropolis-Hastings test:

        y = x - h grad U(x) + sqrt(2 h T) xi
        accept y with probability min(1, exp(-(U(y) - U(x)) / T + log q(x | y) - log q(y | x))),
        log q(b | a) = -|b - a + h grad U(a)|^2 / (4 h T) + const.

    Written as D = U(y) - U(x) + |x - y + h grad U(y)|^2 / (4 h) - T |xi|^2 / 2, the test is D <= T E with
    E ~ Exp(1) from the generator, so T = 0 is well defined: gradient descent that takes a step only when
    D <= 0 (the T -> 0 limit of the test: U must drop by at least |h (grad U(x) + grad U(y))|^2 / (4 h)).

    ``potential`` maps a position to U: an (n_chains, ...) tensor to the (n_chains,) values, a list of
    tensors (one chain) to a scalar. Each chain is accepted or rejected on its own. ``step(state, grad)`` takes
    grad = grad U(state.position), as the contract says, and uses it for the current point; U(x) is cached in
    ``state.potential`` (evaluated once by ``init``: re-``init`` after moving the position yourself). The
    proposal's U and gradient are computed inside ``step``: the gradient by ``grad_fn(y)`` when given,
    otherwise by ``torch.autograd.grad`` of ``potential`` (under ``torch.enable_grad``). A step therefore costs
    one potential evaluation and one gradient beyond the caller's. The gradient must be exact (full batch) for
    the test to be exact; a stochastic one makes MALA neither exact nor SGLD. Inside the local-entropy
    estimators the potential must include the coupling term gamma |x' - x|^2 / 2 that they add to the gradient.

    ``state.accepted`` counts accepted proposals per chain and ``state.acceptance_rate`` is accepted / steps,
    both updated in place on the device (no host synchronisation), as are ``state.position`` and the scratch
    ``state.proposal``. Only ``noise="gaussian"``: the test needs the Gaussian proposal density. Aim for an
    acceptance rate near 0.57 (Roberts & Rosenthal 1998).

    Reference: G. O. Roberts and R. L. Tweedie, "Exponential convergence of Langevin distributions and their
    discrete approximations", Bernoulli 2(4), 341-363 (1996).
    """

    name = "mala"
    gradients_per_step: ClassVar[int] = 2  # the caller's, at x, and the proposal's
    needs_potential: ClassVar[bool] = True
    noises: ClassVar[tuple[str, ...]] = ("gaussian",)  # the accept test needs the Gaussian proposal density

    def __init__(
        self,
        step_size: float,
        potential: Callable[[Any], Tensor],
        temperature: float = 1.0,
        grad_fn: Callable[[Any], Any] | None = None,
        noise: str = "gaussian",
    ) -> None:
        self.step_size = check_positive("step_size", step_size)
        if not callable(potential):
            raise ValueError(f"potential must be a callable mapping a position to U, got {potential!r}")
        if grad_fn is not None and not callable(grad_fn):
            raise ValueError(f"grad_fn must be None or a callable mapping a position to grad U, got {grad_fn!r}")
        self.potential, self.grad_fn = potential, grad_fn
        if noise not in self.noises:
            raise ValueError(f"noise must be 'gaussian' for MALA (the test uses the Gaussian density), got {noise!r}")
        self._check_common(temperature, noise)

    def _values(self, position: Position) -> Tensor:
        values = self.potential(position)
        shape = chain_shape(position)
        if not isinstance(values, Tensor) or values.numel() != math.prod(shape):
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(f"potential must return one value per chain, shape {shape}, got {got}")
        return values.reshape(shape)

    def init(self, position: Position) -> MALAState:
        positions = as_tensor_list(position)
        with torch.no_grad():
            values = self._values(position).to(positions[0].dtype).clone()
        return MALAState(
            position=position,
            step=0,
            noise=noise_buffers(positions, self.noise),
            proposal=new_buffers(positions),
            potential=values,
            accepted=torch.zeros(values.shape, dtype=torch.int64, device=values.device),
            acceptance_rate=torch.zeros_like(values),
        )

    def reset(self, state: MALAState) -> MALAState:
        with torch.no_grad():
            state.potential.copy_(self._values(state.position))
        state.accepted.zero_()
        state.acceptance_rate.zero_()
        return state._replace(step=0)

    def _at_proposal(self, proposal: list[Tensor], batched: bool) -> tuple[Tensor, list[Tensor]]:
        """U and grad U at the proposal."""
        if self.grad_fn is not None:
            point = proposal[0] if batched else proposal
            with torch.no_grad():
                values = self._values(point)
            return values, check_like(self.grad_fn(point), proposal, "grad_fn(proposal)")
        leaves = [t.detach().requires_grad_(True) for t in proposal]
        with torch.enable_grad():
            values = self._values(leaves[0] if batched else leaves)
            grads = torch.autograd.grad(values.sum(), leaves, allow_unused=True, materialize_grads=True)
        return values.detach(), list(grads)

    def step(
        self,
        state: MALAState,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> MALAState:
        positions = as_tensor_list(state.position)
        grads = check_like(grad, positions, "grad")
        if noise is not None:  # checked before any in-place update, so that a bad call changes nothing
            check_like(noise, positions, "noise")
        batched = is_batched(state.position)
        h, temperature, proposal = self.step_size, self.temperature, state.proposal
        torch._foreach_copy_(proposal, positions)
        torch._foreach_add_(proposal, grads, alpha=-h)
        forward = 0.0
        if temperature > 0:
            xi = self._noise(state.noise, positions, noise, generator)
            torch._foreach_add_(proposal, xi, alpha=math.sqrt(2.0 * h * temperature))
            forward = chain_sq_norm(xi, batched) * (temperature / 2.0)  # |y - x + h grad U(x)|^2 / (4 h)
        values, proposal_grads = self._at_proposal(proposal, batched)
        reverse = torch._foreach_sub(positions, proposal)
        torch._foreach_add_(reverse, proposal_grads, alpha=h)
        excess = values - state.potential + chain_sq_norm(reverse, batched) / (4.0 * h) - forward
        threshold = torch.zeros_like(state.potential)
        if temperature > 0:
            threshold.exponential_(generator=generator).mul_(temperature)
        accept = excess <= threshold  # NaN (a proposal where U is undefined) is rejected
        for x, y, a in zip(positions, proposal, per_chain(accept, positions, batched), strict=True):
            x.copy_(torch.where(a, y, x))
        state.potential.copy_(torch.where(accept, values, state.potential))
        state.accepted.add_(accept)
        torch.div(state.accepted, state.step + 1, out=state.acceptance_rate)
        return state._replace(step=state.step + 1)
