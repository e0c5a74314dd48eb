"""The findings' intervals come from the statistics module, over the independent unit: the seed, not the pairs
a seed contributes to (the "Rademacher minus Gaussian over 40 pairs" sentence); verdicts say "tied"."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from localentropy.experiments.reproduce.findings.common import over_seeds, paired
from localentropy.experiments.reproduce.findings.overhead import factor_table
from localentropy.experiments.reproduce.findings.samplers import _beats_sgld, _verdicts
from localentropy.experiments.reproduce.findings.smoothing import NEAR_ZERO, TIED, _winner_counts


def _cell(inner: str, noise: str, by_seed: dict[int, float]) -> dict:
    return {"setting": {"inner_steps": inner, "noise": noise}, "by_seed": by_seed}


def test_a_factor_is_measured_over_seeds_not_pairs():
    # 3 seeds x 2 settings of the other factor: 6 pairs, but 3 independent units
    cells = [
        _cell("1", "gaussian", {0: 0.10, 1: 0.20, 2: 0.30}),
        _cell("1", "rademacher", {0: 0.11, 1: 0.23, 2: 0.30}),
        _cell("5", "gaussian", {0: 0.10, 1: 0.20, 2: 0.30}),
        _cell("5", "rademacher", {0: 0.13, 1: 0.21, 2: 0.30}),
    ]
    lines, effects = factor_table(cells, ["inner_steps", "noise"])
    d = effects["noise: rademacher - gaussian"]
    per_seed = [0.02, 0.02, 0.0]  # each seed's mean over the two inner_steps settings
    mean, sd = sum(per_seed) / 3, stats.tstd(per_seed)
    assert (d["n"], d["pairs"], d["identical"]) == (3, 6, 2)
    assert d["mean"] == pytest.approx(mean)
    assert d["ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert "seeds" in lines[0] and "| 3 |" in next(row for row in lines if row.startswith("| noise"))


def test_paired_and_over_seeds_agree_with_the_module():
    d = paired({0: 0.05, 1: 0.07, 2: 0.06}, {0: 0.04, 1: 0.05, 2: 0.06})
    assert d["ci95"] == d["half_width"] and d["unit"] == "seed" and d["n"] == 3
    o = over_seeds({0: [0.01, 0.01], 1: [0.02], 2: [0.0]})
    assert o["mean"] == pytest.approx(0.01) and o["n"] == 3 and o["pairs"] == 4


def _record(estimator: str, budget: int, errors: list[float] | None) -> dict:
    metrics = {
        "mse": sum(errors or [1.0]) / len(errors or [1.0]),
        "mse_mcse": 0.1,
        "truth_norm": 1.0,
        "relative_mse": 1.0,
        "grad_evals": budget,
    }
    if errors is not None:
        metrics["squared_errors"] = errors
    return {
        "key": {"estimator": estimator, "point": 0, "gamma": 1.0, "temperature": 0.1, "budget": budget},
        "status": "ok",
        "metrics": metrics,
    }


def test_shootout_verdicts_say_tied():
    base = [1.0, 2.0, 3.0, 4.0, 5.0]
    records = [
        _record("sgld", 400, base),
        _record("copy", 400, list(base)),
        _record("worse", 400, [x + 10 for x in base]),
    ]
    ((budget, text),) = _verdicts({"records": records}, [400])
    assert budget == 400 and text.startswith(("tied: `copy`, `sgld`", "tied: `sgld`, `copy`"))
    cell = {(r["key"]["estimator"], 400): r for r in records}
    beats = _beats_sgld([(400, ["copy", "sgld", "worse"])], cell)  # the data of the section's sentence
    assert beats == {"ran": True, "unpaired": False, "parts": [[400, []]], "always_worse": ["worse"]}


def test_smoothing_wins_need_a_verdict_and_a_truth_away_from_zero():
    def flat(estimator, errors, truth_norm=1.0, near=False):
        return {
            "temperature": 0.1,
            "point": "p",
            "budget": 8,
            "estimator": estimator,
            "relative_mse": 1.0,
            "mse": 1.0,
            "variance": 1.0,
            "truth_norm": truth_norm,
            "truth_near_zero": near,
            "squared_errors": errors,
        }

    same = [1.0, 2.0, 3.0]
    assert _winner_counts([flat("a", same), flat("b", list(same))]) == {TIED: 1}
    assert _winner_counts([flat("a", same), flat("b", [x + 5 for x in same])]) == {"a": 1}
    assert _winner_counts([flat("a", same, near=True), flat("b", same)]) == {NEAR_ZERO: 1}
