"""Verdicts of a comparison run: at each (point, gamma, temperature, budget), which estimators are best.

The metric is each replicate's squared error ||g_r - g||^2 (its mean over replicates is the MSE). Replicate r of
every estimator at a point is seeded from (config seed, point, r) (common random numbers), so the errors pair
replicate by replicate; :func:`localentropy.diagnostics.compare.best_set` gives the set not distinguishable
from the lowest. Records of runs written before the squared errors were kept get no verdict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

from localentropy.diagnostics.compare import LEVEL, best_set
from localentropy.experiments.comparison.results import METRIC, UNIT, Record, Verdict
from localentropy.experiments.core.rundir import finite_or_none


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
