"""localentropy: Entropy-SGD, its inner-loop samplers and direct-smoothing rivals, measured."""

from importlib.metadata import PackageNotFoundError, version

from localentropy.entropy import LPFSGD, EntropyAdam, EntropyOptimizer, EntropySGD, Parle, make_closure
from localentropy.samplers import available_samplers, make_sampler, register_sampler, sample

try:
    __version__ = version("localentropy")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"

__all__ = [
    "LPFSGD",
    "EntropyAdam",
    "EntropyOptimizer",
    "EntropySGD",
    "Parle",
    "__version__",
    "available_samplers",
    "make_closure",
    "make_sampler",
    "register_sampler",
    "sample",
]
