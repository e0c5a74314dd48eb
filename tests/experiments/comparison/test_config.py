"""Comparison configs: the shipped ones parse, and every kind of mistake is reported at once, each problem naming
its field path, the value found and what is expected; nothing but ConfigError ever escapes."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localentropy.experiments.comparison.config import (
    ConfigError,
    EstimatorConfig,
    RunConfig,
    load_config,
    parse_config,
)
from localentropy.experiments.comparison.runner import build_points, build_problem, plan
from localentropy.experiments.comparison.suite import single_configs
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.samplers import available_samplers

CONFIG_DIR = shipped_dir()
# train_*: localentropy train; sweep_*, mnist_paper*: localentropy sweep (tests/experiments/sweeps/test_sweep.py)
SHIPPED = sorted(p for p in CONFIG_DIR.glob("*.toml") if not p.stem.startswith(("train_", "sweep_", "mnist_paper")))

MINIMAL: dict[str, Any] = {
    "problem": {"kind": "quadratic", "dim": 2},
    "estimators": [{"sampler": "sgld", "step_size_fraction": 0.5, "budgets": [16]}],
}


pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one intra-op thread


def config_with(**changes: Any) -> dict[str, Any]:
    """MINIMAL with top-level fields replaced; ``estimator`` updates the first estimator's table."""
    data = copy.deepcopy(MINIMAL)
    estimator = changes.pop("estimator", None)
    if estimator:
        data["estimators"][0].update(estimator)
    data.update(changes)
    return data


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.problems, "a ConfigError always lists its problems"
    return info.value.problems


def one_problem(data: Any) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


def write(tmp_path: Path, text: str | bytes, name: str = "c.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------------
# Valid configs
# ----------------------------------------------------------------------------------------------------------------


def test_shipped_configs_exist():
    assert {p.stem for p in SHIPPED} >= {"presets", "shootout", "smoothing"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_parses_and_plans(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert config.name == path.stem
    assert config.estimators and all(e.budgets for e in config.estimators)
    for _, single in single_configs(config):  # each problem of a [[problems]] config
        problem = build_problem(single)
        tasks = plan(single, problem, build_points(single, problem.dim, problem))
        assert len({t.id for t in tasks}) == len(tasks)  # every record has its own file


def test_minimal_config_defaults():
    config = parse_config(copy.deepcopy(MINIMAL))
    assert (config.name, config.seed, config.replicates, config.chains, config.threads) == ("run", 0, 10, 4, 1)
    assert config.gammas == [1.0] and config.temperatures == [1.0]
    assert config.keep_draws is True and config.ksd is True
    assert (config.problem.kind, config.problem.dim, config.problem.condition) == ("quadratic", 2, 10.0)
    assert (config.points.kind, config.points.count, config.points.scale) == ("random", 1, 1.0)
    (est,) = config.estimators
    assert isinstance(est, EstimatorConfig)
    assert (est.label, est.kind, est.sampler, est.budgets) == ("sgld", "local-entropy", "sgld", [16])
    assert (est.burn_in_fraction, est.averaging, est.preset, est.step_size_fraction) == (0.2, "uniform", None, 0.5)
    assert config.as_dict()["estimators"][0]["label"] == "sgld"


def test_full_config_from_toml(tmp_path):
    text = """
name = "full"
seed = 7
replicates = 5
chains = 2
gamma = [0.5, 2]
temperature = 0.1
threads = 2
keep_draws = false
ksd = false

[problem]
kind = "quadratic"
dim = 3
condition = 4
n_negative = 1
seed = 3

[points]
kind = "explicit"
values = [[0, 1, 2], [1.5, -1, 0]]

[[estimators]]
label = "le"
sampler = "sghmc"
hyperparameters = { step_size = 0.01, friction = 0.3 }
burn_in_fraction = 0.5
averaging = 0.25
budgets = [8, 32]

[[estimators]]
label = "paper"
preset = "paper"
noise_scale = 0.1
step_size_fraction = 0.1
budgets = 64

[[estimators]]
label = "smooth"
kind = "smoothing"
sigma = 0.3
order = 0
budgets = [10]
"""
    config = load_config(write(tmp_path, text, "whatever.toml"))
    assert config.name == "full"  # the name field wins over the file stem
    assert (config.seed, config.replicates, config.chains, config.threads) == (7, 5, 2, 2)
    assert config.gammas == [0.5, 2.0] and config.temperatures == [0.1]
    assert (config.keep_draws, config.ksd) == (False, False)
    assert (config.problem.condition, config.problem.n_negative, config.problem.seed) == (4.0, 1, 3)
    assert config.points.kind == "explicit" and config.points.count == 2
    assert config.points.values == [[0.0, 1.0, 2.0], [1.5, -1.0, 0.0]]
    le, paper, smooth = config.estimators
    assert le.hyperparameters == {"step_size": 0.01, "friction": 0.3}
    assert (le.burn_in_fraction, le.averaging, le.budgets) == (0.5, 0.25, [8, 32])
    assert (paper.sampler, paper.preset, paper.noise_scale, paper.budgets) == ("sgld", "paper", 0.1, [64])
    assert (smooth.kind, smooth.sigma, smooth.order) == ("smoothing", 0.3, 0)


def test_name_defaults_to_file_stem(tmp_path):
    text = '[problem]\nkind = "quadratic"\ndim = 2\n[[estimators]]\nsampler = "sgld"\nstep_size_fraction = 0.5\n'
    text += "budgets = [16]\n"
    assert load_config(write(tmp_path, text, "my-run.toml")).name == "my-run"


def test_lowdim_problem_kinds():
    for kind in ("double-well", "sharp-wide"):
        config = parse_config(
            {
                "problem": {"kind": kind},
                "estimators": [{"sampler": "sgld", "hyperparameters": {"step_size": 0.01}, "budgets": [16]}],
            }
        )
        assert config.problem.kind == kind and config.problem.dim == 1  # dim defaults to 1 here


# ----------------------------------------------------------------------------------------------------------------
# Each error class: field path, value, expectation
# ----------------------------------------------------------------------------------------------------------------


def test_unknown_top_level_key_lists_allowed():
    message = one_problem(config_with(colour="blue"))
    assert message.startswith("colour: unknown field; allowed: ")
    for allowed in ("chains", "estimators", "gamma", "ksd", "points", "problem", "seed", "temperature", "threads"):
        assert allowed in message


@pytest.mark.parametrize(
    ("changes", "path", "allowed"),
    [
        ({"problem": {"kind": "quadratic", "dim": 2, "size": 3}}, "problem.size", ["condition", "dim", "n_negative"]),
        ({"problem": {"kind": "sharp-wide", "dim": 1, "condition": 3}}, "problem.condition", ["dim", "kind"]),
        # a quadratic is built from condition / n_negative / seed: options would be silently ignored
        ({"problem": {"kind": "quadratic", "dim": 2, "options": {"a": 1}}}, "problem.options", ["condition", "seed"]),
        ({"points": {"kind": "random", "number": 3}}, "points.number", ["count", "scale", "values"]),
        ({"estimator": {"sigma": 0.1}}, "estimators[0].sigma", ["averaging", "burn_in_fraction", "sampler"]),
        # a smoothing estimator has no sampler: both local-entropy fields are reported, each listing the allowed
        ({"estimator": {"kind": "smoothing"}}, "estimators[0].sampler", ["budgets", "kind", "label", "order", "sigma"]),
        ({"estimator": {"kind": "smoothing"}}, "estimators[0].step_size_fraction", ["order", "sigma"]),
    ],
)
def test_unknown_nested_keys_list_allowed(changes, path, allowed):
    problems = problems_of(config_with(**changes))
    hits = [p for p in problems if p.startswith(f"{path}: unknown field; allowed: ")]
    assert len(hits) == 1, problems
    assert all(a in hits[0] for a in allowed), hits[0]


def test_missing_required_fields_reported_once_each():
    assert problems_of({}) == [
        "problem.kind: missing (required)",
        "problem.dim: missing (required)",
        "estimators: missing (required)",
    ]
    problems = problems_of({"problem": {"kind": "quadratic", "dim": 2}, "estimators": [{"label": "a"}]})
    assert "estimators[0].budgets: missing (required)" in problems
    assert "estimators[0].sampler: missing (required)" in problems
    assert "estimators[0]: needs hyperparameters.step_size or step_size_fraction" in problems
    assert len(problems) == 3, problems  # no second, garbled report of the missing values


def test_preset_needs_noise_scale():
    data = config_with()
    data["estimators"][0] = {"preset": "authors-sgld", "step_size_fraction": 0.1, "budgets": [16]}
    assert one_problem(data) == "estimators[0].noise_scale: missing (required)"


@pytest.mark.parametrize(
    ("changes", "path", "shown", "expected"),
    [
        ({"replicates": "10"}, "replicates", "'10' (str)", "an integer"),
        ({"chains": True}, "chains", "True (bool)", "an integer"),
        ({"replicates": 10.0}, "replicates", "10.0 (float)", "an integer"),
        ({"gamma": "1"}, "gamma", "'1' (str)", "a number"),
        ({"temperature": [0.1, "hot"]}, "temperature[1]", "'hot' (str)", "a number"),
        ({"gamma": False}, "gamma", "False (bool)", "a number"),
        ({"keep_draws": 1}, "keep_draws", "1 (int)", "true or false"),
        ({"ksd": "yes"}, "ksd", "'yes' (str)", "true or false"),
        ({"name": ""}, "name", "'' (str)", "a non-empty string"),
        ({"problem": "quadratic"}, "problem", "'quadratic' (str)", "a table"),
        ({"estimators": {"sampler": "sgld"}}, "estimators", "(dict)", "a non-empty array"),
        ({"estimator": {"budgets": ["16"]}}, "estimators[0].budgets", "'16' (str)", "an integer"),
        ({"estimator": {"hyperparameters": 0.1}}, "estimators[0].hyperparameters", "0.1 (float)", "a table"),
        ({"estimator": {"averaging": "exponential"}}, "estimators[0].averaging", "'exponential' (str)", "a number"),
    ],
)
def test_wrong_types(changes, path, shown, expected):
    problems = problems_of(config_with(**changes))
    hits = [p for p in problems if p.startswith(f"{path}: got ")]
    assert hits, problems
    assert shown in hits[0] and f"expected {expected}" in hits[0], hits[0]


@pytest.mark.parametrize(
    ("line", "path", "shown"),
    [
        ("gamma = nan", "gamma", "nan"),
        ("temperature = inf", "temperature", "inf"),
        ("temperature = [0.1, -inf]", "temperature[1]", "-inf"),
        ("gamma = 1e400", "gamma", "inf"),  # TOML floats overflow to inf
    ],
)
def test_nan_and_inf_from_toml(tmp_path, line, path, shown):
    text = f'{line}\n[problem]\nkind = "quadratic"\ndim = 2\n[points]\nscale = nan\n'
    text += '[[estimators]]\nsampler = "sgld"\nstep_size_fraction = 0.5\nbudgets = [16]\n'
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    problems = info.value.problems
    assert f"{path}: got {shown} (float), expected a finite number" in problems
    assert "points.scale: got nan (float), expected a finite number" in problems
    assert len(problems) == 2


@pytest.mark.parametrize(
    ("changes", "path", "expected"),
    [
        ({"gamma": 0}, "gamma", "a number in (0, inf)"),
        ({"temperature": -1.0}, "temperature", "a number in (0, inf)"),
        ({"gamma": []}, "gamma", "a number or a non-empty list of numbers"),
        ({"replicates": 1}, "replicates", "an integer in [2, "),
        ({"chains": 0}, "chains", "an integer in [1, "),
        ({"seed": -1}, "seed", "an integer in [0, "),
        ({"threads": 0}, "threads", "an integer in [1, "),
        ({"problem": {"kind": "quadratic", "dim": 0}}, "problem.dim", "an integer in [1, "),
        ({"problem": {"kind": "quadratic", "dim": 2, "condition": 0.5}}, "problem.condition", "a number in [1, "),
        ({"problem": {"kind": "quadratic", "dim": 2, "n_negative": 3}}, "problem.n_negative", "an integer in [0, 2]"),
        ({"problem": {"kind": "double-well", "dim": 3}}, "problem.dim", "an integer in [1, 2]"),
        ({"points": {"count": 0}}, "points.count", "an integer in [1, 1000]"),
        ({"points": {"scale": -1.0}}, "points.scale", "a number in [0, inf)"),
        ({"estimator": {"budgets": [0]}}, "estimators[0].budgets", "an integer in [1, "),
        ({"estimator": {"budgets": []}}, "estimators[0].budgets", "a positive integer or a non-empty list"),
        ({"estimator": {"step_size_fraction": 0.0}}, "estimators[0].step_size_fraction", "a number in (0, 1]"),
        ({"estimator": {"step_size_fraction": 1.5}}, "estimators[0].step_size_fraction", "a number in (0, 1]"),
        ({"estimator": {"burn_in_fraction": 0.95}}, "estimators[0].burn_in_fraction", "a number in [0, 0.9]"),
        ({"estimator": {"averaging": 0}}, "estimators[0].averaging", "a number in (0, 1]"),
    ],
)
def test_out_of_range_values(changes, path, expected):
    problems = problems_of(config_with(**changes))
    hits = [p for p in problems if p.startswith(f"{path}: got ")]
    assert hits, problems
    assert f"expected {expected}" in hits[0], hits[0]


@pytest.mark.parametrize(
    ("estimator", "path", "expected"),
    [
        ({"kind": "smoothing", "sigma": 0.0, "budgets": [8]}, "estimators[0].sigma", "a number in (0, inf)"),
        ({"kind": "smoothing", "sigma": "wide", "budgets": [8]}, "estimators[0].sigma", "a number"),
        ({"kind": "smoothing", "order": 2, "budgets": [8]}, "estimators[0].order", "an integer in [0, 1]"),
        ({"kind": "gradient", "budgets": [8]}, "estimators[0].kind", "one of 'local-entropy', 'smoothing'"),
        (
            {"preset": "paper", "noise_scale": 0.0, "step_size_fraction": 0.1, "budgets": [16]},
            "estimators[0].noise_scale",
            "a number in (0, inf)",
        ),
        (
            {"preset": "book", "noise_scale": 0.1, "step_size_fraction": 0.1, "budgets": [16]},
            "estimators[0].preset",
            "one of 'paper', 'authors-sgld'",
        ),
        (
            {"preset": "authors", "noise_scale": 0.1, "step_size_fraction": 0.1, "budgets": [16]},
            "estimators[0].preset",
            "one of 'paper', 'authors-sgld' (the estimator's 'authors' is now 'authors-sgld'; 'authors' names the "
            "optimizer's preset)",
        ),
    ],
)
def test_estimator_values(estimator, path, expected):
    data = config_with()
    data["estimators"][0] = estimator
    message = one_problem(data)
    assert message.startswith(f"{path}: got ") and f"expected {expected}" in message, message


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"replicates": 10**9}, "replicates"),
        ({"chains": 10**6}, "chains"),
        ({"seed": 2**64}, "seed"),
        ({"seed": 10**5000}, "seed"),  # beyond Python's int-to-text limit: still reported, not a ValueError
        ({"gamma": 10**400}, "gamma"),  # beyond the float range
        ({"threads": 10**6}, "threads"),
        ({"problem": {"kind": "quadratic", "dim": 10**6}}, "problem.dim"),
        ({"points": {"count": 10**6}}, "points.count"),
        ({"estimator": {"budgets": [10**12]}}, "estimators[0].budgets"),
    ],
)
def test_huge_numbers(changes, path):
    message = one_problem(config_with(**changes))
    assert message.startswith(f"{path}: got "), message
    assert len(message) < 200


def test_huge_numbers_from_toml(tmp_path):
    text = "seed = 99999999999999999999999\nreplicates = 1e3\n"
    text += '[problem]\nkind = "quadratic"\ndim = 2\n[[estimators]]\nsampler = "sgld"\nstep_size_fraction = 0.5\n'
    text += "budgets = [16]\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert [p.split(":")[0] for p in info.value.problems] == ["seed", "replicates"]


def test_unknown_sampler_lists_registered():
    message = one_problem(config_with(estimator={"sampler": "nuts"}))
    assert message.startswith("estimators[0].sampler: got 'nuts' (str), expected one of ")
    for name in available_samplers():
        assert repr(name) in message


def test_unknown_sampler_hyperparameter():
    message = one_problem(config_with(estimator={"hyperparameters": {"frobnicate": 1}}))
    assert message.startswith("estimators[0].hyperparameters.frobnicate: unknown for sampler 'sgld'; allowed: ")
    assert "step_size" in message
    # the temperature comes from the config, never from the hyperparameters
    message = one_problem(config_with(estimator={"hyperparameters": {"temperature": 0.1}}))
    assert "hyperparameters.temperature" in message and "config's temperature" in message


def test_step_size_given_twice_or_not_at_all():
    message = one_problem(config_with(estimator={"hyperparameters": {"step_size": 0.1}}))
    assert message.startswith("estimators[0].step_size_fraction: ") and "hyperparameters.step_size" in message
    data = config_with()
    del data["estimators"][0]["step_size_fraction"]
    assert one_problem(data) == "estimators[0]: needs hyperparameters.step_size or step_size_fraction"


def test_preset_conflicts():
    base = {"preset": "paper", "noise_scale": 0.1, "step_size_fraction": 0.1, "budgets": [16]}
    data = config_with()
    data["estimators"][0] = {**base, "sampler": "sghmc"}
    message = one_problem(data)
    assert message.startswith("estimators[0].sampler: got 'sghmc'") and "a preset runs SGLD" in message
    data["estimators"][0] = {**base, "averaging": 0.5}
    assert "the preset sets it" in one_problem(data)
    data["estimators"][0] = {**base, "hyperparameters": {"noise": "rademacher"}}  # the preset would ignore it
    assert one_problem(data) == "estimators[0].hyperparameters.noise: unknown for a preset; allowed: step_size"
    message = one_problem(config_with(estimator={"noise_scale": 0.1}))
    assert message.startswith("estimators[0].noise_scale: ") and "without a preset" in message


def test_duplicate_labels():
    data = config_with()
    data["estimators"][0]["label"] = "sgld"
    data["estimators"].append(dict(data["estimators"][0]))  # a smoothing "sgld" would misname it: another error
    message = one_problem(data)
    assert message.startswith("estimators[1].label: got 'sgld'") and "not used by another estimator" in message


def test_explicit_points_with_wrong_dimension():
    data = config_with(points={"kind": "explicit", "values": [[0.0, 1.0], [1.0, 2.0, 3.0], [0.5, "x"]]})
    problems = problems_of(data)
    assert problems == [
        "points.values[1]: got [1.0, 2.0, 3.0] (list), expected a list of 2 numbers (the problem's dim)",
        "points.values[2][1]: got 'x' (str), expected a number",
    ]
    message = one_problem(config_with(points={"kind": "explicit"}))
    assert message == "points.values: missing (required)"
    message = one_problem(config_with(points={"kind": "explicit", "values": []}))
    assert message.startswith("points.values: got [] (list), expected a non-empty list of points")


def test_budget_too_small_for_the_chains():
    message = one_problem(config_with(chains=4, estimator={"budgets": [4, 64]}))
    assert message.startswith("estimators[0].budgets: got 4 (int), expected a budget of at least 2 steps per chain")
    assert "(>= 8)" in message
    # smoothing budgets are per sample, not per chain
    data = config_with(chains=4)
    data["estimators"].append({"label": "s", "kind": "smoothing", "budgets": [1]})
    parse_config(data)


def test_every_problem_reported_at_once():
    data = config_with(replicates=0, colour="blue", estimator={"sampler": "nuts"})
    problems = problems_of(data)
    assert len(problems) == 3, problems
    assert {p.split(":")[0] for p in problems} == {"colour", "replicates", "estimators[0].sampler"}
    many = config_with(
        seed=-1,
        gamma=[1.0, 0.0],
        temperature="hot",
        keep_draws="no",
        threads=0,
        problem={"kind": "quadratic", "dim": 2, "condition": 0},
        points={"kind": "grid"},
        estimator={"sampler": "nuts", "burn_in_fraction": 2.0, "extra": 1},
    )
    assert len(problems_of(many)) == 10


def test_config_error_message_and_source(tmp_path):
    path = write(tmp_path, 'gamma = 0\ncolour = "red"\n[problem]\nkind = "quadratic"\ndim = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert error.source == str(path)
    assert isinstance(error, ValueError)
    text = str(error)
    assert text.startswith(f"3 problem(s) in {path}:\n")
    assert all(f"  - {p}" in text for p in error.problems)
    with pytest.raises(ConfigError, match="a table of fields"):
        parse_config([1, 2])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------
# Problems found when the run is planned (the problem is built): still ConfigError, before any work
# ----------------------------------------------------------------------------------------------------------------


def plan_problems(data: dict[str, Any]) -> list[str]:
    config = parse_config(data)
    with pytest.raises(ConfigError) as info:
        problem = build_problem(config)
        plan(config, problem, build_points(config, problem.dim))
    return info.value.problems


def test_plan_refuses_bad_hyperparameter_values():
    data = config_with()
    data["estimators"][0] = {"sampler": "sgld", "hyperparameters": {"step_size": -0.1}, "budgets": [16]}
    (message,) = plan_problems(data)
    assert message.startswith("estimators[0].hyperparameters.step_size: ") and "-0.1" in message


def test_plan_refuses_gamma_below_the_negative_curvature():
    data = config_with(gamma=[0.5, 2.0], problem={"kind": "quadratic", "dim": 3, "condition": 2, "n_negative": 3})
    problems = plan_problems(data)
    assert problems and problems[0].startswith("gamma[0] = 0.5: ") and "positive definite" in problems[0]


def test_plan_refuses_step_size_fraction_without_a_quadratic():
    data = {
        "problem": {"kind": "double-well"},
        "estimators": [{"sampler": "sgld", "step_size_fraction": 0.5, "budgets": [16]}],
    }
    (message,) = plan_problems(data)
    assert message.startswith("estimators[0].step_size_fraction: needs a quadratic problem")


def test_plan_refuses_bad_problem_options():
    data = {
        "problem": {"kind": "double-well", "options": {"heigth": 2.0}},
        "estimators": [{"sampler": "sgld", "hyperparameters": {"step_size": 0.01}, "budgets": [16]}],
    }
    (message,) = plan_problems(data)
    assert message.startswith("problem.options: ") and "heigth" in message
    data["problem"] = {"kind": "python", "factory": "no_such_module_xyz:make"}
    (message,) = plan_problems(data)
    assert message.startswith("problem.factory: cannot import 'no_such_module_xyz:make'")


def test_plan_refuses_records_that_share_a_file():
    # 1.0 and 1.0000001 both print as "1" with :g: the second record would silently reuse the first one's file
    (message,) = plan_problems(config_with(gamma=[1.0, 1.0000001]))
    assert "share the file name" in message
    (message,) = plan_problems(config_with(estimator={"budgets": [16, 16]}))
    assert "listed twice" in message


# ----------------------------------------------------------------------------------------------------------------
# load_config: reading the file
# ----------------------------------------------------------------------------------------------------------------


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(tmp_path / "nope.toml")
    assert len(info.value.problems) == 1


def test_load_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_load_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_config(write(tmp_path, b'name = "caf\xe9"\n'))
    assert "byte 11" in info.value.problems[0]


def test_load_invalid_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(write(tmp_path, "[problem\nkind = quadratic\n"))
    assert "line 1" in info.value.problems[0]


@pytest.mark.parametrize(
    "text",
    ["a = " + "1" * 5000, "a = " + "[" * 100_000, "a = " + "{b = " * 100_000],
    ids=["digits", "arrays", "tables"],
)
def test_load_pathological_toml(tmp_path, text):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, text))


def test_load_empty_file_reports_required_fields(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ""))
    assert info.value.problems == [
        "problem.kind: missing (required)",
        "problem.dim: missing (required)",
        "estimators: missing (required)",
    ]


# ----------------------------------------------------------------------------------------------------------------
# Property: nothing but ConfigError escapes
# ----------------------------------------------------------------------------------------------------------------

KNOWN_KEYS = sorted(
    {
        "name",
        "seed",
        "replicates",
        "chains",
        "gamma",
        "temperature",
        "threads",
        "keep_draws",
        "ksd",
        "problem",
        "points",
        "estimators",
        "kind",
        "dim",
        "condition",
        "n_negative",
        "factory",
        "options",
        "count",
        "scale",
        "values",
        "label",
        "budgets",
        "sampler",
        "hyperparameters",
        "step_size",
        "step_size_fraction",
        "burn_in_fraction",
        "averaging",
        "preset",
        "noise_scale",
        "sigma",
        "order",
        "friction",
    }
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
leaves = (
    st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(
        ["quadratic", "sharp-wide", "python", "explicit", "smoothing", "paper", "sgld", "matched", "uniform", "m:f", ""]
    )
    | st.text(max_size=8)
    | st.none()
)
values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5), max_leaves=25
)


def _outcome(call) -> None:
    try:
        result = call()
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    assert isinstance(result, RunConfig)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, values, max_size=8))
def test_random_dicts_raise_only_config_error(data):
    _outcome(lambda: parse_config(data))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["", "problem", "points", "estimators"]),
    st.sampled_from(KNOWN_KEYS),
    values,
)
def test_mutated_valid_config_raises_only_config_error(table, key, value):
    data = copy.deepcopy(MINIMAL)
    target = data if table == "" else data["estimators"][0] if table == "estimators" else data.setdefault(table, {})
    target[key] = value
    _outcome(lambda: parse_config(data))


TOML_LINES = [
    "[problem]",
    "[points]",
    "[[estimators]]",
    'kind = "quadratic"',
    'kind = "explicit"',
    "dim = 3",
    "dim = 1e9",
    'sampler = "sgld"',
    "step_size_fraction = 0.5",
    "budgets = [16, 32]",
    "budgets = 0",
    "gamma = nan",
    "temperature = [0.1, inf]",
    "values = [[1, 2, 3]]",
    "seed = 99999999999999999999",
    "hyperparameters = { a = 1 }",
    'preset = "paper"',
    "noise_scale = 0.1",
    "label = 'x'",
    "x = [[[",
    '"',
    "=",
    "[problem.options]",
    "chains = -1",
]


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOML_LINES), max_size=12) | st.text(max_size=200) | st.binary(max_size=100))
def test_random_files_raise_only_config_error(content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random.toml"
        if isinstance(content, list):
            path.write_text("\n".join(content), encoding="utf-8")
        elif isinstance(content, str):
            path.write_bytes(content.encode("utf-8", errors="surrogatepass"))
        else:
            path.write_bytes(content)
        _outcome(lambda: load_config(path))


def test_nan_in_list_positions_are_named():
    problems = problems_of(config_with(gamma=[1.0, math.nan, math.inf]))
    assert problems == [
        "gamma[1]: got nan (float), expected a finite number",
        "gamma[2]: got inf (float), expected a finite number",
    ]


def test_cyclical_wrapper_runs_from_a_config(tmp_path):
    """A wrapper sampler takes its step size in the wrapped table (or step_size_fraction), total_steps from the run."""
    from localentropy.experiments.comparison.runner import build_points, build_problem, plan

    config = parse_config(
        {
            "replicates": 2,
            "chains": 2,
            "problem": {"kind": "quadratic", "dim": 3, "condition": 4},
            "estimators": [
                {
                    "label": "cyc",
                    "sampler": "cyclical",
                    "step_size_fraction": 0.5,
                    "hyperparameters": {"sampler": {"name": "sgld"}, "n_cycles": 2},
                    "budgets": [40],
                },
                {
                    "label": "cyc2",
                    "sampler": "cyclical",
                    "budgets": [40],
                    "hyperparameters": {"sampler": {"name": "sgld", "step_size": 0.01}, "n_cycles": 2},
                },
            ],
        }
    )
    problem = build_problem(config)
    tasks = plan(config, problem, build_points(config, problem.dim))
    assert [t.key["estimator"] for t in tasks] == ["cyc", "cyc2"]


SGLD_ESTIMATOR = {"sampler": "sgld", "hyperparameters": {"step_size": 0.1}, "budgets": [8]}


def test_run_name_must_be_a_safe_directory_name():
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "../escape", "problem": {"kind": "quadratic", "dim": 2}, "estimators": [SGLD_ESTIMATOR]})
    assert any(p.startswith("name:") for p in info.value.problems)


def test_one_dimensional_quadratic_defaults_to_condition_one():
    config = parse_config({"problem": {"kind": "quadratic", "dim": 1}, "estimators": [SGLD_ESTIMATOR]})
    assert config.problem.condition == 1.0
