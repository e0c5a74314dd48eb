"""The local-entropy gradient estimated by any sampler, direct-smoothing baselines, and problems with known truths."""

from localentropy.entropy import problems
from localentropy.entropy.estimators import EstimateResult, GaussianSmoothingEstimator, LocalEntropyEstimator
from localentropy.entropy.presets import INNER_LOOP_PRESETS, InnerLoopConvention, inner_loop_settings

__all__ = [
    "INNER_LOOP_PRESETS",
    "EstimateResult",
    "GaussianSmoothingEstimator",
    "InnerLoopConvention",
    "LocalEntropyEstimator",
    "inner_loop_settings",
    "problems",
]
