r"""What a comparison estimates (``estimand``) and its truth: the local-entropy gradient, or the LLC at w*.

``estimand = "gradient"``: each replicate is g(x) = gamma (x - <x'>) from the estimator's chains, scored against
the problem's exact gradient. ``estimand = "llc"``: the same chains (the local-entropy Gibbs measure at x = w*,
temperature T and scope gamma is the LLC measure at nbeta = 1 / T and localization = gamma / T:
:mod:`localentropy.llc.problems`) give lambda_hat = nbeta (mean of L over the kept draws - L(w*)), summarised by
:func:`localentropy.llc.estimate.summarise` (the LLC's own estimator: its MCSE, ESS and R-hat of the trace of L, and
its rule for diverged chains, raised here: a replicate with a chain that turned non-finite or ran away has diverged,
and so has its record). It is scored against :func:`localentropy.llc.problems.llc_truth`. Everything else (budgets,
tuning alike, paired replicates, verdicts, chain diagnostics) is the comparison's, unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor

from localentropy.diagnostics import chain_summary
from localentropy.entropy import LocalEntropyEstimator
from localentropy.entropy.estimators import EstimateResult
from localentropy.entropy.problems import Problem
from localentropy.llc.estimate import LLCResult, summarise
from localentropy.llc.problems import TRUTHS, llc_truth, measure_settings, truth_kind
from localentropy.samplers import SamplerDivergenceError

__all__ = ["LLCEstimate", "estimate", "llc_chains", "llc_metrics", "truth", "truth_text"]


@dataclasses.dataclass
class LLCEstimate(EstimateResult):
    """An estimate whose ``grad`` is the one-element tensor [lambda_hat] (``chain_grads``: each chain's), and the
    :class:`~localentropy.llc.LLCResult` behind it."""

    llc: LLCResult | None = None


def truth(estimand: str, problem: Problem, x: Tensor, gamma: float, temperature: float) -> Tensor:
    """The exact value the replicates are scored against: g(x), or [lambda(w* = x)]."""
    if estimand == "llc":
        return torch.tensor([llc_truth(problem, x, gamma, temperature)], dtype=torch.float64)
    return problem.local_entropy_grad(x, gamma, temperature)


def estimate(
    estimand: str,
    estimator: Any,
    problem: Problem,
    x: Tensor,
    chains: int,
    generator: torch.Generator,
) -> EstimateResult:
    """One replicate's estimate of the estimand (``chains`` chains of ``estimator`` around x)."""
    result = estimator.estimate(x, chains, generator)
    if estimand != "llc":
        return result
    assert isinstance(estimator, LocalEntropyEstimator) and result.draws is not None
    gamma, temperature = estimator.gamma, estimator.temperature
    nbeta, localization = measure_settings(gamma, temperature)
    draws = result.draws
    trace = problem.loss(draws.reshape(-1, x.shape[-1])).reshape(draws.shape[:2])
    sampler = estimator.sampler

    def diverged(n_bad: int) -> SamplerDivergenceError:
        return SamplerDivergenceError(
            f"{n_bad} of {chains} chains of {sampler!r} diverged on the LLC measure (nbeta {nbeta:g}, localization "
            f"{localization:g}): not finite, or ran away (lambda_c above 100 x max(median |lambda_c|, d / 2)); "
            "use a smaller step size"
        )

    llc = summarise(
        trace.detach().cpu().numpy(),
        float(problem.loss(x)),
        nbeta=nbeta,
        localization=localization,
        sampler=type(sampler).__name__,
        sampler_options={},
        grad_evals=result.grad_evals,
        dim=int(x.shape[-1]),
        divergence=diverged,
    )
    return LLCEstimate(
        grad=torch.tensor([llc.mean], dtype=torch.float64),
        chain_grads=torch.as_tensor(llc.per_chain, dtype=torch.float64)[:, None],
        draws=draws,
        grad_evals=result.grad_evals,
        seconds=result.seconds,
        llc=llc,
    )


def truth_text(problem: Problem, x: Tensor, gamma: float, temperature: float) -> str:
    """What the LLC's truth is on this problem at x and (gamma, T): exact at finite nbeta, a Monte Carlo reference
    at finite nbeta, or Aoyagi's limit."""
    return TRUTHS[truth_kind(problem, x, gamma, temperature)]


def llc_metrics(results: list[LLCResult], truth_value: float) -> dict[str, Any]:
    """The LLC's own figures of a record: the measure, the truth, the estimates' mean and mean MCSE, and the ESS
    and R-hat of the first replicate's trace of L."""
    first = results[0]
    return {
        "nbeta": first.nbeta,
        "localization": first.localization,
        "llc_truth": truth_value,
        "llc_mean": float(np.mean([r.mean for r in results])),
        "llc_mean_mcse": float(np.mean([r.mcse for r in results])),
        "llc_ess_bulk": first.ess_bulk,
        "llc_rhat": first.rhat,
    }


def llc_chains(result: LLCResult) -> dict[str, Any]:
    """The chain diagnostics of the first replicate: ArviZ's ESS, R-hat and MCSE of its trace of L."""
    return chain_summary(result.loss_trace[:, :, None]).as_dict()
