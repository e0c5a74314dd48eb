"""Entropy-SGD, Entropy-Adam and the LPF-SGD rival as ``torch.optim.Optimizer`` subclasses."""

from localentropy.entropy.optim.base import DirectionOptimizer, DivergenceError
from localentropy.entropy.optim.entropy_sgd import EntropyAdam, EntropyOptimizer, EntropySGD
from localentropy.entropy.optim.lpf_sgd import LPFSGD, filter_norms

__all__ = [
    "LPFSGD",
    "DirectionOptimizer",
    "DivergenceError",
    "EntropyAdam",
    "EntropyOptimizer",
    "EntropySGD",
    "filter_norms",
]
