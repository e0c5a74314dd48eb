"""The sweep report's figures: learning curves per group and the sensitivity of the best setting to each axis."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from localentropy.experiments.core.plots import save_figure

IGNORED_AXES = ("seed", "optimizer")
MAX_CURVE_GROUPS = 8
Settings = tuple[tuple[str, str], ...]  # (axis key, value as JSON-ish text), in axis order


def value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def _colors(labels: list[str]) -> dict[str, Any]:
    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def setting_text(settings: Settings) -> str:
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
        "mean": err.mean(0),
        "sd": err.std(0, ddof=1) if len(curves) > 1 else np.zeros(n),
        "count": len(curves),
    }


BAND_FLOOR = 1e-3  # test error (%) where the log-scaled curves cut a band reaching 0


def clipped_on_log_axes(all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]]) -> list[str]:
    """What the log-scaled test-error axes of curves.png and sensitivity.png cannot show, per optimizer and setting
    drawn: points at 0 % (not drawn), and sd bands or bars reaching 0 (cut at the axis)."""
    shown = all_groups if len(all_groups) <= MAX_CURVE_GROUPS else list(best.values())
    notes = []
    for g in shown:
        band = _band(g["ok"] or [m for m in g["members"] if m["curve"]])
        if band is None:
            continue
        name = f"`{g['label']}`" + (f" ({setting_text(g['settings'])})" if g["settings"] else "")
        zero = int((band["mean"] <= 0).sum())
        cut = int((band["mean"] - band["sd"] < BAND_FLOOR).sum()) - zero
        parts = [f"{zero} curve point(s) at 0 % not drawn"] * bool(zero)
        parts += [f"its sd band cut at {BAND_FLOOR:g} % at {cut} point(s)"] * bool(cut)
        if g["test_mean"] is not None and g["test_sd"] and g["test_mean"] - g["test_sd"] <= 0:
            parts.append("its final sd bar reaches 0 and is cut")
        if parts:
            notes.append(f"{name}: {', '.join(parts)}")
    return notes


def plot_curves(all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]], path: Path) -> tuple[Path, bool]:
    """Test error (mean ± sd over seeds) against effective epochs and seconds; (path, whether only the best shown)."""
    shown = all_groups if len(all_groups) <= MAX_CURVE_GROUPS else list(best.values())
    only_best = len(shown) < len(all_groups)
    rows = math.ceil(len(shown) / 3)
    height = 4.2 + 0.25 * rows
    fig = Figure(figsize=(13, height))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=(0.75 + 0.25 * rows) / height, top=1 - 0.45 / height, wspace=0.18)
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
        name = g["label"] + (f" ({setting_text(g['settings'])})" if g["settings"] else "") + f" [n={band['count']}]"
        low = np.maximum(band["mean"] - band["sd"], BAND_FLOOR)
        for ax, x in zip(axes, (band["effective_epochs"], band["seconds"]), strict=True):
            ax.plot(
                x,
                band["mean"],
                color=colors[g["label"]],
                linestyle=styles[k % 4],
                linewidth=1.4,
                marker="o",
                markersize=2.5,
                label=name,
            )
            ax.fill_between(x, low, band["mean"] + band["sd"], color=colors[g["label"]], alpha=0.18, linewidth=0)
    for ax, xlabel in zip(
        axes,
        (
            "effective epochs (examples forward-backwarded / training-set size)",
            "training wall-clock seconds (mean over seeds)",
        ),
        strict=True,
    ):
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


def plot_sensitivity(
    results: dict[str, Any], all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]], path: Path
) -> Path | None:
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
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=(1.6 + 0.1) / height, top=1 - 0.6 / height, wspace=0.25, hspace=0.45
    )
    panels = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    labels = list(dict.fromkeys(g["label"] for g in all_groups))
    colors = _colors(labels)
    for ax, axis in zip(panels, axes_info, strict=False):
        key, values = axis["key"], axis["values"]
        numeric = _numeric(values)
        xs = [float(v) for v in values] if numeric else list(range(len(values)))
        logx = numeric and min(xs) > 0 and max(xs) / min(xs) >= 10
        texts = [value_text(v) for v in values]
        for label in labels:
            mine = [g for g in all_groups if g["label"] == label]
            uses = any(dict(g["settings"]).get(key) is not None for g in mine)
            b = best.get(label)
            if not uses:
                if b is not None and b["test_mean"] is not None:
                    sd = b["test_sd"] or 0.0
                    ax.axhline(
                        100 * b["test_mean"],
                        color=colors[label],
                        linewidth=1.0,
                        linestyle=(0, (6, 3)),
                        label=f"{label} (not reached by the field)",
                    )
                    ax.axhspan(
                        100 * (b["test_mean"] - sd),
                        100 * (b["test_mean"] + sd),
                        color=colors[label],
                        alpha=0.1,
                        linewidth=0,
                    )
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
                ax.errorbar(
                    px,
                    py,
                    yerr=pe,
                    color=colors[label],
                    marker="o",
                    markersize=4,
                    capsize=3,
                    linewidth=1.4,
                    label=label + (" (others at best)" if others else ""),
                )
            if mx:
                ax.plot(
                    mx,
                    my,
                    color=colors[label],
                    linestyle="--",
                    linewidth=1.0,
                    alpha=0.7,
                    label=f"{label} (mean over the other fields)",
                )
            for x in fails:
                ax.plot(
                    [x],
                    [1.0],
                    transform=ax.get_xaxis_transform(),
                    marker="x",
                    color=colors[label],
                    markersize=9,
                    clip_on=False,
                )
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
