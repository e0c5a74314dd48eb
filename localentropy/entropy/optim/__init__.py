"""Entropy-SGD, Entropy-Adam, Parle and the LPF-SGD rival as ``torch.optim.Optimizer`` subclasses."""

from localentropy.entropy.optim.base import DirectionOptimizer, DivergenceError
from localentropy.entropy.optim.entropy_sgd import EntropyAdam, EntropyOptimizer, EntropySGD
from localentropy.entropy.optim.lpf_sgd import LPFSGD, filter_norms
from localentropy.entropy.optim.parle import Parle, ReplicaSyncError

__all__ = [
    "LPFSGD",
    "DirectionOptimizer",
    "DivergenceError",
    "EntropyAdam",
    "EntropyOptimizer",
    "EntropySGD",
    "Parle",
    "ReplicaSyncError",
    "filter_norms",
]
