"""How good is an estimator at a point: bias, variance, MSE and efficiency from independent replicates.

Formulas, from R replicates g_1..g_R of an estimate of the truth g:

* bias = mean(g_r) - g. ||mean(g_r) - g||^2 overestimates ||bias||^2 by variance / R; ``bias_norm`` subtracts it
  (clipped at 0) and ``bias_norm_raw`` keeps the plain norm;
* variance = sum_r ||g_r - mean(g_r)||^2 / (R - 1) (the unbiased total variance);
* MSE = mean_r ||g_r - g||^2 (equal to ||bias||^2 + variance with the corrected bias), relative MSE = MSE / ||g||^2;
  the per-replicate squared errors ||g_r - g||^2 are kept (``squared_errors``): comparisons between estimators pair
  them replicate by replicate (:mod:`localentropy.diagnostics.compare`), and their mean is the MSE;
* the truth is *near zero* (``truth_near_zero``) when ||g||^2 is below the noise of one gradient evaluation, a
  property of the point, not of the estimator: gamma^2 tr(Cov_rho) (the MSE of one exact Gibbs draw) when the Gibbs
  covariance is given, else, for estimators averaging independent draws (``independent_draws``, e.g. first-order
  smoothing), variance x grad_evals; without either, only a truth of exactly 0 counts. There a relative MSE divides
  by nearly nothing: reports do not show it (they show the MSE and the efficiency ratio);
* cosine between mean(g_r) and g;
* efficiency ratio = MSE / (gamma^2 tr(Cov_rho) / n): the MSE of n exact i.i.d. Gibbs draws is the
  reference, n the estimator's gradient evaluations. It is usually >= 1 but may fall below 1 (negatively
  correlated draws, e.g. underdamped SGHMC): it is reported, never assumed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from torch import Tensor


@dataclass
class EstimatorQuality:
    replicates: int
    bias: list[float]
    bias_norm: float
    bias_norm_raw: float
    bias_norm_mcse: float
    variance: float
    mse: float
    mse_mcse: float
    relative_mse: float  # not meaningful where truth_near_zero: reports show the MSE and efficiency instead
    cosine: float
    truth_norm: float
    truth_near_zero: bool
    squared_errors: list[float]
    efficiency_ratio: float | None
    grad_evals: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _flat(values: Tensor | np.ndarray, name: str) -> np.ndarray:
    array = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, float)
    if array.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    return array


def exact_draws_mse(gamma: float, gibbs_cov: Tensor | np.ndarray, n: float) -> float:
    """MSE of gamma (x - mean of n exact i.i.d. draws from rho): gamma^2 tr(Cov_rho) / n."""
    cov = _flat(gibbs_cov, "gibbs_cov")
    return float(gamma**2 * np.trace(cov.reshape(math.isqrt(cov.size), -1)) / n)


def estimator_quality(
    estimates: Tensor | np.ndarray,
    truth: Tensor | np.ndarray,
    *,
    grad_evals: float,
    seconds: float = float("nan"),
    gamma: float | None = None,
    gibbs_cov: Tensor | np.ndarray | None = None,
    independent_draws: bool = False,
) -> EstimatorQuality:
    """Quality of R replicate estimates (shape (R, ...)) of ``truth`` (shape (...)).

    ``grad_evals`` and ``seconds`` are per replicate. The efficiency ratio needs ``gamma`` and ``gibbs_cov``
    (the Gibbs measure's covariance, (d, d) with d the number of coordinates).
    """
    est = _flat(estimates, "estimates")
    g = _flat(truth, "truth").reshape(-1)
    n_rep = est.shape[0]
    if n_rep < 2:
        raise ValueError(f"estimator_quality needs at least 2 replicates, got {n_rep}")
    est = est.reshape(n_rep, -1)
    if est.shape[1] != g.size:
        raise ValueError(f"estimates have {est.shape[1]} coordinates per replicate but truth has {g.size}")
    mean = est.mean(axis=0)
    bias = mean - g
    centred = est - mean
    variance = float((centred**2).sum() / (n_rep - 1))
    raw_sq = float(bias @ bias)
    bias_sq = max(raw_sq - variance / n_rep, 0.0)
    cov_of_mean = centred.T @ centred / (n_rep - 1) / n_rep
    if raw_sq > 0:
        bias_mcse = math.sqrt(max(float(bias @ cov_of_mean @ bias), 0.0) / raw_sq)
    else:
        bias_mcse = math.sqrt(float(np.trace(cov_of_mean)))
    squared_errors = ((est - g) ** 2).sum(axis=1)
    mse = float(squared_errors.mean())
    truth_sq = float(g @ g)
    denominator = math.sqrt(float(mean @ mean) * truth_sq)
    efficiency, one_evaluation = None, variance * max(float(grad_evals), 1.0) if independent_draws else 0.0
    if gamma is not None and gibbs_cov is not None:
        one_evaluation = exact_draws_mse(gamma, gibbs_cov, 1.0)
        reference = exact_draws_mse(gamma, gibbs_cov, grad_evals) if grad_evals > 0 else math.inf
        efficiency = mse / reference if reference > 0 else float("nan")  # a degenerate Gibbs measure (T = 0)
    near_zero = bool(truth_sq < one_evaluation or truth_sq == 0)
    return EstimatorQuality(
        replicates=n_rep,
        bias=bias.tolist(),
        bias_norm=math.sqrt(bias_sq),
        bias_norm_raw=math.sqrt(raw_sq),
        bias_norm_mcse=bias_mcse,
        variance=variance,
        mse=mse,
        mse_mcse=float(squared_errors.std(ddof=1) / math.sqrt(n_rep)),
        relative_mse=mse / truth_sq if truth_sq > 0 else float("inf"),
        cosine=float(mean @ g) / denominator if denominator > 0 else float("nan"),
        truth_norm=math.sqrt(truth_sq),
        truth_near_zero=near_zero,
        squared_errors=squared_errors.tolist(),
        efficiency_ratio=efficiency,
        grad_evals=float(grad_evals),
        seconds=float(seconds),
    )
