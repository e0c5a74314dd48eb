"""The sweep report: learning curves with bands over seeds, sensitivity plots, tables; plain matplotlib.

Everything is computed from the sweep's ``results.json`` data (:func:`write_sweep_report` rebuilds the report of
a finished sweep) and written atomically: ``report.md``, ``curves.png``, ``sensitivity.png`` (when a
hyperparameter other than the seed and the optimizer is swept), ``summary.csv`` (one row per optimizer and
setting) and ``runs.csv`` (one row per run and optimizer).

What the numbers say (settings, statistics over seeds, best settings, the answer) is computed by
:mod:`localentropy.experiments.sweeps.summary`; this module draws and writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localentropy.experiments.core import templates
from localentropy.experiments.core.files import atomic_write_bytes, csv_bytes
from localentropy.experiments.core.plots import plot_forest
from localentropy.experiments.sweeps.figures import (
    IGNORED_AXES,
    clipped_on_log_axes,
    plot_curves,
    plot_sensitivity,
    setting_text,
    value_text,
)
from localentropy.experiments.sweeps.paths import optimizer_label
from localentropy.experiments.sweeps.summary import answer, best_groups, entries, groups
from localentropy.experiments.sweeps.timing import measured_text
from localentropy.experiments.sweeps.tuning import ERROR, OBJECTIVES, OPTION_PREFIX, with_chosen
from localentropy.experiments.tuning.record import tuning_summary, tuning_table
from localentropy.experiments.tuning.record import value_text as record_value_text

DASH = "—"
PACKAGE = "localentropy.experiments.sweeps"


TEMPLATES = templates.Templates(PACKAGE, measured=measured_text)


def _render(template: str, **data: Any) -> list[str]:
    return [*TEMPLATES.render(template, **data).split("\n"), ""]


def _pct(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return DASH
    return f"{100 * mean:.2f} ± {100 * sd:.2f} %" if sd is not None else f"{100 * mean:.2f} %"


def _num(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def _seeds(g: dict[str, Any]) -> str:
    text = f"{len(g['ok'])}/{g['n']}"
    extra = [f"{g['diverged']} diverged"] * bool(g["diverged"]) + [f"{g['failed']} failed"] * bool(g["failed"])
    return text + (f" ({', '.join(extra)})" if extra else "")


def summary_table(all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]], varied: bool) -> list[str]:
    setting = " setting |" if varied else ""
    lines = [
        f"| optimizer |{setting} seeds ok | test error (mean ± sd) | effective epochs | grad evals | seconds |",
        "|---|" + "---|" * (6 if varied else 5),
    ]
    for label in dict.fromkeys(g["label"] for g in all_groups):
        g = best.get(label) or next(x for x in all_groups if x["label"] == label)
        cell = f" {setting_text(g['settings']) or DASH} |" if varied else ""
        lines.append(
            f"| {label} |{cell} {_seeds(g)} | {_pct(g['test_mean'], g['test_sd'])} | "
            f"{_num(g['effective_epochs'], 2)} | {_num(g['grad_evals'], 0)} | {_num(g['seconds'])} |"
        )
    return lines


def seed_table(all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]]) -> list[str]:
    """Final test error per seed (rows) and optimizer at its best setting (columns): the runs of one seed share
    the data split, the initial weights and the minibatch order, so the differences within a row are paired."""
    chosen = [best[label] for label in dict.fromkeys(g["label"] for g in all_groups) if label in best]
    seeds = sorted({m["seed"] for g in chosen for m in g["members"] if m["seed"] is not None}, key=str)
    if len(seeds) < 2 or len(chosen) < 2:
        return []
    lines = ["| seed | " + " | ".join(g["label"] for g in chosen) + " |", "|---|" + "---|" * len(chosen)]
    for seed in seeds:
        cells = []
        for g in chosen:
            m = next((m for m in g["members"] if m["seed"] == seed), None)
            final = (m or {}).get("final") or {}
            cells.append(DASH if final.get("test_error") is None else f"{100 * final['test_error']:.2f} %")
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    return lines


def optimizer_table(label: str, mine: list[dict[str, Any]], best: dict[str, Any] | None) -> list[str]:
    keys = list(dict.fromkeys(k for g in mine for k, _ in g["settings"]))
    head = (
        "| " + " | ".join(keys) + " | seeds ok | test error (mean ± sd) | val error | effective epochs | "
        "grad evals | seconds |"
    )
    lines = [head, "|" + "---|" * (len(keys) + 6)]

    def order(g: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for k in keys:
            v = dict(g["settings"]).get(k, "")
            try:
                out.append((0, float(v), ""))
            except ValueError:
                out.append((1, 0.0, v))
        return tuple(out)

    for g in sorted(mine, key=order):
        cells = [dict(g["settings"]).get(k, DASH) for k in keys]
        mark = " **(best)**" if g is best else ""
        val = DASH if g["val_mean"] is None else f"{100 * g['val_mean']:.2f} %"
        lines.append(
            "| " + " | ".join(cells) + f" | {_seeds(g)} | {_pct(g['test_mean'], g['test_sd'])}{mark} | "
            f"{val} | {_num(g['effective_epochs'], 2)} | {_num(g['grad_evals'], 0)} | {_num(g['seconds'])} |"
        )
    return lines


def _first_line(message: str | None, limit: int = 240) -> str:
    text = (message or "").strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _tuning_lines(tuning: dict[str, Any] | None, budget: str) -> list[str]:
    """The sweep's tuning section: the search, its equal budget, the tuning seeds and a row per optimizer."""
    if not isinstance(tuning, dict) or not isinstance(tuning.get("optimizers"), dict):
        return []
    seeds = ", ".join(map(str, tuning["tuning_seeds"]))
    objective = OBJECTIVES.get(tuning.get("objective", ERROR.name), ERROR)
    units = f"{len(tuning['tuning_seeds'])} training run(s) of {budget} (tuning seeds {seeds})"
    return [
        "## Tuning",
        "",
        tuning_summary(tuning, units) + f" Objective: the final {objective.name}; the tuning "
        f"seeds are apart from the reported seeds ({', '.join(map(str, tuning['evaluation_seeds']))}), so the "
        "reported test figures come from data splits, initial weights and minibatch orders the search never saw.",
        "",
        *tuning_table(tuning["optimizers"], f"{objective.name} reached", objective.show),
        "",
    ]


def _difference_rows(differences: list[dict[str, Any]]) -> list[dict[str, str]]:
    rows = []
    for e in differences:
        d, r = e["difference"], e["ratio"]
        ratio = DASH if r.ratio is None else f"{r.ratio:.2f}"
        if r.low is not None:
            ratio += f" ({r.low:.2f} to {r.high:.2f})"
        difference = DASH if d.mean is None else f"{100 * d.mean:+.2f}"
        if d.half_width is not None:
            difference += f" ± {100 * d.half_width:.2f}"
        rows.append({"label": e["label"], "difference": difference, "n": str(d.n), "ratio": ratio})
    return rows


def _values_text(opt: dict[str, Any], tuned: dict[str, Any]) -> list[str]:
    """An optimizer's values as it ran: lr, its options, its sampler and the sampler's options, tuned ones marked."""

    def item(name: str, value: Any, key: str) -> str:
        return f"{name} = {record_value_text(value)}" + (" (**tuned**)" if key in tuned else "")

    out = [item("lr", opt["lr"], "lr")] if opt.get("lr") is not None else []
    out += [item(k, v, f"{OPTION_PREFIX}{k}") for k, v in (opt.get("options") or {}).items()]
    if opt.get("sampler"):
        sampler_options = opt.get("sampler_options") or {}
        inner = [item(k, v, k) for k, v in sampler_options.items() if not isinstance(v, dict)]
        for k, v in sampler_options.items():
            if isinstance(v, dict):  # a wrapper's sampler
                inner += [item(f"{k}.{kk}", vv, kk) for kk, vv in v.items()]
        out.append(f"sampler `{opt['sampler']}`" + (f" ({', '.join(inner)})" if inner else ""))
    return out


def _chosen(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tuning = results.get("tuning") if isinstance(results.get("tuning"), dict) else {}
    return {label: r["chosen"] for label, r in (tuning.get("optimizers") or {}).items() if r.get("chosen")}


def what_ran(results: dict[str, Any], best: dict[str, dict[str, Any]], varied: bool) -> list[dict[str, Any]]:
    """Per optimizer of the base config: its label, kind and values as they ran (tuned values in place and marked),
    and the swept setting the report shows it at."""
    chosen = _chosen(results)
    base = with_chosen(results["config"]["base"], chosen)
    out = []
    for i, opt in enumerate(base.get("optimizers", [])):
        label = optimizer_label(opt, i)
        g = best.get(label)
        out.append(
            {
                "label": label,
                "kind": opt.get("kind"),
                "ran_with": _values_text(opt, chosen.get(label, {})) or ["its defaults"],
                "setting": setting_text(g["settings"]) if varied and g else "",
            }
        )
    return out


def report_markdown(
    results: dict[str, Any],
    all_groups: list[dict[str, Any]],
    best: dict[str, dict[str, Any]],
    only_best: bool,
    sensitivity: bool,
    forest: bool = False,
) -> str:
    """The report: its answer first, what ran with the values it ran with, the tables and figures of what was
    measured, and the resolved config last."""
    counts = results.get("counts", {})
    base = results["config"]["base"]
    budget = (
        f"{base['epochs']} epochs per optimizer"
        if "epochs" in base
        else f"{base.get('effective_epochs')} effective epochs per optimizer"
    )
    axes = ", ".join(f"`{a['key']}` ({', '.join(value_text(v) for v in a['values'])})" for a in results["axes"])
    labels = [g["label"] for g in all_groups]
    varied = len(labels) > len(set(labels))
    found = answer(all_groups, best, varied)
    timing = results.get("timing")
    lines = [f"# Sweep: {results['name']}", "", *_render("answer.md.j2", answer=found)]
    lines += _render(
        "ran.md.j2",
        counts={"runs": len(results["runs"]), **{k: counts.get(k, 0) for k in ("ok", "diverged", "failed")}},
        axes=axes,
        base={
            "data": base.get("data", {}).get("source"),
            "model": base.get("model", {}).get("name"),
            "batch_size": base.get("batch_size", 64),
            "budget": budget,
        },
        tuned=bool(_chosen(results)),
        optimizers=what_ran(results, best, varied),
        timing=timing,
    )
    lines += [
        "## Summary" + (": each optimizer at its best setting" if varied else ""),
        "",
        ("Best setting: the lowest mean final validation error (not the test error). " if varied else "")
        + "Test error: mean ± sd over the seeds that finished (sample sd); effective epochs, grad evals "
        "(forward-backward passes) and training seconds: means.",
        "",
        *summary_table(all_groups, best, varied),
        "",
    ]
    if found and found["differences"] and forest:
        lines += _render(
            "differences.md.j2",
            varied=varied,
            reference=found["lowest"]["label"],
            rows=_difference_rows(found["differences"]),
            timing=timing,
        )
    lines += _tuning_lines(results.get("tuning"), budget)
    per_seed = seed_table(all_groups, best)
    if per_seed:
        lines += [
            "## Per seed",
            "",
            "Final test error"
            + (" at each optimizer's best setting" if varied else "")
            + ". The runs of one seed share the data split, the initial weights and the minibatch order: "
            "differences within a row are paired.",
            "",
            *per_seed,
            "",
        ]
    for label in dict.fromkeys(g["label"] for g in all_groups):
        mine = [g for g in all_groups if g["label"] == label]
        if len(mine) > 1:
            lines += [f"## {label}", "", *optimizer_table(label, mine, best.get(label)), ""]
    lines += [
        "## Learning curves",
        "",
        "![test error against effective epochs and seconds](curves.png)",
        "",
        "Mean ± sd over seeds (bands) of the test error after each epoch (the first point: the initial "
        "weights); seconds: mean training wall-clock time (evaluation excluded)."
        + (" With more settings than fit one plot, each optimizer is shown at its best setting." if only_best else ""),
        "",
    ]
    clipped = clipped_on_log_axes(all_groups, best)
    if clipped:
        lines += [
            f"Not shown on the log-scaled test-error axes (a value of 0 has no place there): {'; '.join(clipped)}.",
            "",
        ]
    if sensitivity:
        lines += [
            "## Sensitivity",
            "",
            "![final test error against each swept field](sensitivity.png)",
            "",
            "Final test error (mean ± sd over seeds) against each swept field. Solid: the other swept fields "
            "at the optimizer's best setting; dashed: the mean over the other fields' values; a horizontal "
            "line: an optimizer that the field does not reach (its best setting, ± sd band); x at the top: no "
            "seed finished.",
            "",
        ]
    bad = [r for r in results["runs"] if r["status"] != "ok"]
    if bad:
        lines += ["## Diverged and failed runs", ""]
        lines += [f"- `{r['id']}`: {r['status']}: {_first_line(r.get('message'))}" for r in bad] + [""]
    meta = results.get("meta", {})
    lines += [
        "Files: `results.json` (everything), `summary.csv` (one row per optimizer and setting), `runs.csv` "
        "(one row per run and optimizer), `runs/<id>/` (each run's directory), `logs/<id>.log`; "
        f"torch {meta.get('versions', {}).get('torch')}, commit {meta.get('git_commit') or 'unknown'}.",
        "",
    ]
    config = {**results["config"], "base": with_chosen(results["config"]["base"], _chosen(results))}
    lines += _render(
        "config.md.j2", tuned=bool(_chosen(results)), config=json.dumps(config, indent=2, sort_keys=True, default=str)
    )
    return "\n".join(lines).rstrip() + "\n"


def plot_differences(found: dict[str, Any] | None, path: Path) -> Path | None:
    """The forest plot of the paired differences to the lowest (points of test error, 95 % t-intervals)."""
    if not found:
        return None
    reference = found["lowest"]["label"]
    rows = [
        {
            "label": f"{e['label']} minus {reference}",
            "unit": "points of test error",
            "estimate": {"mean": 100 * d.mean, "ci95": 100 * d.half_width},
        }
        for e in found["differences"]
        if (d := e["difference"]).mean is not None and d.half_width is not None
    ]
    return plot_forest(
        rows,
        path,
        f"final test error minus {reference}'s, paired over seeds",
        interval="mean and 95 % t-interval over the paired seeds",
    )


def write_sweep_report(sweep_dir: Path, results: dict[str, Any]) -> Path:
    """report.md, curves.png, sensitivity.png, summary.csv and runs.csv in ``sweep_dir``; returns the report's path."""
    sweep_dir = Path(sweep_dir)
    items = entries(results)
    all_groups = groups(items)
    best = best_groups(all_groups)
    keys = [a["key"] for a in results["axes"] if a["key"] not in IGNORED_AXES]
    summary = [
        {
            "optimizer": g["label"],
            "kind": g["kind"],
            **dict(g["settings"]),
            "seeds": g["n"],
            "ok": len(g["ok"]),
            "diverged": g["diverged"],
            "failed": g["failed"],
            "test_error_mean": g["test_mean"],
            "test_error_sd": g["test_sd"],
            "val_error_mean": g["val_mean"],
            "effective_epochs": g["effective_epochs"],
            "grad_evals": g["grad_evals"],
            "seconds": g["seconds"],
            "best": best.get(g["label"]) is g,
        }
        for g in all_groups
    ]
    atomic_write_bytes(
        sweep_dir / "summary.csv",
        csv_bytes(
            summary,
            [
                "optimizer",
                "kind",
                *keys,
                "seeds",
                "ok",
                "diverged",
                "failed",
                "test_error_mean",
                "test_error_sd",
                "val_error_mean",
                "effective_epochs",
                "grad_evals",
                "seconds",
                "best",
            ],
        ),
    )
    per_run = [
        {
            "run": e["run"],
            "optimizer": e["label"],
            "kind": e["kind"],
            "seed": e["seed"],
            **dict(e["settings"]),
            "status": e["status"],
            **{
                k: (e["final"] or {}).get(k)
                for k in ("test_error", "val_error", "effective_epochs", "grad_evals", "seconds")
            },
            "message": e["message"],
        }
        for e in items
    ]
    atomic_write_bytes(
        sweep_dir / "runs.csv",
        csv_bytes(
            per_run,
            [
                "run",
                "optimizer",
                "kind",
                "seed",
                *keys,
                "status",
                "test_error",
                "val_error",
                "effective_epochs",
                "grad_evals",
                "seconds",
                "message",
            ],
        ),
    )
    _, only_best = plot_curves(all_groups, best, sweep_dir / "curves.png")
    drawn = plot_sensitivity(results, all_groups, best, sweep_dir / "sensitivity.png") is not None
    labels = [g["label"] for g in all_groups]
    found = answer(all_groups, best, len(labels) > len(set(labels)))
    forest = plot_differences(found, sweep_dir / "forest.png") is not None
    text = report_markdown(results, all_groups, best, only_best, drawn, forest)
    atomic_write_bytes(sweep_dir / "report.md", text.encode())
    return sweep_dir / "report.md"
