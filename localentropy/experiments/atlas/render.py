"""The atlas as Markdown tables (one per target, then Entropy-SGD's regime) and one figure."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure

from localentropy.experiments.core.plots import save_figure


def _fraction(value: float) -> str:
    return str(Fraction(value).limit_denominator(1000))


def _pm(value: float | None, mcse: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return text if mcse is None else f"{text} ± {mcse:.{digits}f}"


def _diverged(row: dict[str, Any]) -> str:
    runs = row["runs"] + ([row["noisy"]] if "noisy" in row else [])
    total = sum(r.get("n_diverged") or 0 for r in runs)
    chains = sum(r.get("n_chains") or row["runs"][0]["n_chains"] for r in runs) if runs else 0
    return f"{total / chains:.3f}" if chains else "-"


def render_markdown(results: dict[str, Any], image: str | None = "atlas.png") -> str:
    fractions = results["config"]["fractions"]
    heads = " | ".join(f"cov. error, h = {_fraction(f)} h*" for f in fractions)
    lines = [
        f"Seed {results['seed']}, {results['config']['n_chains']} chains of {results['config']['n_steps']} kept steps "
        f"per cell (chains started from exact draws); {results['seconds'] / 60:.1f} minutes.",
        "",
    ]
    for target in results["config"]["targets"]:
        rows = [r for r in results["rows"] if r["target"] == target["name"]]
        if not rows:
            continue
        lines += [
            f"**{target['name']}** ({target['dim']}-D): {target['description']}.",
            "",
            f"| sampler | h* | grads/step | {heads} | mean error, h = {_fraction(fractions[1])} h* | "
            f"diverged | T_conf, h = {_fraction(fractions[-1])} h* | T_eff with noise (T + hV/2 = 1.25) |",
            "|---" * (7 + len(fractions)) + "|",
        ]
        for row in rows:
            runs = row["runs"]
            if not runs:
                lines.append(
                    f"| {row['sampler']} | {row['limit']:.3g} | {row['grads_per_step']} |"
                    + " - |" * (4 + len(fractions))
                )
                continue
            cov = " | ".join(_pm(r["cov_error"], r["cov_mcse"]) for r in runs)
            middle, last, noisy = runs[1], runs[-1], row["noisy"]
            lines.append(
                f"| {row['sampler']} | {row['limit']:.3g} | {row['grads_per_step']} | {cov} | "
                f"{_pm(middle['mean_error'], middle['mean_mcse'])} | {_diverged(row)} | "
                f"{_pm(last['temperature'], last['temperature_mcse'], 2)} | "
                f"{_pm(noisy['temperature'], noisy['temperature_mcse'], 2)} |"
            )
        lines.append("")
    if results.get("entropy_sgd"):
        heads = " | ".join(f"h = {_fraction(f)} h*" for f in fractions)
        lines += [
            "**Entropy-SGD's regime**: relative error of gamma (x - mu) (mu the mean of the L iterates of "
            f"chains restarted at x every outer step, {results['config']['esgd_outer_steps']} outer steps) "
            "against the exact local-entropy gradient, on the 20-D Gaussian coupled with gamma = "
            f"{results['config']['esgd_gamma']:g}; h* is the limit on the coupled target.",
            "",
            f"| sampler | L | h* | {heads} |",
            "|---" * (3 + len(fractions)) + "|",
        ]
        for row in results["entropy_sgd"]:
            cells = " | ".join(_pm(r["grad_error"], r["grad_mcse"]) for r in row["runs"]) or "-"
            lines.append(f"| {row['sampler']} | {row['inner_steps']} | {row['limit']:.3g} | {cells} |")
        lines.append("")
    if results.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{s['sampler']} ({s['reason']})" for s in results["skipped"]), ""]
    if image:
        lines += [f"![covariance error against the step size as a fraction of each sampler's limit]({image})", ""]
    return "\n".join(lines)


def render_plot(results: dict[str, Any], path: Path) -> Path:
    """One panel per target: covariance error (± MCSE) against h / h*, log-log; then Entropy-SGD's regime."""
    targets = [
        t["name"] for t in results["config"]["targets"] if any(r["target"] == t["name"] for r in results["rows"])
    ]
    panels = len(targets) + (1 if results.get("entropy_sgd") else 0)
    fig = Figure(figsize=(4.2 * panels, 4.0), layout="constrained")
    axes = fig.subplots(1, max(panels, 1), squeeze=False)[0]
    for ax, name in zip(axes, targets, strict=False):
        for row in (r for r in results["rows"] if r["target"] == name):
            points = [(r["fraction"], r["cov_error"], r["cov_mcse"]) for r in row["runs"] if r["cov_error"]]
            if points:
                xs, ys, es = zip(*points, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=row["sampler"])
        ax.set(
            xscale="log",
            yscale="log",
            title=name,
            xlabel="h / h* (own stability limit)",
            ylabel="covariance error (whitened, rel. Frobenius)",
        )
    if results.get("entropy_sgd"):
        ax = axes[-1]
        short = min(r["inner_steps"] for r in results["entropy_sgd"])
        for row in (r for r in results["entropy_sgd"] if r["inner_steps"] == short):
            points = [(r["fraction"], r["grad_error"], r["grad_mcse"]) for r in row["runs"] if r["grad_error"]]
            if points:
                xs, ys, es = zip(*points, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=row["sampler"])
        ax.set(
            xscale="log",
            yscale="log",
            title=f"Entropy-SGD regime, L = {short}",
            xlabel="h / h*",
            ylabel="local-entropy gradient error",
        )
    fractions = results["config"]["fractions"]
    for ax in axes:  # label the three fractions, not log-axis minor ticks
        ax.set_xticks(fractions, [_fraction(f) for f in fractions], minor=False)
        ax.set_xticks([], minor=True)
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)
