"""Claims as records and their replication: the seed ranges never meet, and a fresh run's claim is judged held
(same sign, or verdict, and overlapping intervals) or told what changed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    verdict_claim,
)


@given(st.lists(st.integers(0, TUNING_SEED_OFFSET - 1), min_size=1, max_size=50), st.integers(1, 500),
       st.integers(0, MAX_FRESH_ROUNDS - 1), st.integers(0, MAX_FRESH_ROUNDS - 1))  # fmt: skip
def test_fresh_seeds_never_meet_evaluation_tuning_or_another_round(evaluation, k, round_a, round_b) -> None:
    fresh = fresh_seeds(k, round_a)
    assert len(set(fresh)) == k
    assert not set(fresh) & (set(evaluation) | set(tuning_seeds(evaluation)))
    check_disjoint(fresh, evaluation, "grid.seed")  # no error
    if round_a != round_b:
        assert not set(fresh) & set(fresh_seeds(k, round_b))


def test_colliding_or_bad_fresh_seeds_are_refused_by_name() -> None:
    fresh = fresh_seeds(20)
    with pytest.raises(ConfigError, match=r"grid\.seed: the fresh seeds 2000000\.\.2000019 include the evaluation "
                                          r"seed\(s\) 2000003"):  # fmt: skip
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
    ("original", "fresh", "held", "changes"),
    [
        ((1.2, 0.7), (0.9, 0.3), True, []),  # same sign, both exclude 0, overlapping
        ((1.2, 0.7), (-0.9, 0.3), False, ["sign flipped", "intervals do not overlap"]),
        ((1.2, 0.7), (0.4, 0.5), False, ["interval no longer excludes 0"]),
        ((1.23, 0.72), (0.06, 0.31), False, ["interval no longer excludes 0", "intervals do not overlap"]),
        ((0.01, 0.04), (0.02, 0.03), True, []),  # "no detectable difference", again
        ((0.01, 0.04), (0.5, 0.2), False, ["interval now excludes 0 (positive)", "intervals do not overlap"]),
        ((0.0, 0.4), (-0.5, 0.3), False, ["interval now excludes 0 (negative)"]),
        ((1.0, 0.2), (3.0, 0.5), False, ["intervals do not overlap"]),  # same sign but another size
    ],
)
def test_a_difference_holds_with_the_same_sign_and_overlapping_intervals(original, fresh, held, changes) -> None:
    result = compare_claim(diff(*original), diff(*fresh, n=20))
    assert result == {"held": held, "changes": changes}


def test_a_verdict_holds_when_the_best_set_is_the_same() -> None:
    a = verdict_claim("shootout/budget 400", "lowest MSE", ["sghmc"], 10)
    assert compare_claim(a, verdict_claim(a["id"], "", ["sghmc"], 20)) == {"held": True, "changes": []}
    tied = verdict_claim(a["id"], "", ["sghmc", "sgld"], 20)
    assert compare_claim(a, tied) == {"held": False, "changes": ["verdict changed: lowest: sghmc -> tied: sghmc, sgld"]}
    assert compare_claim(a, verdict_claim(a["id"], "", [], 20))["held"] is None
    with pytest.raises(ValueError, match="a verdict against a difference"):
        compare_claim(a, diff(1, 1))


def test_missing_or_interval_free_claims_are_not_comparable_and_the_words_say_so() -> None:
    entries = compare_claims([diff(1, 0.5), verdict_claim("s/v", "v", ["a"], 3)], [diff(1.1, 0.4, n=20)])
    assert [e["held"] for e in entries] == [True, None]
    assert entries[1]["changes"] == ["not measured in the fresh run"]
    assert outcome_text(entries[0], 20) == "held on 20 fresh seeds (+1.10 ± 0.40 points over 20 seeds)"
    assert outcome_text(entries[1], 20) == "not comparable on 20 fresh seeds: not measured in the fresh run"
    single = difference_claim("s/x", "x", {"mean": 0.01, "ci95": None, "n": 1})
    assert compare_claim(single, diff(1, 1))["held"] is None and claim_text(single) == "+1.00 points over 1 seeds"
    flipped = compare_claims([diff(1.2, 0.7)], [diff(-0.9, 0.3, n=20)])[0]
    assert outcome_text(flipped, 20).startswith("did not hold on 20 fresh seeds: sign flipped; intervals do not")


@given(st.floats(-1e3, 1e3), st.floats(1e-6, 1e3), st.integers(2, 100))
def test_a_difference_always_holds_against_itself(mean, half, n) -> None:
    claim = difference_claim("s/x", "x", {"mean": mean, "ci95": half, "n": n}, scale=1.0)
    assert compare_claim(claim, claim) == {"held": True, "changes": []}


def test_a_claim_in_other_units_shows_its_own_digits_and_no_blank_unit() -> None:
    eigen = difference_claim("flatness/x", "top eigenvalue", {"mean": 1.034, "ci95": 0.14, "n": 5}, 1.0, "")
    assert claim_text(eigen) == "+1.03 ± 0.14 over 5 seeds"
    bits = difference_claim("r/x", "bits", {"mean": -0.0301, "ci95": 0.012, "n": 4}, 1.0, "bits per character", 3)
    assert claim_text(bits) == "-0.030 ± 0.012 bits per character over 4 seeds"
    assert "digits" not in eigen and bits["digits"] == 3  # records of the default precision are unchanged


def test_every_run_and_sweep_step_states_claims_and_the_others_say_why_not() -> None:
    from localentropy.experiments.reproduce.findings.replication import NOT_REPLICATED, STEP_CLAIMS
    from localentropy.experiments.reproduce.steps import registered_steps

    steps = {s.name: s.kind for s in registered_steps()}
    assert set(STEP_CLAIMS) == {name for name, kind in steps.items() if kind in ("run", "sweep")}
    assert set(NOT_REPLICATED) == set(steps) - set(STEP_CLAIMS)


def test_the_fresh_differences_are_tallied_by_direction() -> None:
    from localentropy.experiments.reproduce.findings.replication import fresh_directions

    original = [diff(1.0, 0.5), diff(0.1, 0.5), diff(-1.0, 0.5), verdict_claim("s/v", "v", ["a"], 3)]
    fresh = [diff(1.0, 0.2, 20), diff(0.1, 0.2, 20), diff(-1.0, 0.2, 20), verdict_claim("s/v", "v", ["a"], 20)]
    for i, c in enumerate(original[:3]):
        c["id"] = fresh[i]["id"] = f"s/{i}"
    record = {"claims": compare_claims(original, fresh)}
    assert fresh_directions(record) == ("on the fresh seeds 1 of the 3 differences lie above 0 beyond their 95 % "
                                        "interval, 1 below, 1 hold 0")  # fmt: skip
    assert fresh_directions({"claims": compare_claims(original[3:], fresh[3:])}) == ""
