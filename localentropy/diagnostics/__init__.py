"""Diagnostics: estimator quality against the truth, inner-chain ESS / R-hat / MCSE (ArviZ), and KSD."""

from localentropy.diagnostics.chains import ChainSummary, chain_summary, per_coordinate, to_datatree
from localentropy.diagnostics.ksd import imq_ksd
from localentropy.diagnostics.quality import EstimatorQuality, estimator_quality, exact_draws_mse

__all__ = [
    "ChainSummary",
    "EstimatorQuality",
    "chain_summary",
    "estimator_quality",
    "exact_draws_mse",
    "imq_ksd",
    "per_coordinate",
    "to_datatree",
]
