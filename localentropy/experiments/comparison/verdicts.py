"""Verdicts of a comparison run: at each (point, gamma, temperature, budget), which estimators are best.

The metric is each replicate's squared error ||g_r - g||^2 (its mean over replicates is the MSE). Replicate r of
every estimator at a point is seeded from (config seed, point, r) (common random numbers), so the errors pair
replicate by replicate; :func:`localentropy.diagnostics.compare.best_set` gives the set not distinguishable
from the lowest. Records of runs written before the squared errors were kept get no verdict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from localentropy.diagnostics.compare import LEVEL, best_set
from localentropy.experiments.core.rundir import finite_or_none

if TYPE_CHECKING:
    from localentropy.experiments.comparison.results import Record

METRIC = "squared error per replicate (its mean is the MSE)"
UNIT = "replicate"

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]


class Comparison(BaseModel):
    """One stable candidate against the lowest (:class:`localentropy.diagnostics.compare.Comparison`)."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    name: str
    mean: Number | None = None
    difference: Number | None = None
    half_width: Number | None = None
    p_adjusted: Number | None = None
    distinguishable: bool = False
    p_rank: Number | None = None
    agree: bool = True


class Verdict(BaseModel):
    """The verdict at one (point, gamma, T, budget): the best set of :func:`best_set` with where it was reached."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    point: int
    gamma: Number
    temperature: Number
    budget: int
    metric: str = METRIC
    lowest: str | None = None
    best: list[str] = Field(default_factory=list)
    n: int = 0
    unit: str = UNIT
    level: Number = LEVEL
    method: str = ""
    detectable: Number | None = None
    comparisons: list[Comparison] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    divergence: dict[str, int] = Field(default_factory=dict)
    runaway_threshold: Number | None = None
    governs: str = ""
    diverged: list[str] = Field(default_factory=list)

    @property
    def group(self) -> tuple[int, float, float]:
        return (self.point, self.gamma, self.temperature)


def comparison_verdicts(
    records: Iterable[Record], *, label: Callable[[Record], str] | None = None, level: float = LEVEL
) -> list[Verdict]:
    """One verdict per (point, gamma, temperature, budget) with at least two estimators.

    ``label`` names a record (default: its key's estimator); records without per-replicate squared errors
    (status not ok, or an older run) are listed in the verdict's ``excluded``. A number that overflowed (a runaway
    estimate's difference) is null, as in results.json.
    """
    label = label or (lambda record: record.key.estimator)
    groups: dict[tuple, dict[str, list[float | None] | None]] = defaultdict(dict)
    for record in records:
        errors = record.metrics.squared_errors if record.status == "ok" and record.metrics is not None else None
        key = record.key
        groups[(key.point, key.gamma, key.temperature, key.budget)][label(record)] = errors
    verdicts = []
    for (point, gamma, temperature, budget), samples in groups.items():
        usable = {name: errors for name, errors in samples.items() if errors is not None}
        if len(samples) < 2:
            continue
        verdict = best_set(usable, level=level, unit=UNIT).as_dict()
        verdict["excluded"] = sorted(set(verdict["excluded"]) | (set(samples) - set(usable)))
        where = {"point": point, "gamma": gamma, "temperature": temperature, "budget": budget, "metric": METRIC}
        verdicts.append(Verdict.model_validate(finite_or_none({**where, **verdict})))
    return verdicts
