"""The sweep report: learning curves with bands over seeds, sensitivity plots, tables; plain matplotlib.

Everything is computed from the sweep's ``results.json`` data (:func:`write_sweep_report` rebuilds the report of
a finished sweep) and written atomically: ``report.md``, ``curves.png``, ``sensitivity.png`` (when a
hyperparameter other than the seed and the optimizer is swept), ``summary.csv`` (one row per optimizer and
setting) and ``runs.csv`` (one row per run and optimizer).

A *setting* is an optimizer's values of the swept fields that apply to it (the seed aside): a swept ``gamma``
is part of Entropy-SGD's settings, not of Adam's. Statistics over seeds use the runs that finished (status
"ok"); diverged and failed runs are counted beside them. The best setting of an optimizer is chosen by the mean
final *validation* error (the test error when there is no validation set), among settings whose every seed
finished when there is one.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from localentropy.experiments.plots import save_figure
from localentropy.experiments.rundir import atomic_write_bytes

DASH = "—"
IGNORED_AXES = ("seed", "optimizer")
MAX_CURVE_GROUPS = 8
Settings = tuple[tuple[str, str], ...]  # (axis key, value as JSON-ish text), in axis order


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per run and optimizer: label, kind, seed, settings, status, final numbers and curve."""
    base_labels = [o.get("label", o.get("kind")) for o in results["config"]["base"].get("optimizers", [])]
    order = [a["key"] for a in results["axes"]]
    out = []
    for run in results["runs"]:
        overrides, touched = run["overrides"], run.get("touched", {})
        records = run.get("records") or []
        if not records:  # a failed run: its optimizers from the selection or the base config
            labels = [overrides["optimizer"]] if "optimizer" in overrides else base_labels
            records = [{"label": label, "kind": None, "status": "failed", "message": run.get("message"),
                        "final": None, "curve": []} for label in labels]  # fmt: skip
        for rec in records:
            label = rec["label"]
            settings = tuple(
                (k, _text(overrides[k])) for k in order
                if k in overrides and k not in IGNORED_AXES and (touched.get(k) is None or label in touched[k])
            )  # fmt: skip
            status = "failed" if run["status"] == "failed" else rec["status"]
            out.append({
                "run": run["id"], "label": label, "kind": rec.get("kind"), "seed": overrides.get("seed"),
                "settings": settings, "status": status, "message": rec.get("message") or run.get("message"),
                "final": rec.get("final") if status == "ok" else None, "curve": rec.get("curve") or [],
            })  # fmt: skip
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def groups(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries grouped by (optimizer, settings), with statistics over the seeds that finished."""
    table: dict[tuple[str, Settings], list[dict[str, Any]]] = {}
    for e in items:
        table.setdefault((e["label"], e["settings"]), []).append(e)
    out = []
    for (label, settings), members in table.items():
        ok = [m for m in members if m["status"] == "ok" and m["final"]]

        def final(key: str, ok: list[dict[str, Any]] = ok) -> list[float]:
            return [float(m["final"][key]) for m in ok if m["final"].get(key) is not None]

        tests = final("test_error")
        out.append({
            "label": label, "kind": next((m["kind"] for m in members if m["kind"]), None), "settings": settings,
            "members": members, "ok": ok, "n": len(members),
            "diverged": sum(m["status"] == "diverged" for m in members),
            "failed": sum(m["status"] == "failed" for m in members),
            "test_mean": _mean(tests), "test_sd": _sd(tests), "val_mean": _mean(final("val_error")),
            "grad_evals": _mean(final("grad_evals")), "effective_epochs": _mean(final("effective_epochs")),
            "seconds": _mean(final("seconds")), "seconds_sd": _sd(final("seconds")),
        })  # fmt: skip
    return out


def best_groups(all_groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per optimizer, the setting with the lowest mean validation error (test error without a validation set)."""
    best: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(g["label"] for g in all_groups):
        mine = [g for g in all_groups if g["label"] == label and g["ok"]]
        if not mine:
            continue
        complete = [g for g in mine if len(g["ok"]) == g["n"]] or mine

        def score(g: dict[str, Any]) -> float:
            value = g["val_mean"] if g["val_mean"] is not None else g["test_mean"]
            return math.inf if value is None else value

        best[label] = min(complete, key=score)
    return best


def _colors(labels: list[str]) -> dict[str, Any]:
    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _setting_text(settings: Settings) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings)


def _band(members: list[dict[str, Any]]) -> dict[str, np.ndarray] | None:
    curves = [[r for r in m["curve"] if r.get("test_error") is not None] for m in members]
    curves = [c for c in curves if c]
    if not curves:
        return None
    n = min(len(c) for c in curves)
    err = np.array([[100 * c[i]["test_error"] for i in range(n)] for c in curves])
    return {
        "effective_epochs": np.array([[c[i]["effective_epochs"] for i in range(n)] for c in curves]).mean(0),
        "seconds": np.array([[c[i]["seconds"] for i in range(n)] for c in curves]).mean(0),
        "mean": err.mean(0), "sd": err.std(0, ddof=1) if len(curves) > 1 else np.zeros(n), "count": len(curves),
    }  # fmt: skip


def plot_curves(all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]], path: Path) -> tuple[Path, bool]:
    """Test error (mean ± sd over seeds) against effective epochs and seconds; (path, whether only the best shown)."""
    shown = all_groups if len(all_groups) <= MAX_CURVE_GROUPS else list(best.values())
    only_best = len(shown) < len(all_groups)
    rows = math.ceil(len(shown) / 3)
    height = 4.2 + 0.25 * rows
    fig = Figure(figsize=(13, height))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=(0.75 + 0.25 * rows) / height, top=1 - 0.45 / height,
                        wspace=0.18)  # fmt: skip
    axes = fig.subplots(1, 2)
    colors = _colors(list(dict.fromkeys(g["label"] for g in all_groups)))
    styles = ("-", "--", ":", "-.")
    per_label: dict[str, int] = {}
    for g in shown:
        band = _band(g["ok"] or [m for m in g["members"] if m["curve"]])
        if band is None:
            continue
        k = per_label.setdefault(g["label"], 0)
        per_label[g["label"]] = k + 1
        name = g["label"] + (f" ({_setting_text(g['settings'])})" if g["settings"] else "") + f" [n={band['count']}]"
        low = np.maximum(band["mean"] - band["sd"], 1e-3)
        for ax, x in zip(axes, (band["effective_epochs"], band["seconds"]), strict=True):
            ax.plot(x, band["mean"], color=colors[g["label"]], linestyle=styles[k % 4], linewidth=1.4, marker="o",
                    markersize=2.5, label=name)  # fmt: skip
            ax.fill_between(x, low, band["mean"] + band["sd"], color=colors[g["label"]], alpha=0.18, linewidth=0)
    for ax, xlabel in zip(axes, ("effective epochs (examples forward-backwarded / training-set size)",
                                 "training wall-clock seconds (mean over seeds)"), strict=True):  # fmt: skip
        ax.set(xlabel=xlabel, ylabel="test error (%, log scale)", yscale="log")
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 1.5)))
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 3), fontsize=8)
    title = "Test error: mean ± sd over seeds" + (" (each optimizer at its best setting)" if only_best else "")
    fig.suptitle(title)
    return save_figure(fig, path), only_best


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def sensitivity_axes(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in results["axes"] if a["key"] not in IGNORED_AXES and len(a["values"]) >= 2]


def plot_sensitivity(results: dict[str, Any], all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]],
                     path: Path) -> Path | None:  # fmt: skip
    """Final test error against each swept hyperparameter, one line per optimizer, error bars over seeds.

    Solid: the other swept fields at the optimizer's best setting; dashed: the mean over their values. An
    optimizer that does not use the field: a horizontal line (its best setting) with its sd band. x: a setting
    where no seed finished.
    """
    axes_info = sensitivity_axes(results)
    if not axes_info:
        return None
    ncols = min(len(axes_info), 3)
    nrows = math.ceil(len(axes_info) / ncols)
    width, height = max(5.4 * ncols, 8.0), 4.0 * nrows + 1.6
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=(1.6 + 0.1) / height, top=1 - 0.6 / height, wspace=0.25,
                        hspace=0.45)  # fmt: skip
    panels = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    labels = list(dict.fromkeys(g["label"] for g in all_groups))
    colors = _colors(labels)
    for ax, axis in zip(panels, axes_info, strict=False):
        key, values = axis["key"], axis["values"]
        numeric = _numeric(values)
        xs = [float(v) for v in values] if numeric else list(range(len(values)))
        logx = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10
        texts = [_text(v) for v in values]
        for label in labels:
            mine = [g for g in all_groups if g["label"] == label]
            uses = any(dict(g["settings"]).get(key) is not None for g in mine)
            b = best.get(label)
            if not uses:
                if b is not None and b["test_mean"] is not None:
                    sd = b["test_sd"] or 0.0
                    ax.axhline(100 * b["test_mean"], color=colors[label], linewidth=1.0, linestyle=(0, (6, 3)),
                               label=f"{label} (not reached by the field)")  # fmt: skip
                    ax.axhspan(100 * (b["test_mean"] - sd), 100 * (b["test_mean"] + sd), color=colors[label],
                               alpha=0.1, linewidth=0)  # fmt: skip
                continue
            others = {k: v for k, v in (b["settings"] if b else ()) if k != key}
            px, py, pe, fails, mx, my = [], [], [], [], [], []
            for x, text in zip(xs, texts, strict=True):
                at = [g for g in mine if dict(g["settings"]).get(key) == text]
                chosen = [g for g in at if {k: v for k, v in g["settings"] if k != key} == others]
                if chosen and chosen[0]["test_mean"] is not None:
                    px.append(x)
                    py.append(100 * chosen[0]["test_mean"])
                    pe.append(100 * (chosen[0]["test_sd"] or 0.0))
                elif chosen:
                    fails.append(x)
                means = [g["test_mean"] for g in at if g["test_mean"] is not None]
                if len(at) > 1 and means:
                    mx.append(x)
                    my.append(100 * float(np.mean(means)))
            if px:
                ax.errorbar(px, py, yerr=pe, color=colors[label], marker="o", markersize=4, capsize=3, linewidth=1.4,
                            label=label + (" (others at best)" if others else ""))  # fmt: skip
            if mx:
                ax.plot(mx, my, color=colors[label], linestyle="--", linewidth=1.0, alpha=0.7,
                        label=f"{label} (mean over the other fields)")  # fmt: skip
            for x in fails:
                ax.plot([x], [1.0], transform=ax.get_xaxis_transform(), marker="x", color=colors[label],
                        markersize=9, clip_on=False)  # fmt: skip
        ax.set(xlabel=key, ylabel="final test error (%, log scale)", title=f"sensitivity to {key}")
        if logx:
            ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels(texts, rotation=30 if max(len(t) for t in texts) > 6 else 0)
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
        ax.grid(True, alpha=0.3)
    for ax in panels[len(axes_info) :]:
        ax.set_visible(False)
    handles: dict[str, Any] = {}
    for ax in panels[: len(axes_info)]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 3), fontsize=8)
    fig.suptitle("Final test error (mean ± sd over seeds) against each swept field")
    return save_figure(fig, path)


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
    lines = [f"| optimizer |{setting} seeds ok | test error (mean ± sd) | effective epochs | grad evals | seconds |",
             "|---|" + "---|" * (6 if varied else 5)]  # fmt: skip
    for label in dict.fromkeys(g["label"] for g in all_groups):
        g = best.get(label) or next(x for x in all_groups if x["label"] == label)
        cell = f" {_setting_text(g['settings']) or DASH} |" if varied else ""
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
    head = "| " + " | ".join(keys) + " | seeds ok | test error (mean ± sd) | val error | effective epochs | " \
           "grad evals | seconds |"  # fmt: skip
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


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buffer.getvalue().encode()


def _first_line(message: str | None, limit: int = 240) -> str:
    text = (message or "").strip()
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def report_markdown(results: dict[str, Any], all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]],
                    only_best: bool, sensitivity: bool) -> str:  # fmt: skip
    counts = results.get("counts", {})
    base = results["config"]["base"]
    budget = (f"{base['epochs']} epochs per optimizer" if "epochs" in base
              else f"{base.get('effective_epochs')} effective epochs per optimizer")  # fmt: skip
    axes = ", ".join(f"`{a['key']}` ({', '.join(_text(v) for v in a['values'])})" for a in results["axes"])
    data = base.get("data", {})
    labels = [g["label"] for g in all_groups]
    varied = len(labels) > len(set(labels))
    lines = [
        f"# Sweep: {results['name']}", "",
        f"{len(results['runs'])} runs ({counts.get('ok', 0)} ok, {counts.get('diverged', 0)} with a diverged "
        f"optimizer, {counts.get('failed', 0)} failed) over {axes}. Base: data `{data.get('source')}`, model "
        f"`{base.get('model', {}).get('name')}`, batch size {base.get('batch_size', 64)}, budget {budget} "
        "(unless swept). Each run is a `localentropy train` run in `runs/<run id>/` (its own report.md).", "",
        "## Summary" + (": each optimizer at its best setting" if varied else ""), "",
        ("Best setting: the lowest mean final validation error (not the test error). " if varied else "")
        + "Test error: mean ± sd over the seeds that finished (sample sd); effective epochs, grad evals "
        "(forward-backward passes) and training seconds: means.", "",
        *summary_table(all_groups, best, varied), "",
    ]  # fmt: skip
    per_seed = seed_table(all_groups, best)
    if per_seed:
        lines += ["## Per seed", "", "Final test error" + (" at each optimizer's best setting" if varied else "")
                  + ". The runs of one seed share the data split, the initial weights and the minibatch order: "
                  "differences within a row are paired.", "", *per_seed, ""]  # fmt: skip
    for label in dict.fromkeys(g["label"] for g in all_groups):
        mine = [g for g in all_groups if g["label"] == label]
        if len(mine) > 1:
            lines += [f"## {label}", "", *optimizer_table(label, mine, best.get(label)), ""]
    lines += ["## Learning curves", "", "![test error against effective epochs and seconds](curves.png)", "",
              "Mean ± sd over seeds (bands) of the test error after each epoch (the first point: the initial "
              "weights); seconds: mean training wall-clock time (evaluation excluded)."
              + (" With more settings than fit one plot, each optimizer is shown at its best setting." if only_best
                 else ""), ""]  # fmt: skip
    if sensitivity:
        lines += ["## Sensitivity", "", "![final test error against each swept field](sensitivity.png)", "",
                  "Final test error (mean ± sd over seeds) against each swept field. Solid: the other swept fields "
                  "at the optimizer's best setting; dashed: the mean over the other fields' values; a horizontal "
                  "line: an optimizer that the field does not reach (its best setting, ± sd band); x at the top: no "
                  "seed finished.", ""]  # fmt: skip
    bad = [r for r in results["runs"] if r["status"] != "ok"]
    if bad:
        lines += ["## Diverged and failed runs", ""]
        lines += [f"- `{r['id']}`: {r['status']}: {_first_line(r.get('message'))}" for r in bad] + [""]
    meta = results.get("meta", {})
    lines += [
        "Files: `results.json` (everything), `summary.csv` (one row per optimizer and setting), `runs.csv` "
        "(one row per run and optimizer), `runs/<id>/` (each run's directory), `logs/<id>.log`.",
        "",
        f"torch {meta.get('versions', {}).get('torch')}, commit {meta.get('git_commit') or 'unknown'}.",
    ]
    return "\n".join(lines) + "\n"


def write_sweep_report(sweep_dir: Path, results: dict[str, Any]) -> Path:
    """report.md, curves.png, sensitivity.png, summary.csv and runs.csv in ``sweep_dir``; returns the report's path."""
    sweep_dir = Path(sweep_dir)
    items = entries(results)
    all_groups = groups(items)
    best = best_groups(all_groups)
    keys = [a["key"] for a in results["axes"] if a["key"] not in IGNORED_AXES]
    summary = [{
        "optimizer": g["label"], "kind": g["kind"], **dict(g["settings"]), "seeds": g["n"], "ok": len(g["ok"]),
        "diverged": g["diverged"], "failed": g["failed"], "test_error_mean": g["test_mean"],
        "test_error_sd": g["test_sd"], "val_error_mean": g["val_mean"], "effective_epochs": g["effective_epochs"],
        "grad_evals": g["grad_evals"], "seconds": g["seconds"], "best": best.get(g["label"]) is g,
    } for g in all_groups]  # fmt: skip
    atomic_write_bytes(sweep_dir / "summary.csv", _csv(summary, [
        "optimizer", "kind", *keys, "seeds", "ok", "diverged", "failed", "test_error_mean", "test_error_sd",
        "val_error_mean", "effective_epochs", "grad_evals", "seconds", "best"]))  # fmt: skip
    per_run = [{"run": e["run"], "optimizer": e["label"], "kind": e["kind"], "seed": e["seed"], **dict(e["settings"]),
                "status": e["status"], **{k: (e["final"] or {}).get(k) for k in (
                    "test_error", "val_error", "effective_epochs", "grad_evals", "seconds")},
                "message": e["message"]} for e in items]  # fmt: skip
    atomic_write_bytes(sweep_dir / "runs.csv", _csv(per_run, [
        "run", "optimizer", "kind", "seed", *keys, "status", "test_error", "val_error", "effective_epochs",
        "grad_evals", "seconds", "message"]))  # fmt: skip
    _, only_best = plot_curves(all_groups, best, sweep_dir / "curves.png")
    drawn = plot_sensitivity(results, all_groups, best, sweep_dir / "sensitivity.png") is not None
    text = report_markdown(results, all_groups, best, only_best, drawn)
    atomic_write_bytes(sweep_dir / "report.md", text.encode())
    return sweep_dir / "report.md"
