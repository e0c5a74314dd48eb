"""Running many chains of a sampler and keeping their draws."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from localentropy._checks import check_int
from localentropy.samplers.base import Sampler


def sample(
    sampler: Sampler,
    grad_fn: Callable[[Tensor], Tensor],
    init: Tensor,
    n_steps: int,
    *,
    generator: torch.Generator | None = None,
    burn_in: int = 0,
    thin: int = 1,
) -> Tensor:
    """Run ``init.shape[0]`` independent chains for ``n_steps`` steps and return the kept positions.

    ``init`` has shape (n_chains, ...) and is not modified; ``grad_fn`` maps an (n_chains, ...) tensor to the
    gradient of U at each chain. ``n_steps`` counts the burn-in: step k (1-based) is kept when k > burn_in
    and (k - burn_in) is a multiple of ``thin``. Returns a tensor of shape (n_chains, n_draws, ...),
    n_draws = (n_steps - burn_in) // thin. Cost: n_chains * n_steps gradient evaluations (one per chain
    per step).
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a localentropy Sampler, got {type(sampler).__name__}")
    if not isinstance(init, Tensor) or init.ndim < 1 or init.shape[0] < 1:
        raise ValueError("init must be a tensor of shape (n_chains, ...) with at least one chain")
    n_steps = check_int("n_steps", n_steps, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    thin = check_int("thin", thin, 1)
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
    return draws
