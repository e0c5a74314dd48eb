"""Which samplers the atlas measures, and how it builds one at a given step size for a given target.

Every registered sampler is an entry (a user's sampler registered by name appears without code changes), built
with ``step_size`` and ``temperature`` = 1 and the atlas's fill-ins for hyperparameters it knows: ``potential`` and
``grad_fn`` (from the target), ``sampler`` (a wrapper such as ``cyclical`` wraps SGLD at the step size),
``total_steps`` (the run's length) and ``n_cycles``. A sampler with another required hyperparameter is listed as
skipped, with the reason. A few variants of the built-in samplers are added (pSGLD frozen or at beta = 0.999,
MomentumSGLD with Nesterov momentum, SGHMC with its running gradient-noise estimate).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from localentropy.experiments.atlas.targets import Target
from localentropy.samplers import Sampler, available_samplers, make_sampler, sampler_hyperparameters

FREEZE_AFTER = 200  # pSGLD's adaptation in the atlas: two averaging windows at beta = 0.99
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("psgld beta=0.999", "psgld", {"beta": 0.999}),
    ("psgld frozen", "psgld", {"freeze_after": FREEZE_AFTER, "debias": True, "damping": 0.03}),
    ("msgld nesterov", "msgld", {"nesterov": True}),
    # SGHMC's gradient-noise estimate, at the default friction (where the atlas's gradient noise exceeds the whole
    # noise budget, so beta_hat is clipped) and at friction 0.5 (where it fits), with its no-estimate baseline
    ("sghmc running", "sghmc", {"noise_estimate": "running"}),
    ("sghmc friction=0.5", "sghmc", {"friction": 0.5}),
    ("sghmc friction=0.5 running", "sghmc", {"friction": 0.5, "noise_estimate": "running"}),
)


@dataclass(frozen=True)
class Entry:
    """One row family of the atlas: a registered sampler with some hyperparameters fixed."""

    label: str
    name: str
    fixed: dict[str, Any] = field(default_factory=dict)

    def build(self, step_size: float, target: Target, n_steps: int) -> Sampler:
        """The sampler at ``step_size`` for ``target`` (temperature 1)."""
        accepted = sampler_hyperparameters(self.name)
        options: dict[str, Any] = dict(self.fixed)
        fill = {
            "step_size": step_size,
            "temperature": 1.0,
            "potential": target.potential,
            "grad_fn": target.grad,
            "sampler": {"name": "sgld", "step_size": step_size, "temperature": 1.0},
            "total_steps": n_steps,
            "n_cycles": max(1, n_steps // 500),
        }
        for key, value in fill.items():
            if key in accepted and key not in options:
                options[key] = value
        return make_sampler(self.name, **options)

    def missing(self) -> list[str]:
        """Required hyperparameters the atlas cannot fill (the entry is skipped when there are any)."""
        known = {"step_size", "temperature", "potential", "grad_fn", "sampler", "total_steps", "n_cycles"}
        required = [k for k, d in sampler_hyperparameters(self.name).items() if d is inspect.Parameter.empty]
        return [k for k in required if k not in known and k not in self.fixed]

    def adaptation_steps(self) -> int:
        return int(self.fixed.get("freeze_after", 0))


def atlas_entries(names: list[str] | None = None) -> list[Entry]:
    """Every registered sampler (or those in ``names``), then the built-in variants whose sampler is included."""
    chosen = available_samplers() if names is None else names
    entries = [Entry(name, name) for name in chosen]
    entries += [Entry(label, name, dict(fixed)) for label, name, fixed in VARIANTS if name in chosen]
    return entries
