"""The statistics module (localentropy.diagnostics.compare) and the label rules: hand-computed values and
properties. Every comparative number of the reports and findings goes through these functions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from localentropy.diagnostics.compare import best_set, holm, mean_interval, paired_difference, verdict_text
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


def test_unusable_candidates_are_excluded():
    verdict = best_set({"a": [1.0, 2.0, 3.0], "b": [1.0, math.nan, 2.0], "c": [1.0, 2.0]})
    assert verdict.best == ["a"] and sorted(verdict.excluded) == ["b", "c"]
    assert best_set({}).best == [] and "no verdict" in verdict_text(best_set({}))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=2, max_size=12), st.floats(-10, 10))
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


def test_one_runaway_unit_reads_the_same_at_any_size():
    """A candidate far worse on one unit only: the paired t-test's verdict is the same whether the runaway is 1e20
    or 1e196 (its variance overflows); Holm's p-values match."""
    low = np.linspace(1e-4, 2e-4, 20)
    verdicts = []
    for runaway in (1e20, 1e40, 1e196):
        other = np.full(20, 0.2)
        other[7] = runaway
        verdicts.append(best_set({"low": low, "runaway": other}))
    assert {tuple(v.best) for v in verdicts} == {("low", "runaway")}
    assert np.allclose([v.comparisons[0].p_adjusted for v in verdicts], verdicts[0].comparisons[0].p_adjusted)


def test_default_labels_are_unique_and_say_what_differs():
    labels = default_labels(["sgld", "sgld", "sghmc", "sgld"],
                            [{"step": 0.5}, {"step": 0.1}, {"step": 0.1}, {"step": 0.5}], taken={"sghmc"})
    assert labels == ["sgld (step=0.5)", "sgld (step=0.1)", "sghmc #2", "sgld (step=0.5) #2"]
    assert default_labels(["mala"], [{}], taken=set()) == ["mala"]


def test_a_label_may_not_name_what_does_not_run():
    samplers = {"sgld", "sghmc", "cyclical"}
    assert named_kinds("cyclical sgld (fast)", samplers) == ["cyclical", "sgld"]
    assert lying_label("cyclical sgld", {"cyclical", "sgld"}, samplers, "sampler 'cyclical'") is None
    assert lying_label("my favourite", {"sghmc"}, samplers, "sampler 'sghmc'") is None
    reason = lying_label("sgld", {"sghmc"}, samplers, "sampler 'sghmc'")
    assert reason.startswith("got 'sgld', which names 'sgld' but this entry runs sampler 'sghmc'")
