"""Verdicts of a comparison run: at each (point, gamma, temperature, budget), which estimators are best.

The metric is each replicate's squared error ||g_r - g||^2 (its mean over replicates is the MSE). Replicate r of
every estimator at a point is seeded from (config seed, point, r) (common random numbers), so the errors pair
replicate by replicate; :func:`localentropy.diagnostics.compare.best_set` gives the set not distinguishable
from the lowest. Records of runs written before the squared errors were kept get no verdict.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from localentropy.diagnostics.compare import LEVEL, best_set

METRIC = "squared error per replicate (its mean is the MSE)"
UNIT = "replicate"


def verdict_key(key: dict[str, Any]) -> tuple:
    return (key.get("point"), key.get("gamma"), key.get("temperature"), key.get("budget"))


def comparison_verdicts(
    records: Iterable[dict[str, Any]], *, label: Callable[[dict[str, Any]], str] | None = None, level: float = LEVEL
) -> list[dict[str, Any]]:
    """One verdict per (point, gamma, temperature, budget) with at least two finished estimators.

    ``label`` names a record (default: its key's estimator); records without per-replicate squared errors
    (status not ok, or an older run) are listed in the verdict's ``excluded``.
    """
    label = label or (lambda record: str(record["key"]["estimator"]))
    groups: dict[tuple, dict[str, Any]] = defaultdict(dict)
    for record in records:
        metrics = record.get("metrics") if record.get("status") == "ok" else None
        errors = (metrics or {}).get("squared_errors")
        groups[verdict_key(record["key"])][label(record)] = errors if isinstance(errors, list) else None
    verdicts = []
    for (point, gamma, temperature, budget), samples in groups.items():
        usable = {name: errors for name, errors in samples.items() if errors is not None}
        if len(samples) < 2:
            continue
        verdict = best_set(usable, level=level, unit=UNIT).as_dict()
        verdict["excluded"] = sorted(set(verdict["excluded"]) | (set(samples) - set(usable)))
        verdicts.append(
            {"point": point, "gamma": gamma, "temperature": temperature, "budget": budget, "metric": METRIC, **verdict}
        )
    return verdicts
