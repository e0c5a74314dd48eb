"""Config validation builds the real objects: every estimator of a comparison at every gamma, temperature and
budget, every optimizer of a training config; a constructor's error comes back under the config field it names."""

from __future__ import annotations

from typing import Any

import pytest

from localentropy.experiments.comparison import plan as plan_module
from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.comparison.runner import build_points, build_problem
from localentropy.experiments.core.config import ConfigError, constructor_problem
from localentropy.experiments.training.optim import OptimizerConfig, check_optimizer


def plan_of(data: dict[str, Any]) -> list[plan_module.Task]:
    config = parse_config(data)
    problem = build_problem(config)
    return plan_module.plan(config, problem, build_points(config, problem.dim))


def test_constructor_problem_puts_the_error_under_the_field_it_names() -> None:
    fields = {"step_size": "estimators[2].hyperparameters.step_size"}
    error = ValueError("step_size must be in (0, inf), got -0.1")
    assert constructor_problem("estimators[2]", error, fields) == (
        "estimators[2].hyperparameters.step_size: step_size must be in (0, inf), got -0.1"
    )
    assert constructor_problem("estimators[2]", ValueError("bad thing"), fields) == "estimators[2]: bad thing"
    assert constructor_problem("x", ValueError(""), fields) == "x: "


def test_every_estimator_is_built_at_every_gamma_temperature_and_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, float, float, int]] = []
    for name in ("local_entropy_estimator", "smoothing_estimator"):
        original = getattr(plan_module, name)

        def spy(task, *args, _original=original):
            built.append((task.spec.label, task.gamma, task.temperature, task.key["budget"]))
            return _original(task, *args)

        monkeypatch.setattr(plan_module, name, spy)
    data = {
        "problem": {"kind": "quadratic", "dim": 2},
        "gamma": [0.5, 1.0],
        "temperature": [0.1, 0.2],
        "points": {"count": 3},
        "estimators": [
            {"label": "le", "sampler": "sgld", "step_size_fraction": 0.5, "budgets": [16, 32]},
            {"label": "sm", "kind": "smoothing", "budgets": [8]},
        ],
    }
    tasks = plan_of(data)
    assert len(tasks) == 3 * 2 * 2 * (2 + 1)
    # each (estimator, gamma, temperature, budget) once, whatever the number of points
    assert sorted(built) == sorted({(t.spec.label, t.gamma, t.temperature, t.key["budget"]) for t in tasks})


def test_a_bad_hyperparameter_is_refused_under_its_field() -> None:
    data = {
        "problem": {"kind": "quadratic", "dim": 2},
        "estimators": [
            {"sampler": "sgld", "step_size_fraction": 0.5, "budgets": [16]},
            {"sampler": "sghmc", "hyperparameters": {"step_size": 0.01, "friction": -1.0}, "budgets": [16, 32]},
        ],
    }
    with pytest.raises(ConfigError) as info:
        plan_of(data)
    (problem,) = info.value.problems  # once, though two budgets would build it
    assert problem.startswith("estimators[1].hyperparameters.friction: ") and "-1.0" in problem


def test_an_optimizer_error_names_the_field() -> None:
    # built unchecked (model_construct): the config's own checks would refuse these before check_optimizer runs
    spec = OptimizerConfig.model_construct(
        label="e",
        kind="entropy-sgd",
        lr=0.1,
        options={"gamma": 1.0},
        sampler="sgld",
        sampler_options={"step_size": -0.1},
    )
    loc, reason = check_optimizer(spec)
    assert loc == ("sampler_options", "step_size") and reason.startswith("step_size ")
    spec = OptimizerConfig.model_construct(label="s", kind="sgd", lr=0.1, options={"momentum": 2.0})
    loc, reason = check_optimizer(spec)
    assert loc == ("options", "momentum") and reason.startswith("momentum must be")
