"""A comparison and a sweep with [tuning], end to end: the record in results.json and the report, equal budgets,
tuning points and seeds apart from the reported ones, and the evaluation run at the chosen values."""

from __future__ import annotations

import copy
import io
import json

import pytest

from localentropy.experiments.comparison import tuned
from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.comparison.plan import build_points, build_problem
from localentropy.experiments.comparison.runner import run_comparison
from localentropy.experiments.sweeps.config import parse_sweep_config
from localentropy.experiments.sweeps.runner import run_sweep
from tests.experiments.tuning.test_space import RUN, SWEEP


def _flat(seeds):
    return {s for row in seeds for s in row}


def test_a_tuned_comparison_records_equal_budgets_apart_from_the_reported_data(tmp_path, capsys):
    config = parse_config(copy.deepcopy(RUN))
    out, _ = run_comparison(config, tmp_path / "run")
    results = json.loads((out / "results.json").read_text())
    tuning = results["tuning"]
    assert tuning["objective"] == "mse" and tuning["budget"] == 8 and tuning["replicates"] == 2
    records = tuning["estimators"]
    assert list(records) == ["a", "b"]
    assert {r["trials"] for r in records.values()} == {4}
    assert {r["grad_evals_per_trial"] for r in records.values()} == {48}  # 2 replicates of 8 + 16 (stability)
    assert set(records["b"]["chosen"]) == {"step_size", "friction"}
    # the tuning points and replicate seeds are not the reported ones
    assert not _flat(tuning["replicate_seeds"]) & _flat(tuning["evaluation_seeds"])
    reported = build_points(config, build_problem(config).dim).tolist()
    assert tuning["point_values"] != reported and "fresh random points" in tuning["points"]
    # the evaluation ran at the chosen values
    for label, record in records.items():
        row = next(r for r in results["records"] if r["key"]["estimator"] == label)
        assert f"step_size={record['chosen']['step_size']!r}" in row["estimator"]["settings"]["sampler"]
    report = (out / "report.md").read_text()
    assert "## Tuning" in report and "| b | 4 (3 / 0 / 1) | 48 |" in report
    assert "tuned b: step_size" in capsys.readouterr().err


def test_a_comparison_on_other_replicates_reuses_the_search_and_another_search_does_not(tmp_path):
    first, _ = run_comparison(parse_config(copy.deepcopy(RUN)), tmp_path / "run")
    original = json.loads((first / "results.json").read_text())["tuning"]
    fresh = copy.deepcopy(RUN) | {"first_replicate": 50, "replicates": 3}  # as reproduce --fresh-seeds sets them
    log = io.StringIO()
    out, _ = run_comparison(parse_config(fresh), tmp_path / "fresh", progress=log, tuning_from=first)
    tuning = json.loads((out / "results.json").read_text())["tuning"]
    assert "the same search as" in log.getvalue() and tuning["estimators"] == original["estimators"]
    assert tuning["evaluation_seeds"] != original["evaluation_seeds"] and len(tuning["evaluation_seeds"][0]) == 3
    other = copy.deepcopy(fresh)
    other["tuning"] = {**other["tuning"], "trials": 3}
    log = io.StringIO()
    run_comparison(parse_config(other), tmp_path / "other", progress=log, tuning_from=first)
    assert "the same search as" not in log.getvalue()


def test_the_same_config_tunes_to_the_same_values_and_fixed_points_use_another_rotation():
    data = copy.deepcopy(RUN)
    data["points"] = {"kind": "origin"}
    config = parse_config(data)
    problem = build_problem(config)
    points = build_points(config, problem.dim)
    first, second = (tuned.tune(config, problem, points, progress=None) for _ in range(2))  # type: ignore[arg-type]
    assert first == second
    assert "problem seed 1000000" in first["points"] and first["point_values"] == points.tolist()


def test_a_tuned_sweep_trains_every_method_at_its_chosen_values_on_other_seeds(tmp_path, capsys):
    data = copy.deepcopy(SWEEP)
    data["tuning"] = {"trials": 3, "max_extensions": 0, "seeds": 2}
    sweep = parse_sweep_config(data)
    out, _, results = run_sweep(sweep, tmp_path / "sweep", executor="inline")
    tuning = results["tuning"]
    assert tuning["tuning_seeds"] == [1_000_000, 1_000_001] and tuning["evaluation_seeds"] == [1, 2]
    records = tuning["optimizers"]
    assert {r["trials"] for r in records.values()} == {3} and {r["units_per_trial"] for r in records.values()} == {2}
    assert set(records["sgd"]["chosen"]) == {"lr"} and set(records["esgd"]["chosen"]) == {"step_size", "friction"}
    for run in results["runs"]:
        config = json.loads((out / run["dir"] / "results.json").read_text())["config"]
        optimizer = config["optimizers"][0]
        chosen = records[optimizer["label"]]["chosen"]
        if "lr" in chosen:
            assert optimizer["lr"] == pytest.approx(chosen["lr"])
        else:
            assert optimizer["sampler_options"]["step_size"] == pytest.approx(chosen["step_size"])
    assert (out / "tuning" / "sgd.json").is_file() and "## Tuning" in (out / "report.md").read_text()
    # a rerun reuses the saved searches: the same chosen values, nothing retuned
    again = run_sweep(parse_sweep_config(copy.deepcopy(data)), tmp_path / "sweep", executor="inline")[2]
    assert again["tuning"]["optimizers"] == json.loads(json.dumps(records))
    # the same sweep on other evaluation seeds (a fresh-seed rerun) takes the same searches, not a second run of them
    fresh = copy.deepcopy(data)
    fresh["grid"]["seed"] = [7, 8]
    log = io.StringIO()
    _, _, replicated = run_sweep(
        parse_sweep_config(fresh), tmp_path / "fresh", executor="inline", progress=log, tuning_from=out / "tuning"
    )
    assert replicated["tuning"]["optimizers"] == json.loads(json.dumps(records))
    assert "reused" in log.getvalue() and "tuning 2 optimizer(s)" not in log.getvalue()
    assert replicated["tuning"]["evaluation_seeds"] == [7, 8]
    # another search (one trial more) is a different job: it runs
    other = copy.deepcopy(fresh) | {"tuning": {**data["tuning"], "trials": 2}}
    log = io.StringIO()
    run_sweep(
        parse_sweep_config(other), tmp_path / "other", executor="inline", progress=log, tuning_from=out / "tuning"
    )
    assert "reused" not in log.getvalue() and "tuning 2 optimizer(s)" in log.getvalue()


@pytest.mark.parametrize(
    "executor",
    ["inline", pytest.param("ray", marks=pytest.mark.slow)],  # ray: 30-50 s (a raylet, a GCS and two workers)
)
def test_a_sweep_tunes_each_optimizers_own_options_on_any_executor(tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray", reason="the Ray executor needs ray (pip install 'localentropy[ray]')")
    data = copy.deepcopy(SWEEP)
    data["base"]["optimizers"][1]["options"] = {"momentum": 0.9, "nesterov": True}
    data["tuning"] = {
        "trials": 2,
        "max_extensions": 0,
        "seeds": 1,
        "space": {
            "esgd": {
                "options.gamma": {"low": 0.3, "high": 3.0, "log": True},
                "options.inner_steps": {"choices": [2, 3]},
                "step_size": {"low": 0.01, "high": 0.1, "log": True},
            },
            "sgd": {"lr": {"low": 0.05, "high": 0.2, "log": True}, "options.momentum": {"low": 0.5, "high": 0.95}},
        },
    }
    sweep = parse_sweep_config(data)
    out, _, results = run_sweep(sweep, tmp_path / executor, executor=executor, workers=2)
    records = results["tuning"]["optimizers"]
    assert set(records["esgd"]["chosen"]) == {"options.gamma", "options.inner_steps", "step_size"}
    assert set(records["sgd"]["chosen"]) == {"lr", "options.momentum"}
    assert records["esgd"]["chosen"]["options.inner_steps"] in (2, 3)
    for run in results["runs"]:
        optimizer = json.loads((out / run["dir"] / "results.json").read_text())["config"]["optimizers"][0]
        for name, value in records[optimizer["label"]]["chosen"].items():
            if name.startswith("options."):
                assert optimizer["options"][name.removeprefix("options.")] == pytest.approx(value)
        if optimizer["label"] == "sgd":
            assert optimizer["options"]["nesterov"] is True  # what the space leaves out stays as configured


def test_a_budget_buys_every_sampler_the_same_gradient_evaluations():
    """MALA evaluates two gradients per step: at a budget it runs half the steps, so a trial (and a record) costs
    it what it costs the others."""
    from localentropy.experiments.comparison.plan import Task, local_entropy_estimator

    data = copy.deepcopy(RUN)
    data["estimators"][1] = {"label": "m", "sampler": "mala", "step_size_fraction": 0.5, "budgets": [8, 16]}
    config = parse_config(data)
    problem = build_problem(config)
    x = build_points(config, problem.dim)[0]
    for spec in config.estimators[:2]:
        estimator = local_entropy_estimator(Task({"budget": 16}, spec, x, 1.0, 0.1), problem, config.chains)
        assert estimator.estimate(x, config.chains).grad_evals == 16, spec.label


def test_a_replicate_that_runs_away_makes_the_trial_diverged():
    """The runaway rule of tuning: relative to the truth's squared norm (a chain that stays put scores about 1)."""
    assert tuned.ran_away(float("inf"), 1.0) and tuned.ran_away(float("nan"), 1.0)
    assert tuned.ran_away(1.01 * tuned.TUNING_RUNAWAY, 1.0) and not tuned.ran_away(0.99 * tuned.TUNING_RUNAWAY, 1.0)
    assert not tuned.ran_away(1e300, 0.0)  # no scale: only a non-finite value runs away
    from localentropy.experiments.tuning.search import search
    from localentropy.experiments.tuning.space import Dimension, TuningConfig

    space = {"step_size": Dimension(low=1e-3, high=1.0, log=True)}
    record = search(space, lambda values, unit: (1.0 if unit < 2 else float("inf"), 1), TuningConfig(trials=3), 4)
    assert record["diverged"] == 3 and record["chosen"] is None
    assert {t["units"] for t in record["history"]} == {3}  # it stops at the replicate that ran away
