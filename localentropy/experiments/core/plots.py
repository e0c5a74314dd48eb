"""The report's figures, drawn with plain matplotlib on the Agg backend and written atomically.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state): nothing stays open between reports.
Each plotting function takes plain numbers, so it can be tested without a run directory.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogFormatter
from scipy.stats import rankdata

from localentropy.experiments.core.files import atomic_write

MAX_CHAINS_SHOWN = 8
EXACT_LINE = {"color": "black", "linestyle": "--", "linewidth": 1.0}

# One estimator's series: (grad evals, mse, bias norm, bias-norm MCSE, variance) per budget, sorted.
ErrorPoint = tuple[float, float, float, float, float]


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically; the bounding box grows to hold every artist (a legend is never cut)."""
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight"))


def _positive(xs: Sequence[float], ys: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points drawable on log-log axes: both coordinates finite and > 0."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return x[keep], y[keep]


def _log_axes(ax, **labels) -> None:
    ax.set(xscale="log", yscale="log", **labels)
    for axis in (ax.xaxis, ax.yaxis):  # plain "200", "1e-05" labels, some minor ones when under two decades
        axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    ax.grid(True, which="both", alpha=0.3)


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no positive {what} to draw", ha="center", va="center", transform=ax.transAxes)


def plot_errors(series: Mapping[str, Sequence[ErrorPoint]], title: str, path: Path, colors: Mapping[str, str]) -> Path:
    """MSE, bias^2 (with 1-MCSE bars) and variance against gradient evaluations, log-log, one line per estimator."""
    legend_rows = math.ceil(max(len(series), 1) / 6)
    height = 4.4 + 0.25 * legend_rows
    fig = Figure(figsize=(15, height))  # a fixed layout: constrained layout doubles the drawing time
    fig.subplots_adjust(left=0.05, right=0.98, bottom=(0.75 + 0.25 * legend_rows) / height, top=1 - 0.6 / height)
    axes = fig.subplots(1, 3)
    names = ("MSE", "bias² (±1 MCSE)", "variance")
    handles, hollow = {}, False
    for ax, name in zip(axes, names, strict=True):
        _log_axes(ax, xlabel="gradient evaluations per replicate", title=name)
    for label, points in series.items():
        ge, mse, bias, mcse, var = (np.asarray(c, float) for c in zip(*points, strict=True))
        style = {"color": colors[label], "marker": "o", "markersize": 4, "linewidth": 1.3}
        x, y = _positive(ge, mse)
        if x.size:
            handles[label] = axes[0].plot(x, y, label=label, **style)[0]
        x, y = _positive(ge, var)
        if x.size:
            handles[label] = axes[2].plot(x, y, label=label, **style)[0]
        hollow = _plot_bias(axes[1], ge, bias, mcse, style, label, handles) or hollow
    for ax, name in zip(axes, ("MSE", "bias²", "variance"), strict=True):
        if not ax.lines:
            _no_data(ax, name)
    if hollow:
        axes[1].text(0.02, 0.02, "hollow: bias within 1 MCSE of 0", transform=axes[1].transAxes, fontsize=8, alpha=0.7)
    fig.suptitle(title)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=9)
    return save_figure(fig, path)


def _plot_bias(ax, ge, bias, mcse, style, label, handles) -> bool:
    """Bias^2 with bars from (bias -+ MCSE)^2; True when some lower bar reaches 0 (drawn as a hollow marker)."""
    bias_sq = bias**2
    x, y = _positive(ge, bias_sq)
    if not x.size:
        return False
    handles[label] = ax.plot(x, y, label=label, **style)[0]
    keep = np.isfinite(ge) & np.isfinite(bias_sq) & (ge > 0) & (bias_sq > 0) & np.isfinite(mcse)
    if not keep.any():
        return False
    b, m = bias[keep], mcse[keep]
    low = np.clip(b - m, 0.0, None) ** 2
    high = (b + m) ** 2
    yk = bias_sq[keep]
    # A lower bar reaching 0 cannot be drawn on a log axis: those points get only the upper bar and a hollow marker.
    lower = np.where(low > 0, yk - low, 0.0)
    ax.errorbar(ge[keep], yk, yerr=[lower, high - yk], fmt="none", ecolor=style["color"], capsize=3, alpha=0.7)
    hollow = low <= 0
    if hollow.any():
        ax.plot(ge[keep][hollow], yk[hollow], "o", markersize=7, markerfacecolor="white", color=style["color"])
    return bool(hollow.any())


def plot_efficiency(
    panels: Sequence[tuple[str, Mapping[str, Sequence[tuple[float, float]]]]],
    path: Path,
    colors: Mapping[str, str],
    without: Sequence[str] = (),
) -> Path:
    """Efficiency ratio against gradient evaluations, one panel per (point, gamma, temperature), log-log.

    The legend names every estimator of the panels, those with no positive ratio to draw included (marked), and
    every label in ``without`` (estimators with no efficiency ratio at all, e.g. smoothing).
    """
    n = max(len(panels), 1)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    names = list(dict.fromkeys([k for _, s in panels for k in s] + list(without)))
    legend_rows = math.ceil((len(names) + 1) / 6)
    height = 4.2 * nrows + 0.8 + 0.25 * legend_rows
    fig = Figure(figsize=(5.4 * ncols, height))
    bottom = (0.75 + 0.25 * legend_rows) / height
    fig.subplots_adjust(left=0.85 / (5.4 * ncols), right=0.98, bottom=bottom, top=1 - 0.85 / height, hspace=0.4)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    handles = {}
    for ax, (title, series) in zip(axes, panels, strict=False):
        _log_axes(ax, title=title, xlabel="gradient evaluations per replicate", ylabel="efficiency ratio")
        for label, points in series.items():
            x, y = _positive(*zip(*points, strict=True)) if points else (np.empty(0), np.empty(0))
            if x.size:
                handles[label] = ax.plot(x, y, "o-", color=colors[label], markersize=4, label=label)[0]
        if not ax.lines:
            _no_data(ax, "efficiency ratios")
        handles["exact i.i.d. draws (= 1)"] = ax.axhline(1.0, **EXACT_LINE)
    for ax in axes[len(panels) :]:
        ax.set_axis_off()
    for name in names:  # a legend entry for every estimator, drawn or not
        if name not in handles:
            suffix = " (no efficiency ratio)" if name in without else " (no positive ratio to draw)"
            handles[name + suffix] = Line2D(
                [], [], color=colors.get(name, "grey"), marker="o", linestyle="none", markerfacecolor="white"
            )
    exact = handles.pop("exact i.i.d. draws (= 1)", None)
    if exact is not None:
        handles["exact i.i.d. draws (= 1)"] = exact
    fig.suptitle("Efficiency ratio = MSE / MSE of as many exact i.i.d. Gibbs draws (below the dashed line: better)")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=9)
    return save_figure(fig, path)


def rank_counts(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Histogram counts (chains, bins) of the ranks of the pooled draws, per chain (Vehtari et al. 2021)."""
    n_chains, n_draws = values.shape
    ranks = rankdata(values.ravel(), method="average").reshape(n_chains, n_draws)
    edges = np.linspace(0.5, n_chains * n_draws + 0.5, bins + 1)
    return np.stack([np.histogram(r, bins=edges)[0] for r in ranks]), edges


def plot_chains(draws: np.ndarray, coords: Sequence[tuple[int, str]], title: str, path: Path) -> Path:
    """Trace and rank plots of the chosen coordinates of draws shaped (chains, draws, coordinates)."""
    n_chains, n_draws = draws.shape[:2]
    shown = min(n_chains, MAX_CHAINS_SHOWN)
    bins = int(np.clip(n_draws // 10, 5, 20))
    fig = Figure(figsize=(13, 3.4 * len(coords) + 0.6), layout="constrained")
    axes = fig.subplots(len(coords), 2, squeeze=False, width_ratios=[2.2, 1])
    cmap = matplotlib.colormaps["tab10"]
    for (trace_ax, rank_ax), (coord, reason) in zip(axes, coords, strict=True):
        values = draws[:, :, coord]
        for c in range(shown):
            trace_ax.plot(values[c], color=cmap(c % 10), linewidth=0.6, alpha=0.75)
        trace_ax.set(title=f"trace, coordinate {coord} ({reason})", xlabel="draw", ylabel=f"x[{coord}]")
        counts, edges = rank_counts(values, bins)
        expected = n_draws / bins
        scale = 0.4  # a uniform histogram is drawn 0.4 of a row high
        width = edges[1] - edges[0]
        for c in range(shown):
            height = np.minimum(counts[c] / expected * scale, 0.95)
            rank_ax.bar(edges[:-1], height, width=width, bottom=c, align="edge", color=cmap(c % 10), alpha=0.8)
            rank_ax.axhline(c + scale, **EXACT_LINE)
        rank_ax.set(title=f"rank plot, coordinate {coord}", xlabel="rank of the pooled draws", ylabel="chain")
        rank_ax.set_yticks(np.arange(shown) + scale / 2, [str(c) for c in range(shown)])
        rank_ax.set_ylim(0, shown)
    note = f" (first {shown} of {n_chains} chains shown; ranks pooled over all)" if shown < n_chains else ""
    fig.suptitle(f"{title}{note}; dashed lines in rank plots: uniform ranks (well-mixed chains)")
    return save_figure(fig, path)


# A forest plot's series: (name, colour, marker), drawn top to bottom within each row.
ForestSeries = tuple[tuple[str, str, str], ...]


def plot_forest(
    rows: Sequence[Mapping[str, object]],
    path: Path,
    title: str,
    series: ForestSeries = (("estimate", "black", "D"),),
    interval: str = "mean and 95 % CI over the units",
) -> Path | None:
    """A forest plot: per row (``label``, ``unit``, and per series name a mapping with ``mean`` and ``ci95``, the
    interval's half-width) a point and its interval for each series, the zero line, one panel per unit (points and
    bits do not share an axis). None when no row has an estimate."""
    names = [name for name, _, _ in series]
    rows = [r for r in rows if any(r.get(n) for n in names)]
    if not rows:
        return None
    units = list(dict.fromkeys(str(r["unit"]) for r in rows))
    heights = [sum(str(r["unit"]) == u for r in rows) for u in units]
    fig = Figure(figsize=(12, 1.4 + 0.5 * sum(heights) + 0.8 * len(units)))
    axes = fig.subplots(len(units), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)
    offsets = np.linspace(0.22, -0.22, len(series)) if len(series) > 1 else np.zeros(1)
    for ax, unit in zip(axes[:, 0], units, strict=True):
        mine = [r for r in rows if str(r["unit"]) == unit]
        for i, row in enumerate(mine):
            y = len(mine) - 1 - i
            for offset, (name, colour, marker) in zip(offsets, series, strict=True):
                c = row.get(name)
                if c:
                    ax.errorbar(
                        c["mean"], y + offset, xerr=c["ci95"], fmt=marker, color=colour, ms=4, capsize=2, label=name
                    )
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(mine)), [textwrap.fill(str(r["label"]), 50) for r in reversed(mine)], fontsize=7)
        ax.set_xlabel(f"difference ({unit or 'the measure itself'}), {interval}")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if len(series) > 1:
        fig.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right", ncols=len(series))
    fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
