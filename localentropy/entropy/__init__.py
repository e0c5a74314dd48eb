"""The local-entropy gradient estimated by any sampler, direct-smoothing baselines, and problems with known truths."""

from localentropy.entropy import problems
from localentropy.entropy.estimators import EstimateResult, GaussianSmoothingEstimator, LocalEntropyEstimator
from localentropy.entropy.optim import LPFSGD, EntropyAdam, EntropyOptimizer, EntropySGD
from localentropy.entropy.presets import INNER_LOOP_PRESETS, InnerLoopConvention, inner_loop_settings
from localentropy.entropy.training import LoaderClosure, SplitBatchClosure, make_closure, split_batch

__all__ = [
    "INNER_LOOP_PRESETS",
    "LPFSGD",
    "EntropyAdam",
    "EntropyOptimizer",
    "EntropySGD",
    "EstimateResult",
    "GaussianSmoothingEstimator",
    "InnerLoopConvention",
    "LoaderClosure",
    "LocalEntropyEstimator",
    "SplitBatchClosure",
    "inner_loop_settings",
    "make_closure",
    "problems",
    "split_batch",
]
