"""The ``[tuning]`` table of comparison and sweep configs: the search, its budget and each method's search space.

A space maps a hyperparameter to a float range (``{low, high, log}``) or a list of ``choices``. The names are the
sampler's declared hyperparameters (``localentropy samplers`` lists them; a wrapper such as ``cyclical`` takes its
wrapped sampler's names too) and, in a sweep, ``lr`` (the optimizer's learning rate). An estimator or optimizer
without a space of its own gets :func:`default_space`: its step size (or SGD's lr) on a log range around the
configured value, and its sampler's own hyperparameters on the ranges of :data:`DEFAULT_RANGES`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from localentropy.experiments.core.config import FieldReader, key_text
from localentropy.samplers import available_samplers, sampler_class, sampler_hyperparameters

METHODS = ("tpe", "sobol", "grid")
PRUNERS = ("none", "successive-halving")
# set by the run itself, never searched: the temperature comes from the config's grid, the rest from the problem
NOT_TUNABLE = ("temperature", "noise", "potential", "grad_fn", "total_steps", "sampler", "damping_placement")
# the step size's default range, as factors of the configured value: wide below, narrower above (divergence)
STEP_RANGE = (0.1, 3.0)
# the samplers' own hyperparameters: (low, high, log) ranges searched when a space is not given
DEFAULT_RANGES: dict[str, dict[str, tuple[float, float, bool]]] = {
    "sghmc": {"friction": (0.01, 1.0, True)},
    "msgld": {"momentum": (0.0, 0.99, False)},
    "psgld": {"beta": (0.9, 0.9999, False), "damping": (1e-6, 1e-1, True)},
    "sgnht": {"diffusion": (0.1, 10.0, True)},
    "baoab": {"friction": (0.1, 10.0, True)},
}
# hard limits a range may not cross, even when extended: (low, high), None for no limit
HARD_LIMITS: dict[str, tuple[float | None, float | None]] = {
    "friction@sghmc": (None, 1.0), "momentum@msgld": (0.0, 0.99), "beta@psgld": (0.0, 0.9999),
    "exploration_fraction@cyclical": (0.0, 1.0),
}  # fmt: skip
POSITIVE = ("step_size", "lr", "damping", "diffusion", "friction")
COMMON_FIELDS = {"method", "trials", "seed", "pruner", "max_extensions", "extension_factor", "seed_offset", "space"}
KIND_FIELDS = {"comparison": {"budget", "replicates", "estimators"}, "sweep": {"seeds", "optimizers"}}
# the tuning seeds lie this far from the evaluation's: a sweep's are seed_offset, seed_offset + 1, ...; a comparison's
# replicates draw from the seeds of config seed + seed_offset
SEED_OFFSET = 1_000_000


@dataclass
class Dimension:
    """One searched hyperparameter: a float range (``log``: searched on a log scale) or a list of choices."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"choices": self.choices} if self.choices is not None else {"low": self.low, "high": self.high,
                                                                            "log": self.log}  # fmt: skip

    def position(self, value: Any) -> float | None:
        """Where ``value`` lies in the range, from 0 (low) to 1 (high); None for choices."""
        if self.choices is not None or self.low is None or self.high is None:
            return None
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


Space = dict[str, Dimension]


@dataclass
class TuningConfig:
    method: str = "tpe"
    trials: int = 20
    seed: int = 0
    pruner: str = "none"
    max_extensions: int = 2
    extension_factor: float = 10.0
    budget: int | None = None
    replicates: int = 4
    estimators: list[str] | None = None
    seeds: int = 1
    seed_offset: int = SEED_OFFSET
    optimizers: list[str] | None = None
    space: dict[str, Space] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["space"] = {k: {n: d.as_dict() for n, d in s.items()} for k, s in self.space.items()}
        return data


def _dimension(r: FieldReader, raw: Any, path: str) -> Dimension | None:
    if not isinstance(raw, dict):
        r.problem(path, raw, "a table {low, high, log} or {choices = [...]}")
        return None
    if "choices" in raw:
        r.unknown(raw, {"choices"}, path)
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices or any(isinstance(c, dict | list) for c in choices):
            r.problem(f"{path}.choices", choices, "a non-empty list of numbers, strings or true/false")
            return None
        return Dimension(choices=list(choices))
    r.unknown(raw, {"low", "high", "log"}, path)
    log = raw.get("log", False)
    if not isinstance(log, bool):
        r.problem(f"{path}.log", log, "true or false")
    low = r.number(r.get(raw, "low", f"{path}.low"), f"{path}.low", 0.0 if log is True else None,
                   low_open=log is True)  # fmt: skip
    high = r.number(r.get(raw, "high", f"{path}.high"), f"{path}.high")
    if low is not None and high is not None and not low < high:
        r.problem(f"{path}.high", high, f"a number > low ({low:g})")
        return None
    return Dimension(low=low, high=high, log=log is True) if low is not None and high is not None else None


def _labels(r: FieldReader, raw: Any, path: str) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        r.problem(path, raw, "a non-empty list of labels")
        return None
    return list(raw)


def parse_tuning(r: FieldReader, raw: Any, kind: str) -> TuningConfig | None:
    """The ``[tuning]`` table of a comparison (``kind="comparison"``) or sweep config; None when absent.

    Space names are checked later against the methods they tune (:func:`check_names`).
    """
    if raw is None:
        return None
    t = r.table(raw, "tuning")
    r.unknown(t, COMMON_FIELDS | KIND_FIELDS[kind], "tuning")
    config = TuningConfig()
    config.method = r.choice(t.get("method", "tpe"), "tuning.method", METHODS) or "tpe"
    config.trials = r.integer(t.get("trials", 20), "tuning.trials", 1, 10_000) or 1
    config.seed = r.integer(t.get("seed", 0), "tuning.seed", 0, 2**62) or 0
    config.pruner = r.choice(t.get("pruner", "none"), "tuning.pruner", PRUNERS) or "none"
    config.max_extensions = r.integer(t.get("max_extensions", 2), "tuning.max_extensions", 0, 10) or 0
    config.extension_factor = r.number(t.get("extension_factor", 10.0), "tuning.extension_factor", 1.0,
                                       low_open=True) or 10.0  # fmt: skip
    if config.trials < config.max_extensions + 1:
        r.problem("tuning.trials", config.trials, f"at least max_extensions + 1 = {config.max_extensions + 1} (the "
                  "trials are run in max_extensions + 1 rounds, a range extended between rounds)")  # fmt: skip
    config.seed_offset = r.integer(t.get("seed_offset", SEED_OFFSET), "tuning.seed_offset", 1, 2**62 - 100) or 1
    if kind == "comparison":
        config.budget = r.integer(t["budget"], "tuning.budget", 1, 10_000_000) if "budget" in t else None
        config.replicates = r.integer(t.get("replicates", 4), "tuning.replicates", 1, 10_000) or 1
        config.estimators = _labels(r, t.get("estimators"), "tuning.estimators")
    else:
        config.seeds = r.integer(t.get("seeds", 1), "tuning.seeds", 1, 100) or 1
        config.optimizers = _labels(r, t.get("optimizers"), "tuning.optimizers")
    if config.pruner != "none" and (config.replicates if kind == "comparison" else config.seeds) < 2:
        unit = "tuning.replicates" if kind == "comparison" else "tuning.seeds"
        r.problems.append(f"tuning.pruner: successive halving prunes between the {unit.split('.')[1]} of a trial; "
                          f"give {unit} >= 2 or pruner = \"none\"")  # fmt: skip
    for key, table in r.table(t.get("space", {}), "tuning.space").items():
        path = f"tuning.space.{key_text(key)}"
        dims = {name: d for name, raw_dim in r.table(table, path).items()
                if (d := _dimension(r, raw_dim, f"{path}.{key_text(name)}")) is not None}  # fmt: skip
        if isinstance(table, dict) and not table:
            r.problem(path, table, "a table of hyperparameters to search (leave it out for the default space)")
        config.space[key] = dims
    return config


def tuned_labels(r: FieldReader, given: list[str] | None, allowed: list[str], path: str,
                 allowed_text: str) -> list[str]:  # fmt: skip
    """The labels ``path`` (``tuning.estimators`` / ``optimizers``) lists, all ``allowed`` ones by default; a label
    not allowed is a problem naming what is (``allowed_text``: what an allowed label is)."""
    labels = given if given is not None else allowed
    for label in labels:
        if label not in allowed:
            r.problems.append(f"{path}: {label!r} is not {allowed_text}; allowed: {', '.join(allowed)}")
    return [label for label in labels if label in allowed]


def tunable_names(sampler: str | None, wrapped: str | None = None, *, preset: bool = False,
                  lr: bool = False) -> list[str]:  # fmt: skip
    """The names a space may search: the sampler's hyperparameters (and a wrapper's sampler's), ``lr`` in sweeps."""
    names = ["lr"] if lr else []
    if preset:
        return [*names, "step_size"]
    for name in (sampler, wrapped):
        if name is not None:
            names += [k for k in sampler_hyperparameters(name) if k not in NOT_TUNABLE and k not in names]
    return names


def check_names(r: FieldReader, config: TuningConfig, targets: dict[str, list[str]], samplers: dict[str, str | None],
                what: str) -> dict[str, Space]:  # fmt: skip
    """Check each given space's key (a tuned label, or a registered sampler) and names; return spaces by label.

    ``targets`` maps each tuned label to its tunable names, ``samplers`` each label to its sampler. A label's
    own space wins over its sampler's.
    """
    by_label: dict[str, Space] = {}
    used = {s for s in samplers.values() if s}
    for key, space in config.space.items():
        path = f"tuning.space.{key_text(key)}"
        if key not in targets and key not in used:  # a registered sampler no one runs: its space applies to none
            if key not in available_samplers():
                r.problems.append(f"{path}: not a tuned {what} label nor a registered sampler; allowed: "
                                  f"{', '.join(sorted(set(targets) | set(available_samplers())))}")  # fmt: skip
            continue
        for label in [key] if key in targets else [lab for lab, s in samplers.items() if s == key]:
            allowed = targets[label]
            for name in space:
                if name not in allowed:
                    r.problems.append(f"{path}.{key_text(name)}: not a tunable hyperparameter of {what} {label!r}; "
                                      f"allowed: {', '.join(allowed)}")  # fmt: skip
            if key == label or label not in by_label:
                by_label[label] = space
    return by_label


def default_space(names: list[str], sampler: str | None, center: float | None, lr: float | None = None) -> Space:
    """The space searched when none is given: the step size (``center``, the configured one) from 0.1x to 3x on a
    log scale, SGD's lr (``lr``) the same, and the sampler's own hyperparameters on DEFAULT_RANGES."""
    space: Space = {}
    if center is not None and "step_size" in names:
        space["step_size"] = Dimension(center * STEP_RANGE[0], center * STEP_RANGE[1], log=True)
    if lr is not None and sampler is None and "lr" in names:
        space["lr"] = Dimension(lr * STEP_RANGE[0], lr * STEP_RANGE[1], log=True)
    for name, (low, high, log) in DEFAULT_RANGES.get(sampler or "", {}).items():
        if name in names:
            space[name] = Dimension(low, high, log=log)
    return space


def hard_limits(name: str, samplers: tuple[str | None, ...]) -> tuple[float | None, float | None]:
    """The range a hyperparameter can never leave, even extended (SGHMC's friction <= 1, a step size > 0, ...)."""
    for sampler in samplers:
        if f"{name}@{sampler}" in HARD_LIMITS:
            return HARD_LIMITS[f"{name}@{sampler}"]
    return (0.0, None) if name in POSITIVE else (None, None)


def wrapped_sampler(sampler: str | None, hyperparameters: dict[str, Any]) -> str | None:
    """The sampler a wrapper (cyclical) runs, from its ``sampler = {name = ...}`` table."""
    if sampler is None or not sampler_class(sampler).wraps_sampler:
        return None
    inner = hyperparameters.get("sampler")
    return inner.get("name") if isinstance(inner, dict) and isinstance(inner.get("name"), str) else None
