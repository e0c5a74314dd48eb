"""Running many chains of a sampler and keeping their draws."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, overload

import torch
from torch import Tensor

from localentropy._checks import check_choice, check_int
from localentropy.samplers.base import Sampler
from localentropy.samplers.divergence import (
    DIVERGENCE_POLICIES,
    SamplerDivergenceError,
    SampleResult,
    divergence_message,
    first_nonfinite_index,
    nonfinite_chains,
)


@overload
def sample(
    sampler: Sampler,
    grad_fn: Callable[[Tensor], Tensor],
    init: Tensor,
    n_steps: int,
    *,
    generator: torch.Generator | None = ...,
    burn_in: int = ...,
    thin: int = ...,
    on_divergence: Literal["raise"] = ...,
) -> Tensor: ...


@overload
def sample(
    sampler: Sampler,
    grad_fn: Callable[[Tensor], Tensor],
    init: Tensor,
    n_steps: int,
    *,
    generator: torch.Generator | None = ...,
    burn_in: int = ...,
    thin: int = ...,
    on_divergence: Literal["drop"],
) -> SampleResult: ...


def sample(
    sampler: Sampler,
    grad_fn: Callable[[Tensor], Tensor],
    init: Tensor,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
    burn_in: int = 0,
    thin: int = 1,
    on_divergence: str = "raise",
) -> Tensor | SampleResult:
    """Run ``init.shape[0]`` independent chains for ``n_steps`` steps and return the kept positions.

    ``init`` has shape (n_chains, ...) and is not modified; ``grad_fn`` maps an (n_chains, ...) tensor to the
    gradient of U at each chain. ``n_steps`` counts the burn-in: step k (1-based) is kept when k > burn_in
    and (k - burn_in) is a multiple of ``thin``. Returns a tensor of shape (n_chains, n_draws, ...),
    n_draws = (n_steps - burn_in) // thin. Cost: n_chains * n_steps gradient evaluations (one per chain
    per step).

    A chain that becomes NaN or infinite never passes silently: ``on_divergence="raise"`` (default) raises
    :class:`SamplerDivergenceError` naming the sampler, its step size, the step and the number of chains;
    ``"drop"`` returns a :class:`SampleResult` with the finite chains' draws and the diverged ones counted. The
    check runs once, after the last step. A sampler that adapts (pSGLD with ``freeze_after``) needs
    ``burn_in >= sampler.adaptation_steps``: its draws are not from a fixed chain until then.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a localentropy Sampler, got {type(sampler).__name__}")
    if not isinstance(init, Tensor) or init.ndim < 1 or init.shape[0] < 1:
        raise ValueError("init must be a tensor of shape (n_chains, ...) with at least one chain")
    n_steps = check_int("n_steps", n_steps, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    thin = check_int("thin", thin, 1)
    on_divergence = check_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES)
    adaptation = getattr(sampler, "adaptation_steps", 0)
    if burn_in < adaptation:
        raise ValueError(
            f"burn_in must be >= {adaptation}: {type(sampler).__name__} adapts for its first {adaptation} steps "
            f"(freeze_after), and draws taken while it adapts are burn-in; got burn_in={burn_in}"
        )
    if burn_in >= n_steps:
        raise ValueError(f"burn_in must be < n_steps ({n_steps}), got {burn_in}")
    n_draws = (n_steps - burn_in) // thin
    if n_draws < 1:
        raise ValueError(f"thin={thin} keeps no draw of the {n_steps - burn_in} steps after burn-in")

    draws = init.new_empty((init.shape[0], n_draws, *init.shape[1:]))
    state = sampler.init(init.clone())
    kept = 0
    for k in range(1, n_steps + 1):
        grad = grad_fn(state.position)
        state = sampler.step(state, grad, generator)
        if k > burn_in and (k - burn_in) % thin == 0:
            draws[:, kept] = state.position
            kept += 1
    diverged = nonfinite_chains(draws) | nonfinite_chains(state.position)
    first = first_nonfinite_index(draws)
    steps = torch.where(first >= 0, burn_in + (first + 1) * thin, torch.full_like(first, -1))
    steps = torch.where(diverged & (first < 0), n_steps, steps)  # non-finite only after the last kept draw
    if on_divergence == "drop":
        return SampleResult(draws[~diverged], diverged, steps)
    if not bool(diverged.any()):  # the one host synchronisation of the check
        return draws
    first_step = int(steps[diverged].min())
    where = (
        f"by step {first_step} of {n_steps}"
        if first_step > burn_in + thin
        else f"within the first {first_step} steps (burn-in {burn_in})"
    )
    message = divergence_message(sampler, int(diverged.sum()), init.shape[0], where)
    raise SamplerDivergenceError(message, diverged, first_step)
