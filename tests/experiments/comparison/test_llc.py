"""The LLC as a comparison estimand: config rules, the truth, a [[problems]] run end to end, diverged replicates."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch

from localentropy.experiments.comparison import estimand
from localentropy.experiments.comparison.config import ConfigError, parse_config
from localentropy.experiments.comparison.runner import run_comparison
from localentropy.experiments.comparison.suite import SUITE_FILE, single_configs
from localentropy.experiments.core.rundir import RunDirectoryError
from localentropy.experiments.reports import rebuild_report
from localentropy.llc.problems import DeepLinearProblem
from localentropy.llc.toys import exact_llc, toy

LLC: dict[str, Any] = {
    "name": "llc",
    "estimand": "llc",
    "replicates": 3,
    "chains": 4,
    "gamma": 0.2,
    "temperature": 0.01,
    "problems": [{"kind": "crossing"}, {"kind": "deep-linear", "label": "dln", "widths": [2, 1, 2], "rank": 1}],
    "estimators": [
        {"sampler": "sgld", "hyperparameters": {"step_size": 0.02}, "budgets": 1600},
        {"sampler": "mala", "hyperparameters": {"step_size": 0.02}, "budgets": 1600},
    ],
    "keep_draws": False,
}


def llc_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(LLC)
    data.update(changes)
    return data


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def test_llc_config_defaults_and_resolved_form() -> None:
    config = parse_config(llc_with())
    assert config.points.kind == "minimum"  # the LLC is asked at w*
    assert [label for label, _ in single_configs(config)] == ["crossing", "dln"]
    dln = config.problems[1]
    assert dln.dim == 2 * 1 + 1 * 2  # its number of weights, from the widths
    resolved = config.as_dict()
    assert resolved["estimand"] == "llc" and "problem" not in resolved
    assert resolved["problems"][0] == {"kind": "crossing", "dim": 2, "label": "crossing"}
    single = dict(single_configs(config))["dln"]
    assert single.problem is dln and single.problems is None and single.name == "llc-dln"
    # a gradient config's resolved form has no new fields: runs recorded before them still match
    gradient = parse_config({"problem": {"kind": "quadratic", "dim": 2}, "estimators": LLC["estimators"]})
    assert not {"estimand", "problems"} & set(gradient.as_dict())
    assert not {"label", "widths", "rank"} & set(gradient.as_dict()["problem"])


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"problems": [{"kind": "quadratic", "dim": 2}]}, "problems[0].kind: got 'quadratic' (str), expected one of"),
        (
            {"estimand": "gradient"},
            "problems[1].kind: got 'deep-linear' (str), expected a problem with an exact gradient",
        ),
        ({"problem": {"kind": "regular"}}, "needs either a [problem] table or a [[problems]] array, not both"),
        (
            {"problems": [{"kind": "regular"}, {"kind": "regular"}]},
            "problems[1].label: got 'regular' (str), expected a label",
        ),
        ({"problems": [{"kind": "regular", "dim": 3}]}, "problems[0].dim: got 3 (int), expected 2"),
        ({"problems": [{"kind": "deep-linear"}]}, "problems[0].widths: missing (required)"),
        (
            {"problems": [{"kind": "deep-linear", "widths": [2, 1], "rank": 2}]},
            "problems[0].rank: got 2 (int), expected an integer in [0, 1]",
        ),
        (
            {"problems": [{"kind": "crossing", "options": {"a": 1}}]},
            "problems[0].options: unknown field; allowed: dim, kind, label",
        ),
        (
            {"estimators": [{"kind": "smoothing", "budgets": 100}]},
            "estimators[0].kind: got 'smoothing' (str), expected 'local-entropy'",
        ),
        (
            {
                "estimators": [
                    {"preset": "paper", "noise_scale": 0.1, "hyperparameters": {"step_size": 0.1}, "budgets": 800}
                ]
            },
            "estimators[0].preset: got 'paper' (str), expected no preset",
        ),
        (
            {
                "estimators": [
                    {"sampler": "sgld", "hyperparameters": {"step_size": 0.1}, "averaging": 0.1, "budgets": 800}
                ]
            },
            "estimators[0].averaging: got 0.1 (float), expected 'uniform'",
        ),
        (
            {"estimators": [{"sampler": "sgld", "hyperparameters": {"step_size": 0.1}, "budgets": 8}]},
            "estimators[0].budgets: got [8] (list), expected budgets of at least 4 kept steps",
        ),
    ],
)
def test_llc_config_rules_name_the_field(changes: dict[str, Any], expected: str) -> None:
    problems = problems_of(llc_with(**changes))
    assert len(problems) == 1 and expected in problems[0], problems


def test_llc_truth_is_the_toys_exact_value_and_aoyagis_for_a_deep_linear_network() -> None:
    w = torch.zeros(2, dtype=torch.float64)
    truth = estimand.truth("llc", toy("quartic"), w, 0.2, 0.01)
    assert truth.shape == (1,) and float(truth[0]) == pytest.approx(exact_llc(toy("quartic"), 100.0, 20.0))
    dln = DeepLinearProblem([3, 2, 3], 1)
    assert float(estimand.truth("llc", dln, dln.w_star, 0.2, 0.01)[0]) == 3.5
    assert float(dln.loss(dln.w_star)) == 0.0 and dln.grad(dln.w_star).abs().max() == 0.0


def test_llc_suite_runs_each_problem_reports_and_resumes(tmp_path, single_thread) -> None:
    out = tmp_path / "run"
    path, state = run_comparison(parse_config(llc_with()), out)
    assert state == "fresh" and (path / "COMPLETE").is_file() and (path / "report.md").is_file()
    suite = json.loads((path / SUITE_FILE).read_text())
    assert [p["label"] for p in suite["problems"]] == ["crossing", "dln"]
    for problem in suite["problems"]:
        results = json.loads((path / problem["label"] / "results.json").read_text())
        assert len(results["records"]) == 2 and results["verdicts"][0]["n"] == 3
        for record in results["records"]:
            assert record["status"] == "ok", record["error"]
            metrics = record["metrics"]
            assert len(metrics["squared_errors"]) == 3 and metrics["nbeta"] == pytest.approx(100.0)
            assert metrics["localization"] == pytest.approx(20.0) and metrics["llc_mean_mcse"] > 0
            assert record["chains"]["n_draws"] > 4  # ArviZ's diagnostics of the trace of L
        row = problem["rows"][0]
        assert row["bias"] == pytest.approx(row["estimate"] - row["truth"])
    crossing = suite["problems"][0]["rows"][0]
    assert crossing["truth"] == pytest.approx(exact_llc(toy("crossing"), 100.0, 20.0))
    assert suite["problems"][1]["rows"][0]["truth"] == 1.5  # Aoyagi: widths (2, 1, 2), rank 1
    report = (path / "report.md").read_text()
    assert "## crossing: LLC truth" in report and "## dln: LLC truth 1.5" in report
    problem_report = (path / "crossing" / "report.md").read_text()
    assert problem_report.startswith("# LLC estimator report") and "gradient" not in problem_report.split("##")[0]
    assert "nbeta = 100, localization = 20" in problem_report
    assert run_comparison(parse_config(llc_with()), out)[1] == "skip"
    # `localentropy report` rebuilds a run of several problems in place: each problem's report and the suite's
    for stale in (path / "report.md", path / "crossing" / "report.md"):
        stale.unlink()
    assert rebuild_report([str(path)]) == path / "report.md"
    assert (path / "report.md").read_text() == report
    assert (path / "crossing" / "report.md").read_text() == problem_report
    with pytest.raises(RunDirectoryError, match="rebuilt alone"):
        rebuild_report([str(path), str(path / "dln")])


def test_a_diverged_llc_replicate_makes_its_record_diverged_and_ranks_it_out(tmp_path, single_thread) -> None:
    # SGLD on the regular toy is stable only for step_size < 2 / (2 + gamma) ~ 1: 5 leaves the finite range
    data = llc_with(
        problems=[{"kind": "regular"}],
        estimators=[
            {"label": "stable", "sampler": "sgld", "hyperparameters": {"step_size": 0.05}, "budgets": 800},
            {"label": "unstable", "sampler": "sgld", "hyperparameters": {"step_size": 5.0}, "budgets": 800},
            {"label": "also stable", "sampler": "sgld", "hyperparameters": {"step_size": 0.02}, "budgets": 800},
        ],
    )
    path, _ = run_comparison(parse_config(data), tmp_path / "run")
    results = json.loads((path / "regular" / "results.json").read_text())
    unstable = next(r for r in results["records"] if r["key"]["estimator"] == "unstable")
    assert unstable["status"] == "diverged" and "diverged in replicate 0" in unstable["error"]
    (verdict,) = results["verdicts"]
    assert "unstable" in verdict["excluded"] and "unstable" not in verdict["best"]
