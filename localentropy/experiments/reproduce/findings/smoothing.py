"""Q2: exponentiated (local entropy) versus direct (Gaussian) smoothing: estimators, targets, flatness."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from localentropy.diagnostics.compare import best_set
from localentropy.experiments.reproduce.claims import Claim, difference_claim, verdict_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    copy_figure,
    fmt,
    mean_sd,
    paired,
    pm,
    read_json,
    run_records,
    sweep_tuning,
    table,
)
from localentropy.experiments.reproduce.findings.render import section_text

LE, SMOOTHED = "neg_local_entropy", "smoothed_loss"


POINT_NAMES = {(-1.5,): "sharp minimum", (0.0,): "barrier", (1.4,): "wide minimum"}


def _estimator_rows(records: list[dict[str, Any]], points: list[list[float]] | None) -> tuple[Lines, list[dict]]:
    """Per (T, point) at the largest budget: each estimator's relative MSE, bias ± MCSE, variance and its target's
    norm (the table); every budget in the returned list."""
    rows, flat = [], []
    largest = max(r["key"]["budget"] for r in records)
    for r in sorted(
        records,
        key=lambda r: (
            r["key"].get("temperature", 0),
            r["key"].get("point", 0),
            r["key"]["budget"],
            r["key"]["estimator"],
        ),
    ):
        k, m = r["key"], r["metrics"]
        where = "x0"
        if points is not None:
            where = POINT_NAMES.get(tuple(points[k["point"]]), str(points[k["point"]]))
        if k["budget"] == largest:
            rows.append(
                [
                    fmt(k["temperature"]),
                    where,
                    str(k["budget"]),
                    f"`{k['estimator']}`",
                    _relative_cell(m, k["estimator"]),
                    f"{fmt(m['bias_norm'])} ± {fmt(m['bias_norm_mcse'], 2)}",
                    fmt(m["variance"]),
                    fmt(m["truth_norm"]),
                ]
            )
        flat.append(
            {
                "temperature": k["temperature"],
                "point": where,
                "budget": k["budget"],
                "estimator": k["estimator"],
                **{x: m[x] for x in ("relative_mse", "mse", "bias_norm", "bias_norm_mcse", "variance", "truth_norm")},
                **{
                    x: m[x]
                    for x in ("truth_near_zero", "squared_errors", "mse_mcse", "efficiency_ratio", "grad_evals")
                    if x in m
                },
            }
        )
    header = ["T", "point", "budget", "estimator", "relative MSE", "bias norm ± MCSE", "variance", "norm of the target"]
    return table(header, rows), flat


TIED, NEAR_ZERO = "tied", "truth near zero"


def _near_zero(f: dict[str, Any]) -> bool:
    """The record's flag; for a run written before it, the same rule from its numbers: the noise of one exact
    Gibbs draw (MSE / efficiency ratio x grad evals), or of one draw of first-order smoothing (variance x n)."""
    if "truth_near_zero" in f:
        return bool(f["truth_near_zero"])
    if f.get("efficiency_ratio"):
        return f["truth_norm"] ** 2 < f["mse"] / f["efficiency_ratio"] * f["grad_evals"]
    if f["estimator"].endswith("order 1"):
        return f["truth_norm"] ** 2 < f["variance"] * f["grad_evals"]
    return f["truth_norm"] == 0


def _relative_cell(m: dict[str, Any], estimator: str) -> str:
    if _near_zero({**m, "estimator": estimator}):
        return f"— (truth ≈ 0; MSE {fmt(m['mse'])})"
    mcse = f" ± {fmt(m['mse_mcse'] / m['truth_norm'] ** 2, 2)}" if m.get("mse_mcse") is not None else ""
    return f"{fmt(m['relative_mse'])}{mcse}"


def _cell_best(flat: list[dict[str, Any]]) -> dict[tuple, dict[str, Any] | None]:
    """Per (T, point, budget) cell, the estimators with the lowest relative MSE: the statistics module's best set
    (paired over replicates, 95 %; one member: a win, several: tied), or None for a cell whose truth is near zero
    (a relative error there divides by nearly nothing). A run without per-replicate errors falls back to the point
    estimates."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for f in flat:
        cells.setdefault((f["temperature"], f["point"], f["budget"]), []).append(f)
    best: dict[tuple, dict[str, Any] | None] = {}
    for cell, members in cells.items():
        if any(_near_zero(f) for f in members):
            best[cell] = None
        elif all(f.get("squared_errors") for f in members):
            relative = {f["estimator"]: np.asarray(f["squared_errors"]) / f["truth_norm"] ** 2 for f in members}
            values = {name: errors.tolist() for name, errors in relative.items()}
            best[cell] = {**best_set(relative, unit="replicate").as_dict(), "values": values}
        else:
            best[cell] = {"best": [min(members, key=lambda f: f["relative_mse"])["estimator"]]}
    return best


def _winner_counts(flat: list[dict[str, Any]]) -> dict[str, int]:
    """How many cells each estimator won (:func:`_cell_best`), with ``tied`` and ``truth near zero`` apart."""
    wins: dict[str, int] = {}
    for verdict in _cell_best(flat).values():
        best = None if verdict is None else verdict["best"]
        winner = NEAR_ZERO if best is None else best[0] if len(best) == 1 else TIED
        wins[winner] = wins.get(winner, 0) + 1
    return dict(sorted(wins.items(), key=lambda kv: -kv[1]))


def _explicit_points(results: dict[str, Any]) -> list[list[float]] | None:
    """The points of a run that named them (the sharp/wide problem's minima and barrier), else None (x0)."""
    points = results["config"].get("points", {})
    return points.get("values") if points.get("kind") == "explicit" else None


def estimator_claims(step_dir: Path) -> list[Claim]:
    """The lowest relative MSE in each (T, point, budget) cell of an estimator comparison (``smoothing_sharp_wide``,
    ``smoothing_quadratic``), cells with a truth near zero left out."""
    results, records = run_records(step_dir)
    _, flat = _estimator_rows(records, _explicit_points(results))
    n = int(results["config"].get("replicates", 0))
    claims = []
    for (temperature, point, budget), verdict in _cell_best(flat).items():
        if verdict is not None:
            where = f"T = {fmt(temperature)}, {point}, budget {budget}"
            claim_id, text = f"{step_dir.name}/{where}", f"lowest relative MSE at {where}"
            values = verdict.get("values")
            claims.append(verdict_claim(claim_id, text, verdict["best"], n, verdict=verdict, values=values))
    return claims


FLATNESS = (
    ("top_eigenvalue", "value", "top Hessian eigenvalue"),
    ("trace", "value", "Hessian trace"),
    ("sharpness", "value", "eps-sharpness (%)"),
    ("local_entropy", "norm", "norm of g_LE"),
)


def flatness_by_label(
    step_dir: Path, measures: Sequence[tuple[str, str, Any]] | None = None
) -> tuple[dict[str, Any], dict[str, dict[str, dict[Any, float]]]]:
    """label -> measure -> seed -> value, from every run directory of a flatness sweep (``measures``: (name, field
    of its record, words), by default :data:`FLATNESS`)."""
    results = read_json(step_dir / "results.json")
    out: dict[str, dict[str, dict[Any, float]]] = {}
    for run in results["runs"]:
        path = step_dir / run["dir"] / "results.json"
        if run["status"] == "failed" or not path.is_file():
            continue
        seed = run["overrides"].get("seed")
        for rec in read_json(path)["records"]:
            if rec.get("status") != "ok":
                continue
            mine = out.setdefault(rec["label"], {})
            mine.setdefault("test_error", {})[seed] = rec["final"]["test_error"]
            for name, field, _ in FLATNESS if measures is None else measures:
                value = (rec.get("flatness") or {}).get(name, {})
                if isinstance(value, dict) and value.get(field) is not None:
                    mine.setdefault(name, {})[seed] = float(value[field])
    return results, out


FLATNESS_CLAIMS = (("test_error", 100.0, "points"), ("top_eigenvalue", 1.0, ""), ("trace", 1.0, ""))  # scale, unit
ENTROPY_PREFIX = "entropy-sgd (sgld"


def flatness_comparisons(flat: dict[str, dict[str, dict[Any, float]]]) -> tuple[str | None, dict[str, dict]]:
    """Entropy-SGD (SGLD) minus LPF-SGD, SGD and SAM in test error, top eigenvalue and trace, paired by seed."""
    entropy = next((lab for lab in flat if lab.startswith(ENTROPY_PREFIX)), None)
    comparisons = {}
    for other in ("lpf-sgd", "sgd", "sam"):
        if entropy and other in flat:
            comparisons[other] = {
                m: paired(flat[entropy].get(m, {}), flat[other].get(m, {})) for m, _, _ in FLATNESS_CLAIMS
            }
    return entropy, comparisons


def flatness_claims(step_dir: Path) -> list[Claim]:
    """The paired differences of the flatness table: Entropy-SGD (SGLD) minus each flat-minima rival."""
    entropy, comparisons = flatness_comparisons(flatness_by_label(step_dir)[1])
    names = {name: words for name, _, words in FLATNESS} | {"test_error": "test error"}
    return [
        difference_claim(
            f"flatness/{measure}: {entropy} - {other}",
            f"{names[measure]}, `{entropy}` minus `{other}`",
            d[measure],
            scale,
            unit,
        )
        for other, d in comparisons.items()
        for measure, scale, unit in FLATNESS_CLAIMS
    ]


def section_smoothing(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    from localentropy.experiments.targets import targets_table

    sw_results, sw = run_records(out / "smoothing_sharp_wide")
    q_results, quad = run_records(out / "smoothing_quadratic")
    sw_table, sw_flat = _estimator_rows(sw, _explicit_points(sw_results))
    q_table, q_flat = _estimator_rows(quad, _explicit_points(q_results))
    sw_wins, q_wins = _winner_counts(sw_flat), _winner_counts(q_flat)
    targets = read_json(out / "smoothing_targets" / "targets.json")
    fig_targets = copy_figure(out / "smoothing_targets" / "targets.png", figures, "targets.png")
    fl_results, flat = flatness_by_label(out / "flatness")
    n_seeds = len(fl_results["runs"])
    fl_rows = []
    for label, measures in flat.items():
        fl_rows.append(
            [
                label,
                f"{pm(list(measures.get('test_error', {}).values()), 100)} %",
                *(
                    pm(list(measures.get(name, {}).values()), 1, 3 if name != "local_entropy" else 5)
                    for name, _, _ in FLATNESS
                ),
            ]
        )
    entropy, comparisons = flatness_comparisons(flat)
    means = [m for m in (mean_sd(list(v.get("test_error", {}).values()))[0] for v in flat.values()) if m is not None]
    err_lo, err_hi = 100 * min(means, default=0.0), 100 * max(means, default=0.0)
    numbers["smoothing"] = {
        "sharp_wide": sw_flat,
        "quadratic": q_flat,
        "wins_sharp_wide": sw_wins,
        "wins_quadratic": q_wins,
        "flatness": flat,
        "targets": [
            {
                "gamma": s["gamma"],
                "temperature": s["temperature"],
                "sigma": s["sigma"],
                **{k: s["objectives"][k]["minimiser"] for k in (LE, SMOOTHED)},
            }
            for s in targets.get("settings", [])
        ],
    }
    base = fl_results["config"]["base"]
    settings = targets.get("settings", [])
    counts = {"sharp/wide": sw_wins, "quadratic": q_wins}
    numbers["smoothing"]["view"] = {
        "temperatures": sorted({f["temperature"] for f in sw_flat}),
        "sw_replicates": sw_results["config"]["replicates"],
        "q_replicates": q_results["config"]["replicates"],
        "sw_table": "\n".join(sw_table),
        "q_table": "\n".join(q_table),
        "sw_wins": sw_wins,
        "q_wins": q_wins,
        "quad_norms": _quadratic_norms(q_flat),
        "targets_table": "\n".join(targets_table(targets)),
        "fig_targets": fig_targets,
        "basins": {
            "settings": len(settings),
            "le_wide": len(_switch(targets, LE)),
            "sm_wide": len(_switch(targets, SMOOTHED)),
            "only_le": sum(_basin(s, LE) == "wide" and _basin(s, SMOOTHED) == "sharp" for s in settings),
            "only_sm": sum(_basin(s, SMOOTHED) == "wide" and _basin(s, LE) == "sharp" for s in settings),
        },
        "n_seeds": n_seeds,
        "effective_epochs": base.get("effective_epochs"),
        "flatness_tuning": sweep_tuning(fl_results),
        "flatness_table": "\n".join(table(["optimizer", "test error", *(title for _, _, title in FLATNESS)], fl_rows)),
        "comparisons": list(comparisons.items()),
        "entropy": entropy,
        "lpf": comparisons.get("lpf-sgd"),
        "cells": {
            "le": {k: sum(v for e, v in w.items() if e.startswith("local-entropy")) for k, w in counts.items()},
            "total": {k: sum(w.values()) for k, w in counts.items()},
            "tied": sum(c.get(TIED, 0) for c in counts.values()),
            "near": sum(c.get(NEAR_ZERO, 0) for c in counts.values()),
        },
        "ratios": _variance_ratios(sw_flat),
        "err_lo": err_lo,
        "err_hi": err_hi,
    }
    return section_text("smoothing", numbers["smoothing"]["view"])


def _quadratic_norms(flat: list[dict[str, Any]]) -> dict[str, float] | None:
    """The exact norms of the two targets on the quadratic (they are different vectors), or None."""
    le = next((f["truth_norm"] for f in flat if f["estimator"].startswith("local-entropy")), None)
    sm = next((f["truth_norm"] for f in flat if f["estimator"].startswith("smoothing")), None)
    return None if le is None or sm is None else {"le": le, "sm": sm}


def _basin(setting: dict[str, Any], objective: str) -> str:
    return setting["objectives"][objective]["minimiser"]["basin"]


def _switch(targets: dict[str, Any], objective: str) -> list[str]:
    return [
        f"(gamma={s['gamma']:g}, T={s['temperature']:g})"
        for s in targets.get("settings", [])
        if _basin(s, objective) == "wide"
    ]


def _variance_ratios(sw_flat: list[dict[str, Any]]) -> list[list[float]]:
    """At the wide minimum and the largest budget, each local-entropy estimate's variance over the order-1
    smoothing estimate's at the same T: [ratio, T] pairs."""
    largest = max((f["budget"] for f in sw_flat), default=None)
    ratios = []
    for f in sw_flat:
        if f["budget"] == largest and f["point"] == "wide minimum" and f["estimator"].startswith("local-entropy"):
            other = next(
                (
                    g
                    for g in sw_flat
                    if g["budget"] == largest
                    and g["point"] == f["point"]
                    and g["temperature"] == f["temperature"]
                    and g["estimator"] == "smoothing order 1"
                ),
                None,
            )
            if other and other["variance"] > 0:
                ratios.append([f["variance"] / other["variance"], f["temperature"]])
    return ratios
