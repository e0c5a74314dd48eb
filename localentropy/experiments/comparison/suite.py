"""A comparison of several problems (``[[problems]]``): one ordinary comparison run per problem, each tuned on its
own problem, in ``<run>/<label>/``, and a ``report.md`` and ``suite.json`` that gather what they found.

Each problem's run is a complete run directory of its own (results.json, report.md, draws.nc; resumed or skipped
like any run), so everything that reads one run reads it. Every problem's config is checked (its problem, points
and estimators built) before any runs. The suite is complete when every problem's run is.
"""

from __future__ import annotations

import math
from typing import Any

from localentropy.diagnostics.compare import verdict_text
from localentropy.experiments.comparison.config import RunConfig
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


def suite_markdown(summary: dict[str, Any]) -> str:
    """report.md of a suite: per problem, the verdicts first, then each estimator's figures."""
    lines = [f"# Comparison report: `{summary['name']}` ({len(summary['problems'])} problems)", ""]
    lines += [
        "Each problem ran as its own comparison (its own tuning, the same replicate seeds for every estimator), "
        "reported in full in `<problem>/report.md`. The verdict compares the squared errors per replicate "
        "(Holm-adjusted paired t-tests against the lowest mean; a replicate that diverged or ran away ranks its "
        "estimator out).",
        "",
    ]
    for problem in summary["problems"]:
        rows = problem["rows"]
        llc = any("truth" in r for r in rows)
        first = next((r for r in rows if "truth" in r), None)
        head = f"## {problem['label']}"
        if first is not None:
            head += (
                f": LLC truth {first['truth']:.4g} ({first['truth_kind']}), nbeta {first['nbeta']:g}, "
                f"localization {first['localization']:g}"
            )
        lines += [head, ""]
        for v in problem["verdicts"]:
            lines.append(f"* point {v['point']}, budget {v['budget']}: {verdict_text(v, '{:.3g}'.format)}")
        lines.append("")
        if llc:
            lines += [
                "| estimator | budget | tuned | estimate | bias ± SE | RMSE | mean MCSE | ESS (bulk) of L | R-hat |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
        else:
            lines += [
                "| estimator | budget | tuned | MSE ± MCSE | min ESS (bulk) | max R-hat |",
                "|---|---|---|---|---|---|",
            ]
        for r in rows:
            tuned = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in (r["chosen"] or {}).items()
            )
            if r["status"] != "ok":
                lines.append(f"| {r['estimator']} | {r['budget']} | {tuned or '—'} | {r['status']}: {r['error']} |")
            elif llc:
                lines.append(
                    f"| {r['estimator']} | {r['budget']} | {tuned or '—'} | {_fmt(r['estimate'])} | "
                    f"{r['bias']:+.4f} ± {r['bias_se']:.4f} | {_fmt(r['rmse'])} | {_fmt(r['mean_mcse'])} | "
                    f"{_fmt(r['min_ess_bulk'], '.0f')} | {_fmt(r['max_rhat'], '.3f')} |"
                )
            else:
                lines.append(
                    f"| {r['estimator']} | {r['budget']} | {tuned or '—'} | {_fmt(r['mse'])} ± "
                    f"{_fmt(r['mse_mcse'], '.2g')} | {_fmt(r['min_ess_bulk'], '.0f')} | {_fmt(r['max_rhat'], '.3f')} |"
                )
        lines.append("")
    return "\n".join(lines)
