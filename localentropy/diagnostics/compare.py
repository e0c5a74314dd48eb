"""Comparisons with uncertainty: paired differences over the independent unit, and which of k is best.

Every comparative number in the reports and in docs/findings.md comes from here. The unit of replication is
whatever is independent between repeats: the seed of a training run, the replicate of an estimator run (whose
seed is shared by every estimator at a point: common random numbers, so that pairing removes shared noise).

* :func:`paired_difference`: mean of a - b over the units both have, with a t-interval on n - 1 degrees of
  freedom (the standard error is sd / sqrt(n) of the per-unit differences);
* :func:`paired_ratio`: a / b over the units both have (a wall-clock ratio), the geometric mean of the per-unit
  ratios with the t-interval of the mean log ratio;
* :func:`median_interval`: the distribution-free (order-statistic) interval of a median, for a benchmark's
  repeats;
* :func:`best_set`: the set of candidates not distinguishable from the one with the lowest mean, ranked among
  the *stable* candidates only. A unit whose value is not finite, or exceeds :data:`RUNAWAY` times the reference
  (the median of the absolute values of every candidate on the same units), has **diverged**; a candidate with a
  diverged unit is listed with its divergence rate and never joins the best set, however its t statistic reads.
  The reference is the other candidates on the same point, not the scale of the truth: the statistics module
  sees plain numbers (the truth is the caller's), a relative error is undefined where the truth is near zero,
  and a median moves with no runaway as long as fewer than half of all values run away. The factor 1e6 on a
  squared error is an error norm 1000x the typical estimator's on that point: no sampling noise of a working
  estimator comes near it (a chi-square tail that far has probability below 1e-100), while every runaway seen
  in this project's runs (1e4 to 1e195 against a typical 1e-3) passes it. Among the stable candidates the method
  is Holm-adjusted two-sided paired t-tests of each against the observed lowest (H0: same mean), with
  Bonferroni-adjusted simultaneous t-intervals for the differences (a candidate left in the set has an interval
  that holds 0). **The t-test governs** (the verdict is about the mean, i.e. the MSE of an estimator); beside it,
  each comparison carries the Holm-adjusted Wilcoxon signed-rank p-value of the same differences (scipy), a
  rank test that one heavy unit cannot swamp, and ``agree`` says whether the two tests reach the same decision.
  When several are tied, the largest simultaneous half-width among them is the ``detectable`` difference: a
  difference smaller than it could not have been told apart from zero by these data, so "tied" says how close
  is close.

Pure numpy / scipy on plain numbers: no knowledge of configs or runs, so every layer above can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
RUNAWAY = 1e6
METHOD = (
    "Holm-adjusted paired t-tests against the lowest mean among the stable candidates (n - 1 degrees of freedom; "
    "Bonferroni simultaneous intervals; a Wilcoxon signed-rank test beside it, the t-test governs); a unit above "
    f"{RUNAWAY:.0e} x the median of all candidates' values, or not finite, has diverged and its candidate is "
    "ranked out"
)
Units = Mapping[Any, float] | Sequence[float] | np.ndarray


@dataclass
class PairedDifference:
    """a - b over ``n`` paired units: mean, sd of the differences, t-interval half-width (None below 2 units)."""

    mean: float | None
    sd: float | None
    n: int
    half_width: float | None
    level: float
    unit: str
    higher: int
    lower: int

    @property
    def distinguishable(self) -> bool:
        """The interval excludes 0 (a constant nonzero difference over >= 2 units counts; < 2 units never)."""
        if self.mean is None or self.half_width is None:
            return False
        return abs(self.mean) > self.half_width

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "distinguishable": self.distinguishable}

    def text(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """ "+1.23 ± 0.45 points (95 % t-interval over 5 seeds)"; "no paired seeds" when there is nothing."""
        if self.mean is None:
            return f"no paired {self.unit}s"
        ci = f" ± {self.half_width * scale:.{digits}f}" if self.half_width is not None else ""
        return (
            f"{self.mean * scale:+.{digits}f}{ci}{unit} ({100 * self.level:g} % t-interval over {self.n} "
            f"{self.unit}{'s' if self.n != 1 else ''})"
        )


def _aligned(a: Units, b: Units) -> tuple[np.ndarray, np.ndarray]:
    """The finite pairs of a and b: by key for mappings (units both have), by position for sequences."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("paired_difference: give both as mappings (unit -> value) or both as sequences")
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = sorted(set(a) & set(b), key=str)
        x, y = np.array([a[k] for k in keys], float), np.array([b[k] for k in keys], float)
    else:
        x, y = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
        if x.shape != y.shape:
            raise ValueError(f"paired_difference: {x.size} values against {y.size}: pairs need equal lengths")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def sample_sd(d: np.ndarray) -> float:
    """The sample sd (ddof 1) of ``d`` computed on d / max|d|, so that values near the float range (a runaway
    estimate) give their finite sd instead of overflowing the squares to inf."""
    peak = float(np.max(np.abs(d)))
    return peak * float((d / peak).std(ddof=1)) if peak > 0 else 0.0


def t_half_width(sd: float, n: int, level: float = LEVEL) -> float | None:
    """Half-width of the two-sided t-interval of a mean over n units with sample sd (None below 2 units)."""
    if n < 2:
        return None
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n))


def paired_difference(a: Units, b: Units, *, level: float = LEVEL, unit: str = "seed") -> PairedDifference:
    """a - b over the paired units (mapping keys both have, or positions), with a t-interval on n - 1 df."""
    x, y = _aligned(a, b)
    d = x - y
    n = int(d.size)
    if n == 0:
        return PairedDifference(None, None, 0, None, level, unit, 0, 0)
    sd = sample_sd(d) if n > 1 else None
    half = t_half_width(sd, n, level) if sd is not None else None
    return PairedDifference(float(d.mean()), sd, n, half, level, unit, int((d > 0).sum()), int((d < 0).sum()))


def mean_interval(values: Units, *, level: float = LEVEL, unit: str = "seed") -> PairedDifference:
    """The mean of ``values`` over its units with a t-interval (a paired difference against zero)."""
    x = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, float).ravel()
    return paired_difference(x, np.zeros_like(x), level=level, unit=unit)


@dataclass
class PairedRatio:
    """a / b over ``n`` paired units as the geometric mean of the per-unit ratios, with the t-interval of the mean
    log ratio taken back to ratios (``low``, ``high``; None below 2 units): a wall-clock ratio, whose noise is
    multiplicative, stated with its uncertainty over the seeds or repeats that were timed."""

    ratio: float | None
    low: float | None
    high: float | None
    n: int
    level: float
    unit: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_ratio(a: Units, b: Units, *, level: float = LEVEL, unit: str = "seed") -> PairedRatio:
    """a / b over the paired units with positive finite values: exp of the mean log ratio, and exp of its
    t-interval on n - 1 df (log a - log b is a paired difference, so the interval is :func:`paired_difference`'s)."""
    x, y = _aligned(a, b)
    keep = (x > 0) & (y > 0)
    d = paired_difference(np.log(x[keep]), np.log(y[keep]), level=level, unit=unit)
    if d.mean is None:
        return PairedRatio(None, None, None, 0, level, unit)
    low, high = (None, None) if d.half_width is None else (d.mean - d.half_width, d.mean + d.half_width)
    return PairedRatio(
        math.exp(d.mean),
        None if low is None else math.exp(low),
        None if high is None else math.exp(high),
        d.n,
        level,
        unit,
    )


def median_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The distribution-free interval of a median: order statistics x_(j) <= x_(n + 1 - j) with the largest j such
    that Binomial(n, 1/2) puts at least ``level`` between them (P(j <= B <= n - j) >= level); None when even the
    sample's extremes cover less (fewer than 6 values at 95 %). A benchmark's repeats need not be normal."""
    x = np.sort(np.asarray([v for v in values if math.isfinite(v)], float))
    n = x.size
    best = None
    for j in range(1, n // 2 + 1):  # 1-based rank of the lower bound
        if stats.binom.cdf(n - j, n, 0.5) - stats.binom.cdf(j - 1, n, 0.5) >= level:
            best = j
    return None if best is None else (float(x[best - 1]), float(x[n - best]))


@dataclass
class Comparison:
    """One stable candidate against the lowest: difference of means, simultaneous half-width, Holm-adjusted
    p-values of the paired t-test (``p_adjusted``, which decides) and of the Wilcoxon signed-rank test
    (``p_rank``), and whether the two reach the same decision at the level."""

    name: str
    mean: float
    difference: float
    half_width: float | None
    p_adjusted: float
    distinguishable: bool
    p_rank: float = 1.0
    agree: bool = True


@dataclass
class BestSet:
    """The stable candidates not distinguishable from the lowest mean, with how the verdict was reached.

    ``divergence`` is every compared candidate's count of diverged units (out of ``n``); ``diverged`` names
    those with at least one, which are ranked out. ``runaway_threshold`` is the value above which a unit
    diverged (None when the reference is 0: then only a non-finite value does)."""

    lowest: str | None
    best: list[str]
    n: int
    unit: str
    level: float
    method: str = METHOD
    detectable: float | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    divergence: dict[str, int] = field(default_factory=dict)
    runaway_threshold: float | None = None
    governs: str = "paired t-test"

    @property
    def tied(self) -> bool:
        return len(self.best) > 1

    @property
    def diverged(self) -> list[str]:
        return [name for name, count in self.divergence.items() if count > 0]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "diverged": self.diverged}


def _paired_p(d: np.ndarray) -> float:
    """Two-sided paired-t p-value of H0: mean(d) = 0 (n - 1 df); a difference of exactly 0 on every unit gives 1.

    Two-sided, so that a candidate Holm leaves in the best set also has a Bonferroni interval that holds 0. The sd
    is :func:`sample_sd` (scale-free): a runaway unit of 1e190 would otherwise overflow the variance to inf and read
    as "separated", while the same sample at a smaller scale reads as "tied"."""
    n = d.size
    if n < 2:
        return 1.0
    mean, sd = float(d.mean()), sample_sd(d)
    standard_error = sd / math.sqrt(n)  # 0 also when a subnormal sd underflows
    if standard_error == 0.0:
        return 0.0 if mean != 0 else 1.0  # a constant nonzero difference on every unit: as separated as it gets
    return float(2 * stats.t.sf(abs(mean) / standard_error, n - 1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error at most the level when compared to it)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _rank_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of H0: the differences are symmetric about 0 (zero differences
    dropped, Wilcox's rule; exact below 50 units); 1 when no difference is nonzero."""
    if d.size < 2 or not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def runaway_threshold(arrays: Sequence[np.ndarray], factor: float = RUNAWAY) -> float | None:
    """``factor`` x the median of the absolute finite values of every candidate (None when that median is 0)."""
    values = np.concatenate([np.abs(a[np.isfinite(a)]) for a in arrays]) if arrays else np.array([])
    reference = float(np.median(values)) if values.size else 0.0
    return factor * reference if reference > 0 else None


def diverged_units(values: np.ndarray, threshold: float | None) -> np.ndarray:
    """Which units diverged: not finite, or above ``threshold`` in absolute value."""
    bad = ~np.isfinite(values)
    if threshold is not None:
        bad |= np.abs(np.where(bad, 0.0, values)) > threshold
    return bad


def best_set(
    samples: Mapping[str, Sequence[float] | np.ndarray],
    *,
    level: float = LEVEL,
    unit: str = "replicate",
    runaway: float = RUNAWAY,
) -> BestSet:
    """Which of several candidates, each measured on the same units (position r = unit r), has the lowest mean.

    Candidates with another number of units than the most common (the largest on a tie) are left out (listed in
    ``excluded``). Among the rest, a unit that is not finite or above ``runaway`` x the median of all values
    (:func:`runaway_threshold`) has diverged: its candidate's count is in ``divergence`` and it is ranked out.
    The lowest mean of the stable candidates is the observed best; every other stable candidate is tested
    against it with a paired t-test, the k - 1 p-values Holm-adjusted; those not rejected at ``1 - level`` join
    the best set. Identical samples give a difference of exactly 0 and are never separated.
    """
    arrays = {name: np.asarray(values, float).ravel() for name, values in samples.items()}
    sizes = [a.size for a in arrays.values() if a.size]
    n = max(set(sizes), key=lambda size: (sizes.count(size), size)) if sizes else 0  # most common, then largest
    compared = {k: a for k, a in arrays.items() if a.size == n and n > 0}
    excluded = [k for k in arrays if k not in compared]
    threshold = runaway_threshold(list(compared.values()), runaway)
    divergence = {k: int(diverged_units(a, threshold).sum()) for k, a in compared.items()}
    usable = {k: a for k, a in compared.items() if divergence[k] == 0}
    if not usable:
        return BestSet(None, [], n, unit, level, excluded=excluded, divergence=divergence, runaway_threshold=threshold)
    means = {k: float(a.mean()) for k, a in usable.items()}
    lowest = min(means, key=lambda k: (means[k], str(k)))
    others = [k for k in usable if k != lowest]
    diffs = {k: usable[k] - usable[lowest] for k in others}
    adjusted = holm([_paired_p(diffs[k]) for k in others]) if others else []
    ranked = holm([_rank_p(diffs[k]) for k in others]) if others else []
    simultaneous = 1 - (1 - level) / max(len(others), 1)  # Bonferroni: each interval at 1 - alpha / (k - 1)
    alpha = 1 - level
    comparisons = []
    for k, p, p_rank in zip(others, adjusted, ranked, strict=True):
        d = diffs[k]
        half = t_half_width(sample_sd(d), n, simultaneous) if n > 1 else None
        separated = bool(p < alpha)
        agree = separated == bool(p_rank < alpha)
        comparisons.append(Comparison(k, means[k], float(d.mean()), half, p, separated, p_rank, agree))
    best = [lowest, *sorted((c.name for c in comparisons if not c.distinguishable), key=lambda k: (means[k], k))]
    widths = [c.half_width for c in comparisons if not c.distinguishable and c.half_width is not None]
    return BestSet(
        lowest,
        best,
        n,
        unit,
        level,
        detectable=max(widths) if widths else None,
        comparisons=comparisons,
        excluded=excluded,
        divergence=divergence,
        runaway_threshold=threshold,
    )


def divergence_text(verdict: BestSet | Mapping[str, Any], name: Any = str) -> str:
    """ "ranked out as diverged: `psgld` (1 of 20 replicates)" for the candidates with a diverged unit, else ""."""
    v = verdict if isinstance(verdict, Mapping) else verdict.as_dict()
    counts = {k: c for k, c in (v.get("divergence") or {}).items() if c}
    if not counts:
        return ""
    units = f"{v['unit']}{'s' if v['n'] != 1 else ''}"
    return "ranked out as diverged: " + ", ".join(f"{name(k)} ({c} of {v['n']} {units})" for k, c in counts.items())


def verdict_text(verdict: BestSet | Mapping[str, Any], fmt: Any = "{:.3g}".format, name: Any = str) -> str:
    """One line: "tied: a, b (differences to a within ± w, 95 % simultaneous, 10 replicates)" or "lowest: a",
    then the candidates ranked out as diverged and a note where the rank test decides otherwise.

    ``fmt`` formats numbers and ``name`` the candidates' names (a report quotes them in backticks).
    """
    v = verdict if isinstance(verdict, Mapping) else verdict.as_dict()
    out = divergence_text(v, name)
    if not v["best"]:
        why = "every candidate diverged on some unit" if out else "no candidate with values on common units"
        return f"no verdict ({why}){'; ' + out if out else ''}"
    count = f"{v['n']} {v['unit']}{'s' if v['n'] != 1 else ''}"
    among = " stable" if out else ""
    if v["n"] < 2:
        text = f"tied: {', '.join(map(name, v['best']))} (one {v['unit']}: nothing can be told apart)"
    elif len(v["best"]) > 1:
        width = f"differences to {name(v['lowest'])} within ± {fmt(v['detectable'])}" if v.get("detectable") else ""
        text = (
            f"tied: {', '.join(map(name, v['best']))} ({width + ', ' if width else ''}{100 * v['level']:g} % "
            f"simultaneous, {count})"
        )
    else:
        runner = min(v["comparisons"], key=lambda c: c["difference"], default=None)
        margin = (
            f"; next {name(runner['name'])} higher by {fmt(runner['difference'])}, Holm-adjusted p = "
            f"{runner['p_adjusted']:.2g}"
            if runner
            else ""
        )
        text = f"lowest: {name(v['lowest'])}, distinguishable from every other{among} ({100 * v['level']:g} %, "
        text += f"{count}{margin})"
    disagree = [c["name"] for c in v.get("comparisons", []) if not c.get("agree", True)]
    if disagree:
        text += f"; the Wilcoxon signed-rank test decides otherwise for {', '.join(map(name, disagree))}"
    return text + (f"; {out}" if out else "")
