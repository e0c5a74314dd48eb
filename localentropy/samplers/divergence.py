"""Chains that became NaN or infinite: found after the run (no per-step host synchronisation), reported by name.

A sampler step is a smooth map of finite numbers, so a chain that is non-finite once stays so (NaN and inf
propagate; MALA rejects such proposals and stays finite). Checking what a run kept is therefore enough to find
every diverged chain, and the first non-finite kept draw locates the step to within ``thin`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

DIVERGENCE_POLICIES = ("raise", "drop")


class SamplerDivergenceError(FloatingPointError):
    """Some chains of a sampler became NaN or infinite. ``diverged`` is a bool tensor, one entry per chain;
    ``first_step`` the first step (1-based) at which a kept iterate was non-finite, when known."""

    def __init__(self, message: str, diverged: Tensor | None = None, first_step: int | None = None) -> None:
        super().__init__(message)
        self.diverged = diverged
        self.first_step = first_step


def nonfinite_chains(values: Tensor) -> Tensor:
    """One bool per chain (the leading dimension): whether any entry of that chain is NaN or infinite."""
    return ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)


def first_nonfinite_index(values: Tensor) -> Tensor:
    """Per chain of ``values`` (n_chains, n_draws, ...), the first draw index holding a non-finite entry (-1: none)."""
    bad = ~torch.isfinite(values.reshape(values.shape[0], values.shape[1], -1)).all(dim=2)
    index = torch.argmax(bad.to(torch.int8), dim=1)
    return torch.where(bad.any(dim=1), index, torch.full_like(index, -1))


def divergence_message(sampler: object, n_diverged: int, n_chains: int, where: str) -> str:
    """The error text: which sampler, its step size, when, how many chains, and what to try."""
    step_size = getattr(sampler, "step_size", None)
    at = "" if step_size is None else f" at step_size={step_size:g}"
    return (
        f"{type(sampler).__name__}{at}: {n_diverged} of {n_chains} chains became NaN or infinite {where}. "
        "Try a smaller step size: the accuracy atlas (docs/samplers.md) gives each sampler's measured stability "
        "limit, and steps at a fraction of it (about 0.1 to 0.5) stay stable on its targets; or pass "
        "on_divergence='drop' to keep the finite chains and count the others."
    )


@dataclass
class SampleResult:
    """What ``sample(..., on_divergence="drop")`` returns.

    draws: (n_kept, n_draws, ...) the chains that stayed finite; diverged: (n_chains,) bool, which chains were
    dropped; first_nonfinite_step: (n_chains,) the step (1-based) of the first non-finite kept draw of each chain,
    or -1 (a chain that diverged during burn-in, or after its last kept draw, reports its first kept step).
    """

    draws: Tensor
    diverged: Tensor
    first_nonfinite_step: Tensor

    @property
    def n_diverged(self) -> int:
        return int(self.diverged.sum())
