"""Diagnostics: estimator quality against the truth, comparisons with uncertainty
(paired intervals, best sets), inner-chain ESS / R-hat / MCSE (ArviZ), and KSD."""

from localentropy.diagnostics.chains import ChainSummary, chain_summary, per_coordinate, to_datatree
from localentropy.diagnostics.compare import (
    BestSet,
    PairedDifference,
    best_set,
    mean_interval,
    paired_difference,
    verdict_text,
)
from localentropy.diagnostics.ksd import imq_ksd
from localentropy.diagnostics.quality import EstimatorQuality, estimator_quality, exact_draws_mse

__all__ = [
    "BestSet",
    "ChainSummary",
    "EstimatorQuality",
    "PairedDifference",
    "best_set",
    "chain_summary",
    "estimator_quality",
    "exact_draws_mse",
    "imq_ksd",
    "mean_interval",
    "paired_difference",
    "per_coordinate",
    "to_datatree",
    "verdict_text",
]
