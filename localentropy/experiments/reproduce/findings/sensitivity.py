"""Sensitivity: gamma, the inner step size, L and scoping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localentropy.experiments.reproduce.claims import Claim, difference_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    by_seed,
    copy_figure,
    distinct,
    group_rows,
    mean_sd,
    paired,
    pm,
    select,
    setting_text,
    short,
    sweep_entries,
    table,
    tuned_reference,
)
from localentropy.experiments.reproduce.findings.render import section_text
from localentropy.experiments.sweeps.figures import value_text as _text


def _grid(step_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """The sweep's results, entries, Entropy-SGD's swept axes and its cells (one per setting, errors by seed)."""
    results, items = sweep_entries(step_dir)
    axes = [a["key"] for a in results["axes"] if a["key"] not in ("optimizer", "seed")]
    return results, items, axes, group_rows(items, "entropy-sgd", axes)


def sensitivity_claims(step_dir: Path) -> list[Claim]:
    """Every setting of gamma x eta' x L that finished a run, minus SGD on the same seeds (the count of settings
    better or worse than SGD rests on these)."""
    _, items, _, cells = _grid(step_dir)
    sgd = by_seed(select(items, "sgd"))
    return [
        difference_claim(
            f"sensitivity/{setting_text(c['setting'])} - sgd",
            f"test error, {setting_text(c['setting'])} minus SGD",
            paired(c["by_seed"], sgd),
        )
        for c in cells
        if c["by_seed"]
    ]


def _scoping_effect(
    step_dir: Path,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], list[str], list[str], dict[str, Any]]:
    """The scoping sweep's results, entries, cells, gammas, scopings, and per gamma the largest scoping minus none
    (paired by seed)."""
    results, items = sweep_entries(step_dir)
    cells = group_rows(items, "entropy-sgd", ["gamma", "scoping"])
    gammas = [_text(v) for v in next(a for a in results["axes"] if a["key"] == "gamma")["values"]]
    scopings = [_text(v) for v in next(a for a in results["axes"] if a["key"] == "scoping")["values"]]
    lookup = {(c["setting"]["gamma"], c["setting"]["scoping"]): c for c in cells}
    effect = {}
    for g in gammas:
        lo, hi = lookup.get((g, scopings[0])), lookup.get((g, scopings[-1]))
        if lo and hi:
            effect[g] = paired(hi["by_seed"], lo["by_seed"])
    return results, items, cells, gammas, scopings, effect


def scoping_claims(step_dir: Path) -> list[Claim]:
    """Per gamma, the largest scoping's test error minus no scoping's."""
    *_, scopings, effect = _scoping_effect(step_dir)
    return [
        difference_claim(f"scoping/gamma = {g}", f"test error at gamma = {g}, scoping {scopings[-1]} minus none", d)
        for g, d in effect.items()
    ]


def section_sensitivity(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    results, items, axes, cells = _grid(out / "sensitivity")
    sgd = by_seed(select(items, "sgd"))
    sgd_m, _ = mean_sd(list(sgd.values()))
    ranked = sorted((c for c in cells if c["mean"] is not None), key=lambda c: c["mean"])
    all_bad = [c for c in cells if c["mean"] is None]
    marg_rows, marginals = [], []
    for a in axes:
        values = next(v for v in results["axes"] if v["key"] == a)["values"]
        for v in values:
            errs = [x for c in cells if c["setting"][a] == _text(v) for x in c["by_seed"].values()]
            bad = sum(c["bad"] for c in cells if c["setting"][a] == _text(v))
            best = min(
                (c["mean"] for c in cells if c["setting"][a] == _text(v) and c["mean"] is not None), default=None
            )
            marg_rows.append(
                [a, _text(v), f"{pm(errs, 100)} %", "—" if best is None else f"{100 * best:.2f} %", str(bad)]
            )
            marginals.append({"axis": a, "value": _text(v), "test_errors": errs, "best_mean": best, "bad": bad})
    top = [
        [setting_text(c["setting"]), f"{pm(list(c['by_seed'].values()), 100)} %", short(paired(c["by_seed"], sgd))]
        for c in ranked[:5]
    ]
    bottom = [
        [setting_text(c["setting"]), f"{pm(list(c['by_seed'].values()), 100)} %", str(c["bad"])] for c in ranked[-3:]
    ]
    within = [c for c in ranked if sgd_m is not None and c["mean"] <= sgd_m + 0.005]
    better = [c for c in ranked if distinct(d := paired(c["by_seed"], sgd)) and d["mean"] < 0]
    worse = [c for c in ranked if distinct(d := paired(c["by_seed"], sgd)) and d["mean"] > 0]
    fig = copy_figure(out / "sensitivity" / "sensitivity.png", figures, "sensitivity.png")
    sc_results, sc_items, sc_cells, gammas, scopings, scoping_effect = _scoping_effect(out / "scoping")
    lookup = {(c["setting"]["gamma"], c["setting"]["scoping"]): c for c in sc_cells}
    sc_rows = []
    for g in gammas:
        row = [g]
        for s_ in scopings:
            c = lookup.get((g, s_))
            row.append(
                "—"
                if c is None
                else f"{pm(list(c['by_seed'].values()), 100)} %" + (f" ({c['bad']} bad)" if c["bad"] else "")
            )
        sc_rows.append(row)
    sc_sgd = by_seed(select(sc_items, "sgd"))
    n_seeds = len({e["seed"] for e in items})
    numbers["sensitivity"] = {
        "cells": [{k: v for k, v in c.items() if k != "by_seed"} | {"by_seed": c["by_seed"]} for c in cells],
        "sgd": sgd,
        "scoping": [c for c in sc_cells],
        "scoping_effect": scoping_effect,
    }
    numbers["sensitivity"]["marginals"] = marginals  # the runs behind each row of the axis table
    best_by_axis = {a: [(r[1], r[3]) for r in marg_rows if r[0] == a] for a in axes}
    chance = [c for c in ranked if c["mean"] > 0.5]  # 10 classes: no better than guessing, or diverged
    learned = [c for c in ranked if c["mean"] <= 0.5]
    spread = (learned[-1]["mean"] - learned[0]["mean"]) if learned else None
    view = {
        "n_cells": len(cells),
        "n_seeds": n_seeds,
        "sgd_errors": list(sgd.values()),
        "sgd_tuning": tuned_reference(results),
        "scoping_sgd_tuning": tuned_reference(sc_results),
        "marginal_table": "\n".join(
            table(
                [
                    "axis",
                    "value",
                    "mean ± sd over its runs (settings x seeds)",
                    "best setting's mean",
                    "diverged/failed runs",
                ],
                marg_rows,
            )
        ),
        "top_table": "\n".join(table(["setting", "test error", "minus SGD (paired)"], top)),
        "bottom_table": "\n".join(table(["setting", "test error", "diverged/failed runs"], bottom)),
        "figure": fig,
        "scoping_sgd_errors": list(sc_sgd.values()),
        "scoping_table": "\n".join(table(["gamma", *(f"scoping {s_}" for s_ in scopings)], sc_rows)),
        "scopings": scopings,
        "scoping_effect": list(scoping_effect.items()),
        "all_bad": [setting_text(c["setting"]) for c in all_bad],
        "chance": [setting_text(c["setting"]) for c in chance],
        "spread": None if spread is None else 100 * spread,
        "within": len(within),
        "finished": len(ranked),
        "better": len(better),
        "worse": len(worse),
        "best_by_axis": list(best_by_axis.items()),
    }
    numbers["sensitivity"]["view"] = view
    return section_text("sensitivity", view)
