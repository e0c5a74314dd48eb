"""[tuning] tables: every mistake named with its field and the allowed values, in comparison and sweep configs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from localentropy.cli import main
from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.sweeps.config import parse_sweep_config
from tests.cli.common import RUN_BASE, SWEEP_BASE, to_toml

RUN: dict[str, Any] = {
    **copy.deepcopy(RUN_BASE),
    "estimators": [
        {"label": "a", "sampler": "sgld", "step_size_fraction": 0.5, "budgets": [8, 16]},
        {
            "label": "b",
            "sampler": "sghmc",
            "step_size_fraction": 0.5,
            "hyperparameters": {"friction": 0.2},
            "budgets": [8, 16],
        },
        {"label": "s", "kind": "smoothing", "budgets": [4]},
    ],
    "tuning": {"trials": 4, "replicates": 2},
}
SWEEP: dict[str, Any] = copy.deepcopy(SWEEP_BASE)
SWEEP["base"]["optimizers"] = [
    {
        "label": "esgd",
        "kind": "entropy-sgd",
        "lr": 0.5,
        "options": {"gamma": 1.0, "inner_steps": 2},
        "sampler": "sghmc",
        "sampler_options": {"step_size": 0.05, "friction": 0.5, "temperature": 1e-8},
    },
    {"kind": "sgd", "lr": 0.1},
]
SWEEP["grid"] = {"optimizer": ["esgd", "sgd"], "seed": [1, 2]}
SWEEP["tuning"] = {"trials": 4}


def _problems(parse: Any, data: dict[str, Any], **tuning: Any) -> str:
    data = copy.deepcopy(data)
    data["tuning"] = {**data["tuning"], **tuning}
    with pytest.raises(ConfigError) as info:
        parse(data)
    return "\n".join(info.value.problems)


def test_a_valid_tuning_table_is_read_with_its_defaults():
    config = parse_config(copy.deepcopy(RUN))
    assert config.tuning is not None
    assert config.tuning.estimators == ["a", "b"]  # every local-entropy estimator; smoothing has nothing to tune
    assert config.tuning.budget == 8  # the middle (lower) of the shared budgets
    assert config.tuning.method == "tpe" and config.tuning.max_extensions == 2
    assert config.as_dict()["tuning"]["trials"] == 4


@pytest.mark.parametrize(
    ("tuning", "expected"),
    [
        ({"method": "random"}, "tuning.method: got 'random' (str), expected one of 'tpe', 'sobol', 'grid'"),
        ({"trials": 0}, "tuning.trials: got 0"),
        ({"trials": 2, "max_extensions": 2}, "tuning.trials: got 2 (int), expected at least max_extensions + 1 = 3"),
        ({"pruner": "hyperband"}, "tuning.pruner: got 'hyperband' (str), expected one of 'none', 'successive-halving'"),
        ({"pruner": "successive-halving", "replicates": 1}, "give tuning.replicates >= 2"),
        ({"speed": 1}, "tuning.speed: unknown field; allowed: budget, estimators, extension_factor"),
        ({"seeds": 2}, "tuning.seeds: unknown field"),  # a sweep's field
        ({"estimators": ["s"]}, "tuning.estimators: 's' is not a local-entropy estimator of this config"),
        ({"budget": 3}, "tuning.budget: got 3 (int), expected at least 2 steps per chain (>= 4)"),
        (
            {"space": {"sgld": {"friction": {"low": 0.1, "high": 1.0}}}},
            "tuning.space.sgld.friction: not a tunable hyperparameter of estimator 'a'; allowed: step_size",
        ),
        ({"space": {"b": {"temperature": {"low": 0.1, "high": 1.0}}}}, "allowed: step_size, friction, noise_estimate"),
        (
            {"space": {"adam": {"step_size": {"low": 0.1, "high": 1.0}}}},
            "tuning.space.adam: not a tuned estimator label nor a registered sampler; allowed: a, b, baoab, cyclical",
        ),
        (
            {"space": {"a": {"step_size": {"low": 0.1, "high": 0.1}}}},
            "tuning.space.a.step_size.high: got 0.1 (float), expected a number > low (0.1)",
        ),
        (
            {"space": {"a": {"step_size": {"low": 0.0, "high": 0.1, "log": True}}}},
            "tuning.space.a.step_size.low: got 0.0 (float), expected a number in (0, inf)",
        ),
        ({"space": {"a": {"step_size": {"choices": []}}}}, "tuning.space.a.step_size.choices: got []"),
        ({"space": {"a": {"step_size": 0.1}}}, "tuning.space.a.step_size: got 0.1 (float), expected a table"),
    ],
)
def test_comparison_tuning_mistakes_name_the_field(tuning, expected):
    assert expected in _problems(lambda d: parse_config(d), RUN, **tuning)


def test_tuning_needs_one_gamma_and_one_temperature():
    data = {**copy.deepcopy(RUN), "gamma": [1.0, 2.0]}
    with pytest.raises(ConfigError, match="tuning: tunes at one gamma and one temperature; got 2 gamma"):
        parse_config(data)


def test_a_space_whose_end_cannot_build_its_sampler_is_refused_before_anything_runs(tmp_path, capsys):
    """SGHMC's friction is at most 1: a range beyond it is refused up front under the field that sets it."""
    from localentropy.experiments.comparison.runner import run_comparison

    data = copy.deepcopy(RUN)
    data["tuning"]["space"] = {"b": {"friction": {"low": 0.1, "high": 2.0}}}
    with pytest.raises(ConfigError, match=r"tuning.space.b.friction: friction must be in \(0, 1\]"):
        run_comparison(parse_config(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sweep_tuning_mistakes_name_the_field():
    sweep = parse_sweep_config(copy.deepcopy(SWEEP))
    assert sweep.tuning is not None and sweep.tuning.optimizers == ["esgd", "sgd"]
    assert set(sweep.spaces["esgd"]) == {"step_size", "friction"} and set(sweep.spaces["sgd"]) == {"lr"}
    for tuning, expected in [
        ({"seed_offset": 1}, "tuning.seed_offset: got 1 (int), expected tuning seeds apart from the sweep's seeds"),
        ({"optimizers": ["adam"]}, "tuning.optimizers: 'adam' is not an optimizer this sweep runs; allowed: esgd"),
        ({"replicates": 2}, "tuning.replicates: unknown field"),
        (
            {"space": {"sgd": {"momentum": {"low": 0.1, "high": 0.9}}}},
            "tuning.space.sgd.momentum: not a tunable hyperparameter of optimizer 'sgd'; allowed: lr, "
            "options.dampening, options.momentum, options.nesterov, options.weight_decay",
        ),
        (
            {"space": {"esgd": {"options.rho": {"low": 0.1, "high": 0.9}}}},
            "tuning.space.esgd.'options.rho': not a tunable hyperparameter of optimizer 'esgd'; allowed: lr, "
            "step_size, friction, noise_estimate, options.averaging, options.coupling, options.gamma, "
            "options.inner_steps, options.momentum, options.nesterov, options.outer_scale, options.scoping, "
            "options.warm_start, options.weight_decay",
        ),
        ({"space": {"esgd": {"beta": {"low": 0.1, "high": 0.9}}}}, "allowed: lr, step_size, friction"),
    ]:
        assert expected in _problems(lambda d: parse_sweep_config(d), SWEEP, **tuning), tuning


def test_a_sweep_cannot_both_sweep_and_tune_a_field_nor_tune_without_validation():
    data = copy.deepcopy(SWEEP)
    data["runs"] = [{"lr": 0.1}, {"lr": 0.3}]
    assert "grid / runs: 'lr' sets lr of 'sgd', which [tuning] chooses" in _problems(parse_sweep_config, data)
    data = copy.deepcopy(SWEEP)
    data["base"]["data"]["validation_fraction"] = 0.0
    assert "give data.validation_fraction > 0" in _problems(parse_sweep_config, data)


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_bad_tuning_is_exit_2_without_a_traceback(tmp_path, capsys, command):
    data = copy.deepcopy(RUN if command == "run" else SWEEP)
    data["tuning"]["method"] = "bayes"
    config = tmp_path / "bad.toml"
    config.write_text(to_toml(data))
    assert main([command, str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "tuning.method: got 'bayes'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
