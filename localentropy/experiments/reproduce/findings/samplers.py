"""Q3: every sampler in the inner loop, by error per gradient evaluation and by the test error it leads to."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from localentropy.diagnostics.compare import METHOD, paired_difference, verdict_text
from localentropy.experiments.comparison.results import Record
from localentropy.experiments.comparison.verdicts import comparison_verdicts
from localentropy.experiments.reproduce.claims import Claim, difference_claim, verdict_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    by_seed,
    copy_figure,
    distinct,
    finals,
    fmt,
    mean_sd,
    paired,
    pm,
    read_json,
    run_records,
    short,
    sort_key,
    sweep_entries,
    table,
)
from localentropy.experiments.reproduce.findings.render import section_text
from localentropy.experiments.sweeps.summary import best_groups, groups
from localentropy.experiments.tuning.record import value_text


def _edges(info: dict[str, Any], tuned: dict[str, Any]) -> list[str]:
    """The samplers whose optimum may lie outside what was tried: tuned to a value at the edge of the range
    searched (with the parameters at the edge), or, untuned, at the largest or smallest step size of the grid."""
    if tuned:
        return [f"`{lab}` ({', '.join(e['name'] for e in r['at_edge'])})" for lab, r in tuned.items() if r["at_edge"]]
    edge = []
    for lab, entry in info.items():
        tried = sorted(entry.get("tried", {}), key=sort_key)
        if len(tried) > 1 and entry["step_size"] in (tried[0], tried[-1]):
            edge.append(f"`{lab}`")
    return edge


def _beats_sgld(ranking: list[tuple[int, list[str]]], cell: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """Per budget, the samplers whose MSE is lower than SGLD's beyond Bonferroni-adjusted 95 % paired t-intervals
    over the replicates (common random numbers; point estimates for a run without them), and those worse at every
    budget."""
    parts, always_worse, unpaired = [], None, False
    for budget, ranked in ranking:
        if "sgld" not in ranked:
            continue
        others = [e for e in ranked if e != "sgld"]
        level = 1 - 0.05 / max(len(others), 1)
        lower, higher = [], []
        for e in others:
            mine, ref = ((cell[(x, budget)]["metrics"].get("squared_errors")) for x in (e, "sgld"))
            if mine is None or ref is None:
                unpaired = True
                worse = ranked.index(e) > ranked.index("sgld")
            else:
                d = paired_difference(mine, ref, level=level, unit="replicate")
                if not d.distinguishable:
                    continue
                worse = d.mean > 0
            (higher if worse else lower).append(e)
        parts.append([budget, lower])
        always_worse = set(higher) if always_worse is None else always_worse & set(higher)
    return {"ran": bool(parts), "unpaired": unpaired, "parts": parts, "always_worse": sorted(always_worse or [])}


TRAINING_HEADER = [
    "inner sampler",
    "chosen step size",
    "test error",
    "train loss",
    "minus SGLD (paired)",
    "mean test error per step size tried",
    "failed/diverged runs",
]
TUNED_HEADER = [
    "inner sampler",
    "chosen values (tuned)",
    "test error",
    "train loss",
    "minus SGLD (paired)",
    "validation error reached in tuning",
    "failed/diverged runs",
]


def _tuned_values(record: dict[str, Any] | None) -> str:
    if not record or not record.get("chosen"):
        return "—"
    return ", ".join(f"{k} {value_text(v)}" for k, v in record["chosen"].items())


def _search(tuning: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the findings say of a tuning record: the search, its pruner, trials and the evaluation of a trial."""
    keys = ("method", "pruner", "trials", "replicates", "budget")
    return {k: tuning.get(k) for k in keys} if tuning else None


def _error_cell(m: dict[str, Any]) -> str:
    """Relative MSE ± its MCSE (the MSE's over ||truth||^2); the plain MSE where the truth is near zero."""
    scale = 1.0 if m.get("truth_near_zero") else m["truth_norm"] ** 2
    mcse = f" ± {fmt(m['mse_mcse'] / scale, 2)}" if m.get("mse_mcse") is not None and scale > 0 else ""
    return ("MSE " if scale == 1.0 and m.get("truth_near_zero") else "") + f"{fmt(m['mse'] / scale)}{mcse}"


def _error_values(m: dict[str, Any]) -> list[float | None]:
    """The numbers of :func:`_error_cell`: the relative MSE (or the plain MSE where the truth is near zero) and its
    MCSE on the same scale."""
    scale = 1.0 if m.get("truth_near_zero") else m["truth_norm"] ** 2
    mcse = m["mse_mcse"] / scale if m.get("mse_mcse") is not None and scale > 0 else None
    return [m["mse"] / scale, mcse]


def verdicts_now(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The verdicts judged again, with the statistics module's current rule, from the run's records."""
    return [v.model_dump() for v in comparison_verdicts(map(Record.model_validate, results["records"]))]


def _verdicts(results: dict[str, Any], budgets: list[int]) -> list[tuple[int, str]]:
    """The run's verdict per budget from the statistics module ("tied: ..." or the one lowest), in words."""
    verdicts = results.get("verdicts") or verdicts_now(results)
    by_budget = {v["budget"]: v for v in verdicts}
    out = []
    for b in budgets:
        v = by_budget.get(b)
        if v is None:
            continue
        if not v["best"]:
            out.append((b, "no verdict (this run kept no per-replicate errors)"))
        else:
            out.append((b, verdict_text(v, fmt=fmt, name=lambda e: f"`{e}`")))
    return out


def training_choices(
    step_dir: Path,
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, Any]], dict[str, Any], dict[str, dict[Any, float]]]:
    """The training sweep's entries, labels, groups, each label's best group (the step size with the lowest mean
    validation error) and its test errors by seed."""
    _, items = sweep_entries(step_dir)
    labels = list(dict.fromkeys(e["label"] for e in items))
    all_groups = groups(items)
    best = best_groups(all_groups)
    return items, labels, all_groups, best, {lab: by_seed(best[lab]["ok"]) if lab in best else {} for lab in labels}


def training_claims(step_dir: Path) -> list[Claim]:
    """Each inner sampler's test error minus SGLD's and minus SGD's (each at its chosen step size), by seed."""
    _, labels, _, _, chosen = training_choices(step_dir)
    claims = []
    for reference in ("sgld", "sgd"):
        for lab in labels:
            if lab not in ("sgld", "sgd") and reference in chosen:
                claims.append(
                    difference_claim(
                        f"samplers_training/{lab} - {reference}",
                        f"test error, `{lab}` minus `{reference}`",
                        paired(chosen[lab], chosen[reference]),
                    )
                )
    return claims


def shootout_claims(step_dir: Path) -> list[Claim]:
    """The verdict at each budget: which samplers have the lowest MSE of the local-entropy gradient, judged again
    with the statistics module's current rule from the per-replicate squared errors (kept in the claim, so that a
    replication can pool them); a run without them keeps its recorded verdicts."""
    results = read_json(step_dir / "results.json")
    verdicts = verdicts_now(results)
    if not any(v["best"] for v in verdicts):
        verdicts = results.get("verdicts") or verdicts
    errors: dict[Any, dict[str, list[float]]] = {}
    for r in results["records"]:
        squared = (r.get("metrics") or {}).get("squared_errors") if r.get("status") == "ok" else None
        if isinstance(squared, list):
            errors.setdefault(r["key"]["budget"], {})[str(r["key"]["estimator"])] = squared
    claims = []
    for v in sorted(verdicts, key=lambda v: v["budget"]):
        budget = v["budget"]
        claims.append(
            verdict_claim(
                f"shootout/budget {budget}",
                f"lowest MSE at budget {budget}",
                v["best"],
                v.get("n", 0),
                verdict=v,
                values=errors.get(budget),
            )
        )
    return claims


def section_samplers(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    so_results, records = run_records(out / "shootout")
    budgets = sorted({r["key"]["budget"] for r in records})
    est = list(dict.fromkeys(r["key"]["estimator"] for r in records))
    cell = {(r["key"]["estimator"], r["key"]["budget"]): r for r in records}
    ranking = []
    for b in budgets:
        ranked = sorted((e for e in est if (e, b) in cell), key=lambda e: cell[(e, b)]["metrics"]["mse"])
        ranking.append((b, ranked))
    largest = budgets[-1]
    rows = []
    order = [e for e in ranking[-1][1]] + [e for e in est if e not in ranking[-1][1]]
    for e in order:
        row = [f"`{e}`"]
        for b in budgets:
            r = cell.get((e, b))
            if r is None:
                row.append("—")
                continue
            m = r["metrics"]
            rank = next(i for i, x in enumerate(dict(ranking)[b], 1) if x == e)
            row.append(f"{_error_cell(m)} ({rank}; {fmt(m['grad_evals'], 5)} evals)")
        r = cell.get((e, largest))
        row.append(fmt(r["timing"]["seconds_per_replicate"] if r else None))
        rows.append(row)
    fig = None
    for path in sorted((out / "shootout").glob("errors_*.png")):
        fig = copy_figure(path, figures, "shootout_errors.png")
        break
    sweep_results, _ = sweep_entries(out / "samplers_training")
    tuned = (sweep_results.get("tuning") or {}).get("optimizers") or {}
    items, labels, all_groups, best, chosen = training_choices(out / "samplers_training")
    reference = chosen.get("sgld", {})
    tr_rows, tr_info = [], {}
    for lab in sorted(labels, key=lambda lab: mean_sd(list(chosen[lab].values()))[0] or math.inf):
        mine = best[lab]["ok"] if lab in best else []
        d = paired(chosen[lab], reference) if lab != "sgld" else None
        tried = sorted(
            (g for g in all_groups if g["label"] == lab and g["test_mean"] is not None),
            key=lambda g: sort_key(next(iter(dict(g["settings"]).values()), "")),
        )
        step = next(iter(dict(best[lab]["settings"]).values()), "—") if lab in best else "—"
        if lab in tuned:
            step = _tuned_values(tuned[lab])
        tried_text = "; ".join(
            f"{next(iter(dict(g['settings']).values()), '—')}: {100 * g['test_mean']:.2f} %" for g in tried
        )
        tr_info[lab] = {
            "test_error": list(chosen[lab].values()),
            "step_size": step,
            "vs_sgld": d,
            "tried": {next(iter(dict(g["settings"]).values()), "—"): g["test_mean"] for g in tried},
        }
        shown = "SGD (reference: no inner loop)" if lab == "sgd" else lab
        failed = sum(g["diverged"] + g["failed"] for g in all_groups if g["label"] == lab)
        tr_rows.append(
            [
                shown,
                step,
                f"{pm(list(chosen[lab].values()), 100)} %",
                pm(finals(mine, "train_loss"), 1, 4),
                "—" if d is None else short(d),
                (f"{100 * tuned[lab]['objective']:.2f} %" if tuned.get(lab, {}).get("objective") is not None else "—")
                if tuned
                else tried_text or "—",
                str(failed),
            ]
        )
    n_seeds = len({e["seed"] for e in items})
    numbers["samplers"] = {"ranking": {str(b): r for b, r in ranking}, "training": tr_info}
    numbers["samplers"]["shootout"] = {  # the values behind the estimator table's cells
        f"{e} @ {b}": {
            "relative_mse": _error_values(r["metrics"]),
            "grad_evals": r["metrics"]["grad_evals"],
            "seconds_per_replicate": r["timing"]["seconds_per_replicate"],
        }
        for (e, b), r in cell.items()
    }
    for lab, entry in tr_info.items():
        entry["tuning_objective"] = (tuned.get(lab) or {}).get("objective")
    entropy_labels = [lab for lab in labels if lab != "sgd"]
    best_train = min(entropy_labels, key=lambda lab: mean_sd(tr_info[lab]["test_error"])[0] or math.inf)
    differ = [lab for lab in entropy_labels if lab != "sgld" and distinct(tr_info[lab]["vs_sgld"])]
    sgd_by_seed = chosen.get("sgd", {})
    beat_sgd = [lab for lab in entropy_labels if distinct(d := paired(chosen[lab], sgd_by_seed)) and d["mean"] < 0]
    numbers["samplers"]["view"] = {
        "replicates": so_results["config"]["replicates"],
        "shootout_tuning": _search(so_results.get("tuning")),
        "table": "\n".join(
            table(["sampler", *(f"budget {b}" for b in budgets), f"seconds per estimate at {largest}"], rows)
        ),
        "method": METHOD,
        "verdicts": _verdicts(so_results, budgets),
        "figure": fig,
        "n_seeds": n_seeds,
        "tuned": bool(tuned),
        "training_tuning": _search(sweep_results.get("tuning")),
        "training_table": "\n".join(table(TUNED_HEADER if tuned else TRAINING_HEADER, tr_rows)),
        "beats": _beats_sgld(ranking, cell),
        "best_train": best_train,
        "differ": differ,
        "beat_sgd": beat_sgd,
        "edges": _edges(tr_info, tuned),
    }
    return section_text("samplers", numbers["samplers"]["view"])
