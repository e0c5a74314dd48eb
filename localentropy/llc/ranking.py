r"""Which sampler estimates the LLC best: every sampler tuned alike, then compared on fresh replicates.

For one toy, (nbeta, localization) and budget of gradient evaluations per chain:

1. **Tuning, alike for every sampler**: each step-size fraction c of :data:`~localentropy.llc.bias.SAMPLER_SETTINGS`'
   scale (:func:`~localentropy.llc.bias.sampler_options`) is run on ``tuning_replicates`` replicates whose seeds lie
   in the tuning range (1 000 000 + r, never used for evaluation); the c with the lowest mean squared error against
   the exact value is kept (a c that diverges on any replicate is out).
2. **Evaluation** at the chosen c on ``replicates`` fresh replicates, seeds 0 .. R - 1 shared by every sampler (the
   replicate is the unit; seeds paired). Each replicate's squared error (estimate - exact)^2 goes to
   :func:`~localentropy.diagnostics.compare.best_set`: Holm-adjusted paired t-tests against the lowest mean squared
   error, so the verdict is "lowest: x" only when x is separated from every other sampler, else "tied".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from localentropy.diagnostics.compare import BestSet, best_set
from localentropy.llc.bias import SAMPLER_SETTINGS, toy_estimates
from localentropy.llc.toys import exact_llc, toy

__all__ = ["SamplerRanking", "rank_samplers"]

TUNING_SEEDS = 1_000_000


@dataclass(frozen=True)
class SamplerRanking:
    toy: str
    nbeta: float
    localization: float
    exact: float
    evals_per_chain: int
    chains: int
    chosen: dict[str, float | None]  # sampler -> tuned c (None: diverged at every c)
    errors: dict[str, list[float]]  # sampler -> estimate - exact, one per evaluation replicate
    verdict: BestSet  # on the squared errors

    def rmse(self, sampler: str) -> float:
        e = np.asarray(self.errors[sampler])
        return float(np.sqrt(np.mean(e**2))) if e.size else math.nan


def _errors(name, sampler, c, nbeta, loc, chains, evals, seeds) -> list[float] | None:
    run = toy_estimates(
        name, sampler, c, seeds, nbeta=nbeta, localization=loc, chains=chains, grad_evals_per_chain=evals
    )
    truth = exact_llc(toy(name), nbeta, loc)
    return None if run is None else [r.mean - truth for r in run[0]]


def rank_samplers(
    name: str,
    *,
    nbeta: float,
    localization: float,
    evals_per_chain: int,
    chains: int = 16,
    fractions: Sequence[float] = (1.0, 0.3, 0.1),
    samplers: Sequence[str] = tuple(SAMPLER_SETTINGS),
    tuning_replicates: int = 2,
    replicates: int = 10,
) -> SamplerRanking:
    """Tune each sampler's step-size fraction on tuning seeds, then compare on fresh paired replicates."""
    chosen: dict[str, float | None] = {}
    errors: dict[str, list[float]] = {}
    tuning = [TUNING_SEEDS + r for r in range(tuning_replicates)]
    for sampler in samplers:
        scores = {}
        for c in fractions:
            e = _errors(name, sampler, c, nbeta, localization, chains, evals_per_chain, tuning)
            if e is not None:
                scores[c] = float(np.mean(np.square(e)))
        chosen[sampler] = min(scores, key=scores.get) if scores else None
        if chosen[sampler] is not None:
            e = _errors(name, sampler, chosen[sampler], nbeta, localization, chains, evals_per_chain, range(replicates))
            errors[sampler] = e if e is not None else []
        else:
            errors[sampler] = []
    squared = {s: np.square(e) if e else np.array([math.nan]) for s, e in errors.items()}
    return SamplerRanking(
        name,
        nbeta,
        localization,
        exact_llc(toy(name), nbeta, localization),
        evals_per_chain,
        chains,
        chosen,
        errors,
        best_set(squared, unit="replicate"),
    )
