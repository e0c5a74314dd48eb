"""Samplers by name, so that a config file can choose one with a single line.

This module knows only the :class:`Sampler` base class: the built-in samplers are registered by the package's
``__init__`` (so a wrapper such as Cyclical can build its wrapped sampler by name without an import cycle).
"""

from __future__ import annotations

import inspect
from typing import Any

from localentropy.samplers.base import Sampler

_REGISTRY: dict[str, type[Sampler]] = {}


def register_sampler(name: str, cls: type[Sampler], *, overwrite: bool = False) -> type[Sampler]:
    """Make ``cls`` available to :func:`make_sampler` as ``name`` (lowercase letters, digits, '-', '_')."""
    if (
        not isinstance(name, str)
        or not name
        or name != name.lower()
        or not name.replace("-", "").replace("_", "").isalnum()
    ):
        raise ValueError(f"sampler name must be a non-empty lowercase identifier, got {name!r}")
    if not (inspect.isclass(cls) and issubclass(cls, Sampler)):
        raise TypeError(f"register_sampler needs a subclass of localentropy.samplers.Sampler, got {cls!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls and not overwrite:
        raise ValueError(f"a sampler named {name!r} is already registered ({_REGISTRY[name].__name__})")
    _REGISTRY[name] = cls
    return cls


def available_samplers() -> list[str]:
    """The registered sampler names, sorted."""
    return sorted(_REGISTRY)


def sampler_class(name: str) -> type[Sampler]:
    if name not in _REGISTRY:
        valid = ", ".join(available_samplers())
        raise ValueError(f"unknown sampler {name!r}; available samplers: {valid}")
    return _REGISTRY[name]


def sampler_hyperparameters(name: str) -> dict[str, Any]:
    """The hyperparameters of a registered sampler with their defaults (``inspect.Parameter.empty`` if required)."""
    params = inspect.signature(sampler_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self"}


def make_sampler(name: str, **hyperparameters: Any) -> Sampler:
    """Construct the sampler registered as ``name``; unknown or missing hyperparameters raise ValueError."""
    cls = sampler_class(name)
    accepted = sampler_hyperparameters(name)
    unknown = sorted(set(hyperparameters) - set(accepted))
    missing = sorted(k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in hyperparameters)
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"unknown hyperparameter(s) {', '.join(unknown)}")
        if missing:
            problems.append(f"missing required hyperparameter(s) {', '.join(missing)}")
        raise ValueError(f"sampler {name!r}: {'; '.join(problems)}; valid hyperparameters: {', '.join(accepted)}")
    return cls(**hyperparameters)
