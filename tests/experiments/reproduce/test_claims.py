"""Claims as records and their replication: the seed ranges never meet, and a fresh run's claim is judged held
(same sign, or verdict, and overlapping intervals) or told what changed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from localentropy.diagnostics.compare import mean_interval
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.seeds import (
    FRESH_BLOCK,
    MAX_FRESH_ROUNDS,
    TUNING_SEED_OFFSET,
    check_disjoint,
    fresh_seeds,
    tuning_seeds,
)
from localentropy.experiments.reproduce.claims import (
    claim_text,
    compare_claim,
    compare_claims,
    difference_claim,
    outcome_text,
    pooled_claim,
    pooled_difference,
    verdict_claim,
    welch,
)


@given(
    st.lists(st.integers(0, TUNING_SEED_OFFSET - 1), min_size=1, max_size=50),
    st.integers(1, 500),
    st.integers(0, MAX_FRESH_ROUNDS - 1),
    st.integers(0, MAX_FRESH_ROUNDS - 1),
)
def test_fresh_seeds_never_meet_evaluation_tuning_or_another_round(evaluation, k, round_a, round_b) -> None:
    fresh = fresh_seeds(k, round_a)
    assert len(set(fresh)) == k
    assert not set(fresh) & (set(evaluation) | set(tuning_seeds(evaluation)))
    check_disjoint(fresh, evaluation, "grid.seed")  # no error
    if round_a != round_b:
        assert not set(fresh) & set(fresh_seeds(k, round_b))


def test_colliding_or_bad_fresh_seeds_are_refused_by_name() -> None:
    fresh = fresh_seeds(20)
    with pytest.raises(
        ConfigError,
        match=r"grid\.seed: the fresh seeds 2000000\.\.2000019 include the evaluation "
        r"seed\(s\) 2000003",
    ):
        check_disjoint(fresh, [0, 2_000_003], "grid.seed")
    with pytest.raises(ConfigError, match=r"tuning seed\(s\) 2000001"):  # evaluation 1_000_001 tunes on 2_000_001
        check_disjoint(fresh, [1_000_001], "grid.seed")
    for k in (0, -1, FRESH_BLOCK + 1, 2.5, True):
        with pytest.raises(ConfigError, match="--fresh-seeds: an integer from 1 to"):
            fresh_seeds(k)
    with pytest.raises(ConfigError, match="round"):
        fresh_seeds(3, MAX_FRESH_ROUNDS)


def diff(mean: float, ci: float, n: int = 5) -> dict:
    return difference_claim("s/x", "x", {"mean": mean / 100, "ci95": ci / 100, "n": n})


@pytest.mark.parametrize(
    ("original", "fresh", "changes"),
    [
        ((1.2, 0.7), (0.9, 0.3), []),  # same sign, both exclude 0, overlapping
        ((1.2, 0.7), (-0.9, 0.3), ["sign flipped", "intervals do not overlap"]),
        ((1.2, 0.7), (0.4, 0.5), ["interval no longer excludes 0"]),
        ((1.23, 0.72), (0.06, 0.31), ["interval no longer excludes 0", "intervals do not overlap"]),
        ((0.01, 0.04), (0.02, 0.03), []),  # "no detectable difference", again
        ((0.01, 0.04), (0.5, 0.2), ["interval now excludes 0 (positive)", "intervals do not overlap"]),
        ((0.0, 0.4), (-0.5, 0.3), ["interval now excludes 0 (negative)"]),
        ((1.0, 0.2), (3.0, 0.5), ["intervals do not overlap"]),  # same sign but another size
    ],
)
def test_what_changed_in_the_fresh_batch_is_said_in_words(original, fresh, changes) -> None:
    assert compare_claim(diff(*original), diff(*fresh, n=20))["changes"] == changes


def _units(mean: float, sd: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n values with exactly this mean and sample sd."""
    x = rng.normal(size=n)
    x = (x - x.mean()) / x.std(ddof=1)
    return mean + sd * x


@settings(max_examples=60, deadline=None)
@given(
    st.floats(-5, 5),
    st.floats(0.01, 3),
    st.integers(2, 30),
    st.floats(-5, 5),
    st.floats(0.01, 3),
    st.integers(2, 30),
    st.integers(0, 2**32 - 1),
)
def test_the_pooled_interval_is_the_paired_t_interval_over_the_union(m1, s1, n1, m2, s2, n2, seed) -> None:
    """Property: from each batch's n, mean and 95 % half-width alone, the pooled estimate equals the t-interval
    computed on the union of the units; Welch's t equals scipy's on the units themselves."""
    rng = np.random.default_rng(seed)
    a, b = _units(m1, s1, n1, rng), _units(m2, s2, n2, rng)
    claims = [difference_claim("s/x", "x", mean_interval(x).as_dict(), scale=1.0) for x in (a, b)]
    pooled = pooled_difference(*claims)
    union = mean_interval(np.concatenate([a, b]))
    assert pooled["n"] == n1 + n2 and pooled["mean"] == pytest.approx(union.mean, abs=1e-9)
    assert pooled["ci95"] == pytest.approx(union.half_width, rel=1e-7)
    test = welch(*claims)
    reference = stats.ttest_ind(b, a, equal_var=False)
    assert test["t"] == pytest.approx(reference.statistic, rel=1e-7)
    assert test["p"] == pytest.approx(reference.pvalue, rel=1e-6, abs=1e-12)
    assert test["consistent"] is bool(reference.pvalue >= 0.05)


def test_the_pooled_cost_claims_of_the_audit() -> None:
    """The issue's audit: Entropy-SGD minus SGD over the 5 + 5 MNIST-5k seeds, from the stored records alone."""
    original = difference_claim("cost/x", "x", {"mean": 0.005, "ci95": 0.007398067091981199, "n": 5})
    fresh = difference_claim("cost/x", "x", {"mean": 0.0024, "ci95": 0.00485679535412611, "n": 5})
    entry = {"original": original, "fresh": fresh, **compare_claim(original, fresh)}
    assert claim_text(pooled_claim(entry)) == "+0.37 ± 0.35 points (95 % CI over 10 seeds)"
    assert entry["consistent"] is True and outcome_text(entry).startswith("consistent (Welch t = -0.82, df = 6.9")


def test_a_verdict_is_consistent_when_the_best_sets_share_a_candidate_and_pools_over_every_replicate() -> None:
    rng = np.random.default_rng(0)

    def values(n):
        base = rng.exponential(size=n)
        return {"sghmc": base, "sgld": base + 1.0, "psgld": base + 5.0}

    a_values, b_values = values(10), values(20)
    b_values["psgld"][3] = 1e195  # a runaway in the fresh batch: ranked out, never tied
    a = verdict_claim("shootout/budget 400", "lowest MSE", ["sghmc"], 10, values=a_values)
    b = verdict_claim(a["id"], "", ["sghmc"], 20, values=b_values)
    result = compare_claim(a, b)
    assert result["consistent"] is True and result["consistency"]["test"] == "the two best sets share a candidate"
    assert result["pooled"]["best"] == ["sghmc"] and result["pooled"]["n"] == 30
    assert result["pooled"]["divergence"] == {"psgld": 1}
    entry = {"original": a, "fresh": b, **result}
    assert outcome_text(entry) == (
        "consistent (the same best set); pooled: lowest: sghmc over 30 replicates; "
        "ranked out as diverged: psgld (1 of 30 replicates)"
    )
    # a smaller batch that ties what the larger one separates does not contradict it; disjoint best sets do
    tied = verdict_claim(a["id"], "", ["sghmc", "sgld"], 5)
    changed = compare_claim(a, tied)
    assert changed["consistent"] is True
    assert changed["changes"] == ["verdict changed: lowest: sghmc -> tied: sghmc, sgld"]
    assert changed["pooled"] is None  # no per-replicate values in the fresh claim: nothing to pool
    assert outcome_text({"original": a, "fresh": tied, **changed}).startswith("consistent (the best sets overlap)")
    other = compare_claim(a, verdict_claim(a["id"], "", ["sgld"], 20))
    assert other["consistent"] is False
    assert outcome_text({"original": a, "fresh": other, **other}).startswith(
        "inconsistent (the best sets are disjoint)"
    )
    assert compare_claim(a, verdict_claim(a["id"], "", [], 20))["consistent"] is None
    with pytest.raises(ValueError, match="a verdict against a difference"):
        compare_claim(a, diff(1, 1))


def test_missing_or_interval_free_claims_are_not_comparable_and_the_words_say_so() -> None:
    entries = compare_claims([diff(1, 0.5), verdict_claim("s/v", "v", ["a"], 3)], [diff(1.1, 0.4, n=20)])
    assert [e["consistent"] for e in entries] == [True, None]
    assert entries[1]["changes"] == ["not measured in the fresh run"]
    assert outcome_text(entries[0]).endswith("pooled: +1.08 ± 0.32 points (95 % CI over 25 seeds)")
    assert outcome_text(entries[1]) == "not comparable: not measured in the fresh run"
    single = difference_claim("s/x", "x", {"mean": 0.01, "ci95": None, "n": 1})
    assert compare_claim(single, diff(1, 1))["consistent"] is None
    assert claim_text(single) == "+1.00 points over 1 seeds (no interval)"


@given(st.floats(-1e3, 1e3), st.floats(1e-6, 1e3), st.integers(2, 100))
def test_a_difference_is_always_consistent_with_itself(mean, half, n) -> None:
    claim = difference_claim("s/x", "x", {"mean": mean, "ci95": half, "n": n}, scale=1.0)
    result = compare_claim(claim, claim)
    assert result["consistent"] is True and result["changes"] == [] and result["consistency"]["p"] == pytest.approx(1)
    assert result["pooled"]["mean"] == pytest.approx(mean) and result["pooled"]["n"] == 2 * n


def test_a_claim_in_other_units_shows_its_own_digits_and_no_blank_unit() -> None:
    eigen = difference_claim("flatness/x", "top eigenvalue", {"mean": 1.034, "ci95": 0.14, "n": 5}, 1.0, "")
    assert claim_text(eigen) == "+1.03 ± 0.14 (95 % CI over 5 seeds)"
    bits = difference_claim("r/x", "bits", {"mean": -0.0301, "ci95": 0.012, "n": 4}, 1.0, "bits per character", 3)
    assert claim_text(bits) == "-0.030 ± 0.012 bits per character (95 % CI over 4 seeds)"
    assert "digits" not in eigen and bits["digits"] == 3  # records of the default precision are unchanged


def test_every_run_and_sweep_step_states_claims_and_the_others_say_why_not() -> None:
    from localentropy.experiments.reproduce.findings.replication import NOT_REPLICATED, STEP_CLAIMS
    from localentropy.experiments.reproduce.steps import registered_steps

    steps = {s.name: s.kind for s in registered_steps()}
    assert set(STEP_CLAIMS) == {name for name, kind in steps.items() if kind in ("run", "sweep")}
    assert set(NOT_REPLICATED) == set(steps) - set(STEP_CLAIMS)


def test_the_pooled_differences_are_tallied_by_direction() -> None:
    from localentropy.experiments.reproduce.findings.replication import step_counts

    original = [diff(1.0, 0.5), diff(0.1, 0.5), diff(-1.0, 0.5), verdict_claim("s/v", "v", ["a"], 3)]
    fresh = [diff(1.0, 0.2, 20), diff(0.1, 0.2, 20), diff(-1.0, 0.2, 20), verdict_claim("s/v", "v", ["a"], 20)]
    for i, c in enumerate(original[:3]):
        c["id"] = fresh[i]["id"] = f"s/{i}"
    counts = step_counts(compare_claims(original, fresh))
    assert counts["directions"] == {"differences": 3, "above": 1, "below": 1, "hold": 1}
    assert (counts["total"], counts["consistent"], counts["inconsistent"], counts["not_comparable"]) == (4, 4, 0, 0)
    assert step_counts(compare_claims(original[3:], fresh[3:]))["directions"]["differences"] == 0
