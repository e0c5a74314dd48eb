"""The local-entropy gradient estimated by any sampler, direct-smoothing baselines, and problems with known truths."""

from localentropy.entropy import problems
from localentropy.entropy.estimators import EstimateResult, GaussianSmoothingEstimator, LocalEntropyEstimator
from localentropy.entropy.optim import LPFSGD, EntropyAdam, EntropyOptimizer, EntropySGD, Parle
from localentropy.entropy.presets import (
    INNER_LOOP_PRESETS,
    PARLE_PRESETS,
    InnerLoopConvention,
    ParleConvention,
    inner_loop_settings,
)
from localentropy.entropy.training import LoaderClosure, SplitBatchClosure, make_closure, split_batch

__all__ = [
    "INNER_LOOP_PRESETS",
    "LPFSGD",
    "PARLE_PRESETS",
    "EntropyAdam",
    "EntropyOptimizer",
    "EntropySGD",
    "EstimateResult",
    "GaussianSmoothingEstimator",
    "InnerLoopConvention",
    "LoaderClosure",
    "LocalEntropyEstimator",
    "Parle",
    "ParleConvention",
    "SplitBatchClosure",
    "inner_loop_settings",
    "make_closure",
    "problems",
    "split_batch",
]
