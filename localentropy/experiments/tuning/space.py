"""The ``[tuning]`` table of comparison and sweep configs: the search, its budget and each method's search space.

A space maps a hyperparameter to a float range (``{low, high, log}``) or a list of ``choices``. The names are the
sampler's declared hyperparameters (``localentropy samplers`` lists them; a wrapper such as ``cyclical`` takes its
wrapped sampler's names too) and, in a sweep, ``lr`` (the optimizer's learning rate). An estimator or optimizer
without a space of its own gets :func:`default_space`: its step size (or SGD's lr) on a log range around the
configured value, and its sampler's own hyperparameters on the ranges of :data:`DEFAULT_RANGES`.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar

from pydantic import ConfigDict, Field

from localentropy.experiments.core.config import Problem, Table, array, choice, flag, got, integer, number
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
    "friction@sghmc": (None, 1.0),
    "momentum@msgld": (0.0, 0.99),
    "beta@psgld": (0.0, 0.9999),
    "exploration_fraction@cyclical": (0.0, 1.0),
    # an optimizer's own options in a sweep's space (sweeps/tuning.py), whatever its sampler
    "options.momentum": (0.0, 0.999),
    "options.gamma": (0.0, None),
    "options.scoping": (0.0, None),
    "options.sigma": (0.0, None),
    "options.rho": (0.0, None),
    "options.weight_decay": (0.0, None),
}
POSITIVE = ("step_size", "lr", "damping", "diffusion", "friction")
KIND_FIELDS = {"comparison": {"budget", "replicates", "estimators"}, "sweep": {"seeds", "optimizers"}}
# the tuning seeds lie this far from the evaluation's: a sweep's are seed_offset, seed_offset + 1, ...; a comparison's
# replicates draw from the seeds of config seed + seed_offset
SEED_OFFSET = 1_000_000


class Dimension(Table):
    """One searched hyperparameter: a float range (``log``: searched on a log scale) or a list of choices."""

    low: number() | None = Field(None, description="the range's low end (> 0 on a log scale)")
    high: number() | None = Field(None, description="the range's high end (> low)")
    log: flag() = Field(False, description="search the range on a log scale")
    choices: list[Any] | None = Field(None, description="instead of a range: the values to choose from")

    def __init__(self, low: float | None = None, high: float | None = None, **fields: Any) -> None:
        super().__init__(**({"low": low, "high": high} if fields.get("choices") is None else {}), **fields)

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        return {"choices"} if "choices" in data else {"low", "high", "log"}

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        if "choices" in data:
            choices = data["choices"]
            if not isinstance(choices, list) or not choices or any(isinstance(c, dict | list) for c in choices):
                return [(("choices",), got(choices, "a non-empty list of numbers, strings or true/false"))]
            return []
        return [((key,), "missing (required)") for key in ("low", "high") if key not in data]

    def check(self) -> list[Problem]:
        if self.choices is not None or self.low is None or self.high is None:
            return []
        if self.log and self.low <= 0:
            return [(("low",), got(self.low, "a number in (0, inf) (a log range)"))]
        return [] if self.low < self.high else [(("high",), got(self.high, f"a number > low ({self.low:g})"))]

    def as_dict(self) -> dict[str, Any]:
        return (
            {"choices": self.choices}
            if self.choices is not None
            else {"low": self.low, "high": self.high, "log": self.log}
        )

    def position(self, value: Any) -> float | None:
        """Where ``value`` lies in the range, from 0 (low) to 1 (high); None for choices."""
        if self.choices is not None or self.low is None or self.high is None:
            return None
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


Space = dict[str, Dimension]
LABELS = "a non-empty list of labels"


class TuningConfig(Table):
    """The ``[tuning]`` table; its kind (comparison or sweep, :data:`KIND_FIELDS`) narrows the fields it takes."""

    method: choice(METHODS) = Field(
        "tpe",
        description="tpe: Optuna's TPE sampler, seeded, trials run one after another; sobol: a scrambled "
        "Sobol design (scipy.stats.qmc); grid: evenly spaced levels in a seeded order.",
    )
    trials: integer(1, 10_000) = Field(
        20, description="Trials per tuned method, the same for every one; at least max_extensions + 1."
    )
    seed: integer(0, 2**62) = Field(0, description="The seed of the search (the same for every method).")
    pruner: choice(PRUNERS) = Field(
        "none",
        description="successive-halving: Optuna's SuccessiveHalvingPruner stops trials that trail after "
        "some of their replicates (comparison) or seeds (sweep).",
    )
    max_extensions: integer(0, 10) = Field(
        2,
        description="Rounds after the first: a log range whose best value lies in its outer tenth is widened "
        "before the next; still there at the end, it is reported at the edge.",
    )
    extension_factor: number(1.0, low_open=True) = Field(
        10.0, description="How much an extension widens a range on its side."
    )
    budget: integer(1, 10_000_000) | None = Field(
        None,
        description="Comparison: the gradient evaluations of each estimate in a trial (at least 2 steps per "
        "chain; default: the middle budget the tuned estimators share).",
    )
    replicates: integer(1, 10_000) = Field(
        4, description="Comparison: estimates per trial; the objective is their mean squared error against the truth."
    )
    estimators: Annotated[list[str], array(LABELS)] | None = Field(
        None, description="Comparison: the labels of the local-entropy estimators tuned (default: all)."
    )
    seeds: integer(1, 100) = Field(
        1,
        description="Sweep: training runs per trial (seeds seed_offset, seed_offset "
        "+ 1, ...); the objective is their mean final validation error.",
    )
    seed_offset: integer(1, 2**62 - 100) = Field(
        SEED_OFFSET,
        description="The tuning data lie this far from the evaluation's: a sweep's tuning seeds start "
        "here (apart from its seeds); a comparison's replicates draw from the config's seed + seed_offset.",
    )
    optimizers: Annotated[list[str], array(LABELS)] | None = Field(
        None, description="Sweep: the labels of the optimizers tuned (default: every one the sweep runs)."
    )
    space: dict[str, dict[str, Dimension]] = Field(
        default_factory=dict,
        description="Per tuned label (or sampler name), the hyperparameters searched: each "
        "{low, high, log} or {choices = [...]} (default: the step size around its configured value and the "
        "sampler's own on their usual ranges).",
    )

    kind: ClassVar[str] = ""
    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _narrow(schema, cls))

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        if not cls.kind:  # as recorded (every field), read back by a tuning worker
            return set(cls.keys())
        return set(cls.keys()) - set().union(*(f for k, f in KIND_FIELDS.items() if k != cls.kind))

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.trials < self.max_extensions + 1:
            problems.append(
                (
                    ("trials",),
                    got(
                        self.trials,
                        f"at least max_extensions + 1 = {self.max_extensions + 1} "
                        "(the trials are run in max_extensions + 1 rounds, a range extended between rounds)",
                    ),
                )
            )
        unit = "replicates" if self.kind == "comparison" else "seeds"
        if self.kind and self.pruner != "none" and getattr(self, unit) < 2:
            problems.append(
                (
                    ("pruner",),
                    f"successive halving prunes between the {unit} of a trial; give "
                    f'tuning.{unit} >= 2 or pruner = "none"',
                )
            )
        problems += [
            (("space", key), got(table, "a table of hyperparameters to search (leave it out for the default space)"))
            for key, table in self.space.items()
            if not table
        ]
        return problems

    def as_dict(self) -> dict[str, Any]:
        data = self.model_dump()
        data["space"] = {k: {n: d.as_dict() for n, d in s.items()} for k, s in self.space.items()}
        return data


def _narrow(schema: dict[str, Any], cls: Any) -> None:
    """A kind's JSON Schema lists only the fields that kind takes (a sweep's seeds are a typo in a comparison)."""
    for key in set(schema.get("properties", {})) - cls.allowed({}):
        del schema["properties"][key]


class ComparisonTuning(TuningConfig):
    kind: ClassVar[str] = "comparison"


class SweepTuning(TuningConfig):
    kind: ClassVar[str] = "sweep"


def tuned_labels(
    given: list[str] | None, allowed: list[str], field: str, allowed_text: str
) -> tuple[list[str], list[Problem]]:
    """The labels ``field`` (``estimators`` / ``optimizers`` of [tuning]) lists, all ``allowed`` ones by default;
    a label not allowed is a problem naming what is (``allowed_text``: what an allowed label is)."""
    labels = given if given is not None else allowed
    problems: list[Problem] = [
        ((field,), f"{label!r} is not {allowed_text}; allowed: {', '.join(allowed)}")
        for label in labels
        if label not in allowed
    ]
    return [label for label in labels if label in allowed], problems


def tunable_names(
    sampler: str | None, wrapped: str | None = None, *, preset: bool = False, lr: bool = False
) -> list[str]:
    """The names a space may search: the sampler's hyperparameters (and a wrapper's sampler's), ``lr`` in sweeps."""
    names = ["lr"] if lr else []
    if preset:
        return [*names, "step_size"]
    for name in (sampler, wrapped):
        if name is not None:
            names += [k for k in sampler_hyperparameters(name) if k not in NOT_TUNABLE and k not in names]
    return names


def check_names(
    config: TuningConfig, targets: dict[str, list[str]], samplers: dict[str, str | None], what: str
) -> tuple[dict[str, Space], list[Problem]]:
    """Check each given space's key (a tuned label, or a registered sampler) and names; return spaces by label
    and the problems (paths inside [tuning]).

    ``targets`` maps each tuned label to its tunable names, ``samplers`` each label to its sampler. A label's
    own space wins over its sampler's.
    """
    by_label: dict[str, Space] = {}
    problems: list[Problem] = []
    used = {s for s in samplers.values() if s}
    for key, space in config.space.items():
        if key not in targets and key not in used:  # a registered sampler no one runs: its space applies to none
            if key not in available_samplers():
                problems.append(
                    (
                        ("space", key),
                        f"not a tuned {what} label nor a registered sampler; allowed: "
                        f"{', '.join(sorted(set(targets) | set(available_samplers())))}",
                    )
                )
            continue
        for label in [key] if key in targets else [lab for lab, s in samplers.items() if s == key]:
            allowed = targets[label]
            problems += [
                (
                    ("space", key, name),
                    f"not a tunable hyperparameter of {what} {label!r}; allowed: {', '.join(allowed)}",
                )
                for name in space
                if name not in allowed
            ]
            if key == label or label not in by_label:
                by_label[label] = space
    return by_label, problems


def default_space(names: list[str], sampler: str | None, center: float | None, lr: float | None = None) -> Space:
    """The space searched when none is given: the step size (``center``, the configured one) from 0.1x to 3x on a
    log scale, SGD's lr (``lr``) the same, and the sampler's own hyperparameters on DEFAULT_RANGES."""
    space: Space = {}
    if center is not None and "step_size" in names:
        space["step_size"] = Dimension(low=center * STEP_RANGE[0], high=center * STEP_RANGE[1], log=True)
    if lr is not None and sampler is None and "lr" in names:
        space["lr"] = Dimension(low=lr * STEP_RANGE[0], high=lr * STEP_RANGE[1], log=True)
    for name, (low, high, log) in DEFAULT_RANGES.get(sampler or "", {}).items():
        if name in names:
            space[name] = Dimension(low=low, high=high, log=log)
    return space


def hard_limits(name: str, samplers: tuple[str | None, ...]) -> tuple[float | None, float | None]:
    """The range a hyperparameter can never leave, even extended (SGHMC's friction <= 1, a step size > 0, ...)."""
    for sampler in samplers:
        if f"{name}@{sampler}" in HARD_LIMITS:
            return HARD_LIMITS[f"{name}@{sampler}"]
    if name in HARD_LIMITS:
        return HARD_LIMITS[name]
    return (0.0, None) if name in POSITIVE else (None, None)


def wrapped_sampler(sampler: str | None, hyperparameters: dict[str, Any]) -> str | None:
    """The sampler a wrapper (cyclical) runs, from its ``sampler = {name = ...}`` table."""
    if sampler is None or not sampler_class(sampler).wraps_sampler:
        return None
    inner = hyperparameters.get("sampler")
    return inner.get("name") if isinstance(inner, dict) and isinstance(inner.get("name"), str) else None
