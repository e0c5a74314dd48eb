"""A comparison of several problems (``[[problems]]``): one ordinary comparison run per problem, each tuned on its
own problem, in ``<run>/<label>/``, and a ``report.md`` (rendered by ``templates/suite.md.j2``) and ``suite.json``
that gather what they found.

Each problem's run is a complete run directory of its own (results.json, report.md, draws.nc; resumed or skipped
like any run), so everything that reads one run reads it. Every problem's config is checked (its problem, points
and estimators built) before any runs. The suite is complete when every problem's run is.
"""

from __future__ import annotations

import math
from typing import Any

from localentropy.diagnostics.compare import verdict_text
from localentropy.experiments.comparison.config import RunConfig
from localentropy.experiments.comparison.formatting import render
from localentropy.experiments.core.rundir import environment, finite_or_none

__all__ = ["SUITE_FILE", "problem_rows", "single_configs", "suite_markdown", "suite_summary"]

SUITE_FILE = "suite.json"


def single_configs(config: RunConfig) -> list[tuple[str, RunConfig]]:
    """One single-problem config per ``[[problems]]`` table, by label (named ``<name>-<label>``); a config of one
    ``[problem]`` is its own, labelled ``""``."""
    if config.problems is None:
        return [("", config)]
    return [
        (str(p.label), config.model_copy(update={"problem": p, "problems": None, "name": f"{config.name}-{p.label}"}))
        for p in config.problems
    ]


def suite_summary(config: RunConfig, runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """suite.json's content: the config, the machine, the estimand and each problem's rows and verdicts (``runs``:
    each problem's label and its results.json content)."""
    return finite_or_none(
        {
            "name": config.name,
            "config": config.as_dict(),
            "meta": {"seed": config.seed, **environment("cpu")},
            "estimand": config.estimand,
            "problems": [problem_rows(label, results) for label, results in runs],
        }
    )


def _chosen(results: dict[str, Any], label: str) -> dict[str, Any] | None:
    record = ((results.get("tuning") or {}).get("estimators") or {}).get(label) or {}
    return record.get("chosen")


def problem_rows(label: str, results: dict[str, Any]) -> dict[str, Any]:
    """One problem's outcome: each record's figures (the LLC's signed bias with its standard error over the
    replicates, when the estimand is the LLC) and the run's verdicts."""
    rows = []
    for record in results["records"]:
        metrics = record.get("metrics") or {}
        chains = record.get("chains") or {}
        key = record["key"]
        row: dict[str, Any] = {
            "estimator": key["estimator"],
            "sampler": (record.get("estimator") or {}).get("sampler"),
            "point": key["point"],
            "budget": key["budget"],
            "status": record.get("status"),
            "error": record.get("error"),
            "chosen": _chosen(results, key["estimator"]),
            "mse": metrics.get("mse"),
            "mse_mcse": metrics.get("mse_mcse"),
            "min_ess_bulk": chains.get("min_ess_bulk"),
            "max_rhat": chains.get("max_rhat"),
        }
        if "llc_truth" in metrics:
            n = metrics["replicates"]
            row |= {
                "truth": metrics["llc_truth"],
                "estimate": metrics["llc_mean"],
                "bias": metrics["llc_mean"] - metrics["llc_truth"],
                "bias_se": math.sqrt(metrics["variance"] / n),
                "rmse": math.sqrt(metrics["mse"]),
                "mean_mcse": metrics["llc_mean_mcse"],
                "replicates": n,
                "nbeta": metrics["nbeta"],
                "localization": metrics["localization"],
                "truth_kind": ((record.get("estimator") or {}).get("settings") or {}).get("truth"),
            }
        rows.append(row)
    return {"label": label, "name": results.get("name"), "rows": rows, "verdicts": results.get("verdicts", [])}


def _fmt(value: Any, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


def _cells(row: dict[str, Any], llc: bool) -> list[str]:
    """A row's table cells: its figures, or its status and error when it did not finish."""
    tuned = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (row["chosen"] or {}).items())
    cells = [str(row["estimator"]), str(row["budget"]), tuned or "—"]
    if row["status"] != "ok":
        return [*cells, f"{row['status']}: {row['error']}"]
    if llc:
        return [
            *cells,
            _fmt(row["estimate"]),
            f"{row['bias']:+.4f} ± {row['bias_se']:.4f}",
            _fmt(row["rmse"]),
            _fmt(row["mean_mcse"]),
            _fmt(row["min_ess_bulk"], ".0f"),
            _fmt(row["max_rhat"], ".3f"),
        ]
    return [
        *cells,
        f"{_fmt(row['mse'])} ± {_fmt(row['mse_mcse'], '.2g')}",
        _fmt(row["min_ess_bulk"], ".0f"),
        _fmt(row["max_rhat"], ".3f"),
    ]


def suite_markdown(summary: dict[str, Any]) -> str:
    """report.md of a suite (``templates/suite.md.j2``): per problem, the verdicts first (``verdict_text``, shared
    with the run reports), then each estimator's figures."""
    problems = []
    for problem in summary["problems"]:
        rows = problem["rows"]
        llc = next((r for r in rows if "truth" in r), None)  # the LLC's truth, as its first row carries it
        problems.append(
            {
                "label": problem["label"],
                "llc": llc,
                "verdicts": [
                    {"point": v["point"], "budget": v["budget"], "text": verdict_text(v, "{:.3g}".format)}
                    for v in problem["verdicts"]
                ],
                "rows": [_cells(r, llc is not None) for r in rows],
            }
        )
    return render("suite.md.j2", name=summary["name"], problems=problems) + "\n"
