"""The statistics module (localentropy.diagnostics.compare) and the label rules: hand-computed values and
properties. Every comparative number of the reports and findings goes through these functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from localentropy.diagnostics.compare import (
    RUNAWAY,
    best_set,
    holm,
    mean_interval,
    paired_difference,
    paired_ratio,
    runaway_threshold,
    verdict_text,
)
from localentropy.experiments.core.labels import default_labels, lying_label, named_kinds


def test_paired_difference_hand_computed():
    # differences 1, 2, 3 over seeds a, b, c (d only in one: unpaired, left out): mean 2, sd 1, t(0.975, 2)/sqrt(3)
    a = {"a": 2.0, "b": 4.0, "c": 6.0, "d": 100.0}
    b = {"a": 1.0, "b": 2.0, "c": 3.0}
    d = paired_difference(a, b, unit="seed")
    assert (d.n, d.mean, d.sd, d.higher, d.lower) == (3, 2.0, 1.0, 3, 0)
    assert d.half_width == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))
    assert not d.distinguishable  # 2 < 2.48: three seeds this spread cannot tell
    assert d.text(100, unit=" points") == f"+200.00 ± {100 * d.half_width:.2f} points (95 % t-interval over 3 seeds)"
    one = paired_difference([1.0], [0.0])
    assert one.half_width is None and not one.distinguishable  # one unit decides nothing
    assert paired_difference({}, {"a": 1.0}).text() == "no paired seeds"
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 2.0], [1.0])


def test_mean_interval_is_a_paired_difference_against_zero():
    m = mean_interval({0: 1.0, 1: 3.0}, unit="seed")
    assert m.mean == 2.0 and m.n == 2 and m.half_width == pytest.approx(stats.t.ppf(0.975, 1))  # sd sqrt 2, n 2


def test_holm_step_down():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_identical_candidates_are_never_separated():
    rng = np.random.default_rng(0)
    x = rng.exponential(size=10)
    verdict = best_set({"a": x, "b": x.copy(), "c": x + 5.0}, unit="replicate")
    assert verdict.lowest in ("a", "b") and sorted(verdict.best) == ["a", "b"]
    assert verdict.tied and verdict.n == 10
    c = next(c for c in verdict.comparisons if c.name == "c")
    assert c.distinguishable and c.difference == pytest.approx(5.0)  # a constant shift: p = 0
    identical = next(c for c in verdict.comparisons if c.name != "c")
    assert identical.difference == 0.0 and identical.p_adjusted == 1.0
    text = verdict_text(verdict, name=lambda n: f"`{n}`")
    assert text.startswith("tied: `a`, `b`") and "10 replicates" in text


def test_clear_winner_and_simultaneous_widths():
    rng = np.random.default_rng(1)
    base = rng.normal(size=30)
    samples = {"best": base, "worse": base + 1.0 + 0.1 * rng.normal(size=30), "much worse": base + 3.0}
    verdict = best_set(samples)
    assert verdict.best == ["best"] and not verdict.tied and verdict.detectable is None
    worse = next(c for c in verdict.comparisons if c.name == "worse")
    d = samples["worse"] - base
    # Bonferroni over k - 1 = 2 comparisons: each interval at 97.5 %
    assert worse.half_width == pytest.approx(stats.t.ppf(1 - 0.025 / 2, 29) * d.std(ddof=1) / math.sqrt(30))
    assert verdict_text(verdict).startswith("lowest: best, distinguishable from every other (95 %, 30 replicates")


def test_tie_reports_the_detectable_difference():
    rng = np.random.default_rng(2)
    x = rng.normal(size=8)
    y = x + rng.normal(scale=1.0, size=8)
    verdict = best_set({"x": x, "y": y})
    assert verdict.tied or verdict.best == [verdict.lowest]
    if verdict.tied:
        assert verdict.detectable == pytest.approx(verdict.comparisons[0].half_width)
        assert f"within ± {verdict.detectable:.3g}" in verdict_text(verdict)


def test_unusable_candidates_are_excluded_and_non_finite_ones_diverged():
    verdict = best_set({"a": [1.0, 2.0, 3.0], "b": [1.0, math.nan, 2.0], "c": [1.0, 2.0]})
    assert verdict.best == ["a"] and verdict.excluded == ["c"]
    assert verdict.divergence == {"a": 0, "b": 1} and verdict.diverged == ["b"]
    assert verdict_text(verdict).endswith("ranked out as diverged: b (1 of 3 replicates)")
    assert best_set({}).best == [] and "no verdict" in verdict_text(best_set({}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12), st.floats(-10, 10))
@example(values=[0.0, 0.0, 1.0, 1.0], shift=5e-324)  # a subnormal sd whose standard error underflowed to 0
def test_a_copy_is_always_in_the_best_set_with_the_original(values, shift):
    x = np.asarray(values)
    verdict = best_set({"original": x, "copy": x.copy(), "shifted": x + shift})
    assert ("original" in verdict.best) == ("copy" in verdict.best)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.01, 10), min_size=3, max_size=12), st.integers(-150, 150))
def test_the_verdict_does_not_depend_on_the_scale_of_the_numbers(values, exponent):
    """The same samples in other units (down to 1e-150, up to 1e150: a variance of those overflows) give the same
    best set; an overflowing variance once read as "separated"."""
    base = {"a": np.asarray(values), "b": np.asarray(values) * 1.5 + 0.1, "c": np.asarray(values)[::-1] + 0.05}
    scaled = {k: v * 10.0**exponent for k, v in base.items()}
    assert best_set(scaled).best == best_set(base).best


def test_one_runaway_unit_ranks_its_candidate_out_at_any_size():
    """A candidate far worse on one unit only (1e20 .. 1e196, finite or not): it diverged there, whatever its t
    statistic; the verdict is the same at every size, and the diverged candidate is never tied with the best.
    Before the runaway rule, the t statistic of such a sample fell to about 1 and the candidate read as tied."""
    low = np.linspace(1e-4, 2e-4, 20)
    verdicts = []
    for runaway in (1e20, 1e40, 1e196, math.inf):
        other = np.full(20, 0.2)
        other[7] = runaway
        verdicts.append(best_set({"low": low, "runaway": other, "middle": low + 0.05}))
    for v in verdicts:
        assert v.best == ["low"] and v.divergence == {"low": 0, "runaway": 1, "middle": 0}
        assert "ranked out as diverged: runaway (1 of 20 replicates)" in verdict_text(v)
        assert "distinguishable from every other stable" in verdict_text(v)


def test_the_runaway_threshold_is_relative_to_the_median_of_all_candidates():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert runaway_threshold([x, x + 1]) == pytest.approx(RUNAWAY * 3.0)
    # just below the threshold is a (very bad) stable value, just above it diverged
    median = 3.0  # of 1, 2, 3, 4 and 2, 3, 4 with the one changed value above them
    below, above = x.copy(), x.copy()
    below[0], above[0] = 0.99 * RUNAWAY * median, 1.01 * RUNAWAY * median
    assert best_set({"a": x, "b": below}).divergence == {"a": 0, "b": 0}
    assert best_set({"a": x, "b": above}).divergence == {"a": 0, "b": 1}
    # a median of 0 gives no threshold: only a non-finite value diverges
    zeros = np.zeros(4)
    assert runaway_threshold([zeros]) is None and best_set({"z": zeros, "y": zeros + 1e300}).divergence["y"] == 0
    every = best_set({"a": [1.0, math.inf], "b": [math.nan, 1.0]})
    assert every.best == [] and verdict_text(every).startswith("no verdict (every candidate diverged")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(1e-6, 1e2), min_size=3, max_size=15),
    st.integers(0, 14),
    st.floats(1e9, 1e300),
    st.floats(0.0, 2.0),
)
def test_a_diverging_candidate_is_never_tied_with_the_best(values, where, size, shift):
    """Property: whatever the other values, a candidate with one unit at ``size`` (at least 1e9: over RUNAWAY x
    the median of values <= 1e2) is ranked out, and the verdict among the rest is the verdict without it."""
    x = np.asarray(values)
    runaway = x + shift
    runaway[where % x.size] = size
    samples = {"a": x, "b": x * 1.1 + 0.01, "runaway": runaway}
    verdict = best_set(samples)
    assert "runaway" not in verdict.best and verdict.divergence["runaway"] == 1
    alone = best_set({"a": samples["a"], "b": samples["b"]})
    assert verdict.best == alone.best


def test_the_rank_test_sits_beside_the_t_test():
    """Wilcoxon's p-values are Holm-adjusted like the t-test's; a lower median on most units with a large
    excursion on a few: the t-test (which governs) and the rank test disagree, and the text says so."""
    rng = np.random.default_rng(3)
    base = rng.exponential(size=12)
    worse = base + 1.0
    verdict = best_set({"base": base, "worse": worse})
    c = verdict.comparisons[0]
    assert c.p_rank == pytest.approx(stats.wilcoxon(worse - base).pvalue) and c.agree
    # b is lower on 18 of 20 units by a little and higher on 2 by a lot: mean difference ~0, ranks say "lower"
    base = rng.exponential(size=20)
    b = base - 0.1
    b[:2] += 2.1
    verdict = best_set({"base": base, "b": b})
    c = verdict.comparisons[0]
    assert not c.distinguishable and c.p_rank < 0.05 and not c.agree
    assert "the Wilcoxon signed-rank test decides otherwise for" in verdict_text(verdict)
    assert verdict.governs == "paired t-test"


def test_default_labels_are_unique_and_say_what_differs():
    labels = default_labels(
        ["sgld", "sgld", "sghmc", "sgld"], [{"step": 0.5}, {"step": 0.1}, {"step": 0.1}, {"step": 0.5}], taken={"sghmc"}
    )
    assert labels == ["sgld (step=0.5)", "sgld (step=0.1)", "sghmc #2", "sgld (step=0.5) #2"]
    assert default_labels(["mala"], [{}], taken=set()) == ["mala"]


def test_a_label_may_not_name_what_does_not_run():
    samplers = {"sgld", "sghmc", "cyclical"}
    assert named_kinds("cyclical sgld (fast)", samplers) == ["cyclical", "sgld"]
    assert lying_label("cyclical sgld", {"cyclical", "sgld"}, samplers, "sampler 'cyclical'") is None
    assert lying_label("my favourite", {"sghmc"}, samplers, "sampler 'sghmc'") is None
    reason = lying_label("sgld", {"sghmc"}, samplers, "sampler 'sghmc'")
    assert reason.startswith("got 'sgld', which names 'sgld' but this entry runs sampler 'sghmc'")


def test_a_paired_ratio_is_the_geometric_mean_with_the_log_t_interval() -> None:
    a = {1: 2.0, 2: 4.4, 3: 3.3, 4: 2.1}
    b = {1: 1.0, 2: 2.0, 3: 1.5, 4: 1.0, 5: 9.0}  # seed 5 has no pair
    logs = np.log([2.0, 2.2, 2.2, 2.1])
    r = paired_ratio(a, b)
    half = stats.t.ppf(0.975, 3) * logs.std(ddof=1) / 2
    assert r.n == 4 and r.ratio == pytest.approx(np.exp(logs.mean()))
    assert (r.low, r.high) == pytest.approx((np.exp(logs.mean() - half), np.exp(logs.mean() + half)))
    one = paired_ratio({1: 3.0}, {1: 1.5})
    assert one.ratio == pytest.approx(2.0) and one.low is None and one.high is None
    assert paired_ratio({}, {}).ratio is None


def test_the_median_interval_holds_its_level_by_the_binomial_law() -> None:
    from localentropy.diagnostics.compare import median_interval

    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # 5 values: the extremes cover 1 - 2 / 32 < 95 %
    assert median_interval([float(v) for v in range(6)]) == (0.0, 5.0)  # 1 - 2 / 64 >= 95 %
    values = [float(v) for v in range(20)]
    lo, hi = median_interval(values)
    j = int(lo) + 1  # the 1-based rank of the lower bound
    assert stats.binom.cdf(20 - j, 20, 0.5) - stats.binom.cdf(j - 1, 20, 0.5) >= 0.95
    assert stats.binom.cdf(20 - j - 1, 20, 0.5) - stats.binom.cdf(j, 20, 0.5) < 0.95  # the narrowest such
    assert hi == 19.0 - lo
