r"""Each sampler's bias as an LLC estimator against the exact finite-nbeta values of the 2-D toys.

Step sizes are given as a fraction c of each sampler's natural scale, so that one c means about the same
stiffness for every sampler: with M = 2 nbeta + localization, the curvature of U at w* for the regular toy (the
stiffest direction of all three toys near w*),

* first-order samplers (SGLD, MALA, momentum SGLD, SGHMC's learning rate eta): step_size = c / M (SGLD is stable
  for c < 2 and its LLC on the regular toy is exactly lambda / (1 - c / 2): its stationary covariance is
  T M^-1 (I - h M / 2)^-1);
* second-order samplers (BAOAB, SGNHT, whose step is the leapfrog h with stability h < 2 / sqrt(M)):
  step_size = c / sqrt(M);
* pSGLD: step_size = c / sqrt(M) (the preconditioner G ~ 1 / |grad U| ~ 1 / sqrt(M) at the measure's scale), with
  ``debias=True`` and ``damping=1`` (the chains start at a critical point, where the gradient is 0 and the default
  damping 1e-5 makes the first step 1e5 times too large).

Every run at one setting spends the same number of gradient evaluations (MALA takes half the steps). The bias is
estimate - exact with the estimate's MCSE; a run that turns non-finite is reported as diverged.
``benchmarks/llc_bias.py`` prints the tables that docs/diagnostics.md quotes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from localentropy.llc.estimate import LLCResult, estimate_llc
from localentropy.llc.toys import exact_llc, toy
from localentropy.samplers import SamplerDivergenceError, sampler_class

__all__ = ["SAMPLER_SETTINGS", "BiasRow", "bias_row", "sampler_options", "toy_estimates"]

SAMPLER_SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgld": ("1/M", {}),
    "mala": ("1/M", {}),
    "msgld": ("1/M", {"momentum": 0.5}),
    "sghmc": ("1/M", {"friction": 0.1}),
    "baoab": ("1/sqrt(M)", {"friction": 1.0}),
    "sgnht": ("1/sqrt(M)", {}),
    "psgld": ("1/sqrt(M)", {"debias": True, "damping": 1.0}),
}


def sampler_options(name: str, c: float, nbeta: float, localization: float) -> dict[str, Any]:
    """The options of sampler ``name`` at step-size fraction ``c`` (module docstring)."""
    scale, extra = SAMPLER_SETTINGS[name]
    m = 2 * nbeta + localization
    return {"step_size": c / m if scale == "1/M" else c / math.sqrt(m), **extra}


@dataclass(frozen=True)
class BiasRow:
    toy: str
    nbeta: float
    localization: float
    sampler: str
    c: float
    chains: int
    steps: int
    replicates: int
    exact: float
    estimate: float  # mean over replicates (NaN if any diverged)
    bias: float
    bias_se: float  # sd over replicates / sqrt(R) (the replicate is the unit), or the MCSE when R = 1
    mean_mcse: float  # the estimator's own MCSE, averaged over replicates
    diverged: int  # 1 if a replicate diverged (the row's numbers are then NaN)


def toy_estimates(
    toy_name: str,
    sampler: str,
    c: float,
    seeds: Sequence[int],
    *,
    nbeta: float,
    localization: float,
    chains: int,
    grad_evals_per_chain: int,
    burn_fraction: float = 0.2,
) -> tuple[list[LLCResult], int] | None:
    """One :func:`estimate_llc` of the toy per seed at step-size fraction ``c``, and the steps per chain; None if any
    replicate diverged. MALA takes half the steps of the others (two gradients per step)."""
    problem = toy(toy_name)
    steps = grad_evals_per_chain // int(sampler_class(sampler).gradients_per_step)
    options = sampler_options(sampler, c, nbeta, localization)
    results = []
    for seed in seeds:
        try:
            result = estimate_llc(
                problem.loss,
                torch.zeros(2, dtype=torch.float64),
                nbeta=nbeta,
                localization=localization,
                sampler=sampler,
                sampler_options=options,
                chains=chains,
                steps=steps,
                burn_in=int(burn_fraction * steps),
                generator=torch.Generator().manual_seed(seed),
            )
        except SamplerDivergenceError:
            return None
        if not math.isfinite(result.mean):
            return None
        results.append(result)
    return results, steps


def bias_row(
    toy_name: str,
    sampler: str,
    c: float,
    *,
    nbeta: float,
    localization: float,
    chains: int,
    grad_evals_per_chain: int,
    replicates: int = 1,
    burn_fraction: float = 0.2,
    seed: int = 0,
) -> BiasRow:
    """Estimate the LLC of toy ``toy_name`` ``replicates`` times on fresh seeds and compare with the exact value."""
    exact = exact_llc(toy(toy_name), nbeta, localization)
    seeds = [seed * 1_000_003 + r for r in range(replicates)]
    run = toy_estimates(
        toy_name,
        sampler,
        c,
        seeds,
        nbeta=nbeta,
        localization=localization,
        chains=chains,
        grad_evals_per_chain=grad_evals_per_chain,
        burn_fraction=burn_fraction,
    )
    if run is None:
        steps = grad_evals_per_chain // int(sampler_class(sampler).gradients_per_step)
        est = se = mcse = math.nan
    else:
        results, steps = run
        estimates = np.array([r.mean for r in results])
        est, mcse = float(estimates.mean()), float(np.mean([r.mcse for r in results]))
        se = float(estimates.std(ddof=1) / math.sqrt(len(results))) if len(results) > 1 else results[0].mcse
    return BiasRow(
        toy_name,
        nbeta,
        localization,
        sampler,
        c,
        chains,
        steps,
        replicates,
        exact,
        est,
        est - exact,
        se,
        mcse,
        int(run is None),
    )
