"""Cyclical step sizes for any sampler (Zhang, Li, Zhang, Chen & Wilson, ICLR 2020)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import torch

from localentropy._checks import check_int, check_positive, check_range
from localentropy.samplers.base import Position, Sampler
from localentropy.samplers.registry import make_sampler

_OWN = ("sampler", "n_cycles", "total_steps", "exploration_fraction")


class CyclicalSchedule:
    r"""The cosine cyclical step size of Zhang et al. (2020), eq. (1), for steps k = 1, 2, ...:

        h_k = h0 / 2 (cos(pi mod(k - 1, L) / L) + 1),    L = ceil(K / M),

    with h0 the largest step size, M the number of cycles and K the total number of steps. Each cycle starts at
    h0 and decays to nearly 0; steps beyond K continue the same period. ``phase(k)`` = mod(k - 1, L) / L is the
    position within the cycle, in [0, 1).
    """

    def __init__(self, base_step_size: float, n_cycles: int, total_steps: int) -> None:
        self.base_step_size = check_positive("base_step_size", base_step_size)
        self.n_cycles = check_int("n_cycles", n_cycles, 1)
        self.total_steps = check_int("total_steps", total_steps, 1)
        if self.n_cycles > self.total_steps:
            raise ValueError(f"n_cycles must be <= total_steps ({self.total_steps}), got {self.n_cycles}")
        self.cycle_length = math.ceil(self.total_steps / self.n_cycles)

    def phase(self, k: int) -> float:
        return ((k - 1) % self.cycle_length) / self.cycle_length

    def __call__(self, k: int) -> float:
        return self.base_step_size / 2 * (math.cos(math.pi * self.phase(k)) + 1.0)

    def __repr__(self) -> str:
        return f"CyclicalSchedule({self.base_step_size!r}, n_cycles={self.n_cycles}, total_steps={self.total_steps})"


class Cyclical(Sampler):
    r"""Cyclical SG-MCMC: any sampler run with the cosine cyclical step size of CyclicalSchedule.

    Step k (k = state.step + 1) runs ``sampler``'s update with step size h_k = h0 / 2 (cos(pi r_k) + 1), r_k =
    mod(k - 1, L) / L, L = ceil(total_steps / n_cycles), h0 = ``sampler.step_size``. Each cycle has an
    *exploration* phase, r_k < beta (``exploration_fraction``), run at temperature 0 (the base sampler's
    optimiser: large steps, no noise, to find a new mode), then a *sampling* phase at the base sampler's
    temperature, whose draws are the ones to keep (``sampling_phase(k)``; Zhang et al. collect samples there).
    beta = 0 (the default) samples throughout.

    The state is the base sampler's own (``init`` delegates), so the schedule restarts with a fresh ``init``.
    The wrapper drives a private copy of ``sampler``: before each step it sets that copy's ``step_size`` and
    ``temperature`` attributes (no object is built per step; h_k is in (0, h0], a valid step size). A base
    sampler must therefore compute anything derived from them inside ``step`` (all built-in samplers do).
    Extra keyword arguments of ``step`` (MomentumSGLD's ``force=``) are passed on.

    ``sampler`` is a Sampler or, for configs, a mapping {"name": ..., **hyperparameters} given to
    ``make_sampler``: ``make_sampler("cyclical", sampler={"name": "sgld", "step_size": 0.1}, n_cycles=4,
    total_steps=1000)``. ``temperature``, ``noise`` and ``step_size`` (h0) read through to it, and
    ``replace(temperature=...)`` changes the base sampler's hyperparameters (its own ones: n_cycles, ...).

    Reference: R. Zhang, C. Li, J. Zhang, C. Chen and A. G. Wilson, "Cyclical stochastic gradient MCMC for
    Bayesian deep learning", ICLR 2020.
    """

    name = "cyclical"
    wraps_sampler: ClassVar[bool] = True

    def __init__(
        self,
        sampler: Sampler | Mapping[str, Any],
        n_cycles: int,
        total_steps: int,
        exploration_fraction: float = 0.0,
    ) -> None:
        if isinstance(sampler, Mapping):
            options = dict(sampler)
            if "name" not in options:
                raise ValueError("sampler given as a mapping needs a 'name' entry (a registered sampler)")
            sampler = make_sampler(options.pop("name"), **options)
        if not isinstance(sampler, Sampler) or isinstance(sampler, Cyclical):
            raise ValueError(f"sampler must be a (non-cyclical) localentropy Sampler or a mapping, got {sampler!r}")
        if "step_size" not in sampler.hyperparameters:
            raise ValueError(f"sampler must have a step_size hyperparameter, {type(sampler).__name__} has none")
        self.sampler = sampler
        self.schedule = CyclicalSchedule(sampler.step_size, n_cycles, total_steps)
        self.n_cycles, self.total_steps = self.schedule.n_cycles, self.schedule.total_steps
        self.exploration_fraction = check_range("exploration_fraction", exploration_fraction, 0.0, 1.0, high_open=True)
        self._driven = sampler.replace()

    @property
    def temperature(self) -> float:  # type: ignore[override]
        return self.sampler.temperature

    @property
    def noise(self) -> str:  # type: ignore[override]
        return self.sampler.noise

    # The capabilities are the wrapped sampler's (its step runs, with its step keywords: force= included).
    @property
    def gradients_per_step(self) -> int:  # type: ignore[override]
        return self.sampler.gradients_per_step

    @property
    def elementwise(self) -> bool:  # type: ignore[override]
        return self.sampler.elementwise

    @property
    def accepts_force(self) -> bool:  # type: ignore[override]
        return self.sampler.accepts_force

    @property
    def step_size(self) -> float:
        """h0, the largest step size (the first of each cycle)."""
        return self.sampler.step_size

    def sampling_phase(self, k: int) -> bool:
        """Whether step k (1-based: the step that makes ``state.step == k``) is in a sampling phase."""
        return self.schedule.phase(k) >= self.exploration_fraction

    def replace(self, **changes: Any) -> Self:
        own = {k: changes.pop(k) for k in list(changes) if k in _OWN}
        sampler = own.pop("sampler", self.sampler)
        if changes:
            sampler = sampler.replace(**changes)
        return type(self)(**{**self.hyperparameters, **own, "sampler": sampler})

    def init(self, position: Position) -> Any:
        return self.sampler.init(position)

    def reset(self, state: Any) -> Any:
        return self.sampler.reset(state)

    def step(
        self,
        state: Any,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
        **options: Any,
    ) -> Any:
        k = state.step + 1
        driven = self._driven
        driven.step_size = self.schedule(k)
        driven.temperature = self.sampler.temperature if self.sampling_phase(k) else 0.0
        return driven.step(state, grad, generator, noise=noise, **options)
