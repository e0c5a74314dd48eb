"""The search driver: deterministic, equal trials and units for every method, ranges extended at an edge."""

from __future__ import annotations

import math

import pytest

from localentropy.experiments.tuning.search import EDGE, round_sizes, search
from localentropy.experiments.tuning.space import Dimension, TuningConfig


def _bowl(best: float, evals: int = 10):
    """An objective with its minimum at step_size = ``best`` (log scale) and a unit-dependent offset."""

    def evaluate(values, unit):
        return (math.log(values["step_size"]) - math.log(best)) ** 2 + 0.01 * unit, evals

    return evaluate


def _space(low: float = 1e-3, high: float = 1e-1) -> dict[str, Dimension]:
    return {"step_size": Dimension(low, high, log=True)}


@pytest.mark.parametrize("method", ["tpe", "sobol", "grid"])
def test_the_same_config_and_seed_give_the_same_trials_and_choice(method):
    config = TuningConfig(method=method, trials=9, seed=3, max_extensions=1)
    first = search(_space(), _bowl(0.01), config, units=2)
    second = search(_space(), _bowl(0.01), config, units=2)
    assert first == second
    assert first["trials"] == 9 and len(first["history"]) == 9
    other = search(_space(), _bowl(0.01), TuningConfig(method=method, trials=9, seed=4, max_extensions=1), units=2)
    assert method == "grid" or other["history"] != first["history"]  # the seed drives the design


def test_every_trial_spends_the_same_units_and_the_record_adds_them_up():
    config = TuningConfig(method="tpe", trials=7, seed=0, max_extensions=0)
    record = search(_space(), _bowl(0.01, evals=25), config, units=3)
    assert record["units_per_trial"] == 3 and record["grad_evals_per_trial"] == 75
    assert all(t["units"] == 3 and t["grad_evals"] == 75 for t in record["history"])
    assert record["grad_evals"] == 7 * 75
    assert record["complete"] == 7 and record["pruned"] == record["diverged"] == 0


def test_the_chosen_values_are_the_lowest_mean_objective_found():
    record = search(_space(), _bowl(0.01), TuningConfig(trials=12, seed=1, max_extensions=0), units=2)
    best = min(record["history"], key=lambda t: t["objective"])
    assert record["chosen"] == best["params"] and record["objective"] == best["objective"]
    assert abs(math.log(record["chosen"]["step_size"] / 0.01)) < 1.0  # TPE finds the bowl within a factor e


def test_a_best_value_at_the_edge_extends_its_log_range_and_a_stubborn_one_is_reported():
    """The optimum at 1.0 lies beyond [1e-3, 0.1]: the high end is widened 10x per round, twice, to 10."""
    config = TuningConfig(method="grid", trials=9, seed=0, max_extensions=2)
    record = search(_space(), _bowl(1.0), config, units=1)
    assert [(e["round"], e["side"], e["high"]) for e in record["extensions"]] == [
        (0, "high", pytest.approx(1.0)),
        (1, "high", pytest.approx(10.0)),
    ]
    assert record["space"]["step_size"]["high"] == pytest.approx(10.0)
    assert record["initial_space"]["step_size"]["high"] == pytest.approx(0.1)
    assert record["chosen"]["step_size"] == pytest.approx(1.0, rel=0.3) and record["at_edge"] == []
    # without extensions, the best value sits at the high end and the record says so
    stuck = search(_space(), _bowl(1.0), TuningConfig(method="grid", trials=4, max_extensions=0), units=1)
    assert stuck["at_edge"] == [{"name": "step_size", "side": "high", "bound": 0.1, "hard_limit": False}]
    assert Dimension(1e-3, 1e-1, log=True).position(stuck["chosen"]["step_size"]) >= 1 - EDGE


def test_a_range_is_never_extended_past_its_hard_limit():
    space = {"friction": Dimension(0.01, 1.0, log=True)}

    def evaluate(values, unit):
        return -values["friction"], 1

    record = search(
        space,
        evaluate,
        TuningConfig(method="grid", trials=6, max_extensions=2),
        units=1,
        limits={"friction": (0.0, 1.0)},
    )
    assert record["extensions"] == [] and record["space"]["friction"]["high"] == 1.0
    assert record["at_edge"] == [{"name": "friction", "side": "high", "bound": 1.0, "hard_limit": True}]


def test_diverged_trials_score_infinity_and_pruning_stops_trailing_trials():
    def evaluate(values, unit):
        return (math.inf if values["step_size"] > 0.05 else values["step_size"]), 4

    record = search(_space(), evaluate, TuningConfig(method="sobol", trials=8, max_extensions=0), units=2)
    assert record["diverged"] >= 1 and record["chosen"]["step_size"] <= 0.05
    assert all(t["objective"] is None for t in record["history"] if t["state"] == "diverged")
    pruned = search(
        _space(), _bowl(0.01), TuningConfig(trials=12, pruner="successive-halving", max_extensions=0), units=4
    )
    assert pruned["pruned"] >= 1 and pruned["grad_evals"] < 12 * 4 * 10
    assert all(t["units"] < 4 for t in pruned["history"] if t["state"] == "pruned")


def test_choices_and_the_grid_design():
    space = {"step_size": Dimension(1e-3, 1e-1, log=True), "n_cycles": Dimension(choices=[1, 2, 4])}
    record = search(
        space,
        lambda v, u: (v["n_cycles"] + v["step_size"], 1),
        TuningConfig(method="grid", trials=6, max_extensions=0),
        units=1,
    )
    assert {t["params"]["n_cycles"] for t in record["history"]} <= {1, 2, 4}
    assert record["chosen"]["n_cycles"] == 1 and record["trials"] == 6
    assert round_sizes(20, 3) == [7, 7, 6]
