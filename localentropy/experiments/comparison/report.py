"""A run directory's report: ``report.md`` with one table per (point, gamma, temperature) and PNG figures.

:func:`render_report` draws it from typed results held in memory (:class:`~localentropy.experiments.comparison
.results.Results`, the verdicts included: the run computed them once, the report reads them) and each run's
draws.nc; ``write_report([run_dir], out_dir)`` rebuilds one run's report from disk; several run directories are
merged into one report (an estimator name found in more than one run is labelled ``<run name>/<estimator>``).
The words are the Jinja2 templates of ``comparison/templates/`` (``report.md.j2`` and its parts), rendered from
the data this module computes (names, numbers, table cells, figure files), so that a sentence appears only with
the datum it states. Figures are drawn by :mod:`localentropy.experiments.core.plots`; every file is written
atomically.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from matplotlib import colormaps
from matplotlib.colors import to_hex

from localentropy.diagnostics.compare import METHOD, verdict_text
from localentropy.experiments.comparison.chain_plots import chain_figures, record_ids
from localentropy.experiments.comparison.formatting import (
    DASH,
    TEMPLATES,
    Row,
    estimator_cell,
    figure_name,
    fmt,
    fmt_count,
    quoted,
    render,
)
from localentropy.experiments.comparison.loading import load_run
from localentropy.experiments.comparison.results import (
    Chains,
    Meta,
    Metrics,
    Results,
    Timing,
    Verdict,
)
from localentropy.experiments.comparison.verdicts import comparison_verdicts
from localentropy.experiments.core import plots
from localentropy.experiments.tuning.record import tuning_summary, tuning_table

__all__ = ["load_run", "record_ids", "render_report", "write_report"]

MAX_GROUPS_PLOTTED = 6
FOREST_INTERVAL = "mean and Bonferroni simultaneous 95 % t-interval over the paired replicates"


def estimand_of(results: Sequence[Results]) -> str:
    """The runs' estimand, whose words the report uses (runs of different estimands are refused, not mixed)."""
    estimands = {(r.config or {}).get("estimand", "gradient") for r in results}
    if len(estimands) > 1:
        raise ValueError(f"runs of different estimands ({', '.join(sorted(estimands))}) cannot share one report")
    return estimands.pop() if estimands else "gradient"


def group_title(estimand: str, group: tuple) -> str:
    """A (point, gamma, T)'s title in the estimand's words: its section's heading and its figures' titles."""
    return str(TEMPLATES.macros().group_title(estimand, *group))


class Run(NamedTuple):
    """One run of the report: its label (its name, numbered when two runs share one), directory and results."""

    label: str
    path: Path
    results: Results


def _metric(row: Row, name: str) -> float:
    value = row.record.metric(name)
    return float(value) if value is not None else math.nan


def _rows(runs: list[Run]) -> list[Row]:
    """Every record with its display label, run and group."""
    owners = defaultdict(set)
    for run in runs:
        for record in run.results.records:
            owners[record.key.estimator].add(run.label)
    rows = []
    for run in runs:
        for record in run.results.records:
            name = record.key.estimator
            label = f"{run.label}/{name}" if len(owners[name]) > 1 else name
            rows.append(Row(label, run.label, run.path, record.key.group, record))
    return rows


def _ordered(ok_rows: list[Row]) -> list[Row]:
    """Rows by estimator (lowest MSE at the largest budget first), then budget."""
    by_label = defaultdict(list)
    for row in ok_rows:
        by_label[row.label].append(row)
    top = max((row.record.key.budget for row in ok_rows), default=None)

    def rank(label: str) -> tuple:
        rows = sorted(by_label[label], key=lambda r: r.record.key.budget)
        at_top = [r for r in rows if r.record.key.budget == top]
        mse = _metric((at_top or rows)[-1], "mse")
        return (not at_top, math.isnan(mse), mse, label)

    out = []
    for label in sorted(by_label, key=rank):
        out.extend(sorted(by_label[label], key=lambda r: r.record.key.budget))
    return out


def _cells(row: Row) -> list[str]:
    """A table row's cells, in the order of ``group.md.j2``'s columns."""
    record = row.record
    m, chains, timing = record.metrics or Metrics(), record.chains or Chains(), record.timing or Timing()
    return [
        estimator_cell(row.label, record),
        fmt_count(record.key.budget),
        fmt_count(m.grad_evals),
        fmt(m.mse) + (f" ± {fmt(m.mse_mcse)}" if m.mse_mcse is not None else ""),
        DASH if m.truth_near_zero else fmt(m.relative_mse),
        f"{fmt(m.bias_norm)} ± {fmt(m.bias_norm_mcse)}",
        fmt(m.variance),
        fmt(m.cosine),
        fmt(m.efficiency_ratio),
        fmt(chains.min_ess_bulk),
        fmt(chains.max_rhat),
        fmt(record.ksd),
        fmt(timing.seconds_per_replicate),
    ]


def _group_verdicts(ok_rows: list[Row], runs: list[Run]) -> list[Verdict]:
    """The verdicts of the rows' (point, gamma, T): the ones their run computed, read from its results; rows of
    several merged runs are compared here, across the runs (a comparison no run holds)."""
    owners = {row.run for row in ok_rows}
    if len(owners) == 1:
        results = next(run.results for run in runs if run.label in owners)
        return [v for v in results.verdicts if v.group == ok_rows[0].group]
    labels = {id(row.record): row.label for row in ok_rows}
    return comparison_verdicts([row.record for row in ok_rows], label=lambda record: labels[id(record)])


def _verdicts(ok_rows: list[Row], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """One verdict per budget with two or more estimators: its text (``verdict_text``, shared with the findings
    and the suite's report) and the estimators it did not compare; a verdict of a run written before the
    per-replicate errors were kept has no text, only the estimator with the lowest MSE."""
    out = []
    for v in sorted(verdicts, key=lambda v: v.budget):
        if not v.best and not v.divergence:
            lowest = min(ok_rows, key=lambda r: _metric(r, "mse") if r.record.key.budget == v.budget else math.inf)
            out.append({"budget": v.budget, "text": None, "lowest": lowest.label, "excluded": []})
        else:
            text = verdict_text(v.model_dump(), fmt=fmt, name=quoted)
            out.append({"budget": v.budget, "text": text, "lowest": v.lowest, "excluded": v.excluded})
    return out


def _near_zero(ok_rows: list[Row]) -> list[str]:
    """The norms of the truths near zero, formatted and sorted."""
    return sorted({fmt(r.record.metric("truth_norm")) for r in ok_rows if r.record.metric("truth_near_zero")})


def _failed(rows: list[Row]) -> list[dict[str, Any]]:
    return [
        {"label": row.label, "budget": row.record.key.budget, "status": row.record.status, "error": row.record.error}
        for row in rows
    ]


def _series(ok_rows: list[Row]) -> dict[str, list[tuple[float, ...]]]:
    out = defaultdict(list)
    for row in sorted(ok_rows, key=lambda r: _metric(r, "grad_evals")):
        names = ("grad_evals", "mse", "bias_norm", "bias_norm_mcse", "variance")
        out[row.label].append(tuple(_metric(row, n) for n in names))
    return dict(out)


def _clipped(ok_rows: list[Row]) -> list[dict[str, Any]]:
    """The points the log-scaled panels of the errors figure cannot show: a bias corrected to 0 (variance / R
    subtracted, clipped at 0) has no place on the bias² axis, nor a variance or MSE of 0 on theirs."""
    lost = defaultdict(list)
    for row in ok_rows:
        for name, panel in (("bias_norm", "bias²"), ("mse", "MSE"), ("variance", "variance")):
            value = _metric(row, name)
            if not math.isnan(value) and value <= 0:
                lost[(panel, row.label)].append(row.record.key.budget)
    return [{"panel": panel, "label": label, "budgets": budgets} for (panel, label), budgets in lost.items()]


def _difference_forest(rows: list[Row], runs: list[Run], out_dir: Path, title_of: Callable[[tuple], str]) -> bool:
    """The forest plot of every verdict's paired differences (each stable estimator's mean squared error minus
    the lowest's at the same point and budget, with the Bonferroni simultaneous 95 % t-interval over the
    replicates), one panel per (point, gamma, T, budget); False, and nothing drawn, when no verdict has one."""
    drawn = []
    for group in sorted({row.group for row in rows}):
        ok_rows = [row for row in rows if row.group == group and row.record.ok]
        verdicts = sorted(_group_verdicts(ok_rows, runs), key=lambda v: v.budget) if ok_rows else []
        drawn += [
            {
                "label": f"{c.name} minus {v.lowest}",
                "unit": f"MSE, {title_of(group)}, budget {fmt_count(v.budget)}",
                "estimate": {"mean": c.difference, "ci95": c.half_width},
            }
            for v in verdicts
            for c in v.comparisons
            if c.difference is not None and c.half_width is not None
        ]
    title = "paired differences to the lowest MSE"
    return plots.plot_forest(drawn, out_dir / "forest.png", title, interval=FOREST_INTERVAL) is not None


def _estimators(results: Results) -> list[dict[str, Any]]:
    """Each configured estimator with the values it ran with: the tuned ones (the search's choice, in place of
    the configured ones, which the resolved config still shows) marked."""
    tuning = results.tuning if isinstance(results.tuning, dict) else {}
    chosen = {k: r["chosen"] for k, r in (tuning.get("estimators") or {}).items() if r.get("chosen")}
    out = []
    for e in (results.config or {}).get("estimators", []):
        tuned = chosen.get(e["label"], {})
        values = {**(e.get("hyperparameters") or {}), **tuned}
        out.append(
            {
                "label": e["label"],
                "kind": e.get("kind"),
                "sampler": e.get("sampler") or None,
                "values": [{"name": k, "value": v, "tuned": k in tuned} for k, v in values.items()],
                "budgets": list(e.get("budgets", [])),
            }
        )
    return out


def _ran_with(results: Results) -> list[str]:
    """The lines of ``_estimators``, as the report writes them under "What ran"."""
    return [str(TEMPLATES.macros().ran_with(e)) for e in _estimators(results)]


def _run_view(run: Run) -> dict[str, Any]:
    """What the report says of one run: where and how it ran, its estimators, tuning and resolved config."""
    results = run.results
    meta = results.meta or Meta()
    tuning = results.tuning
    return {
        "label": run.label,
        "path": str(run.path),
        "seed": meta.seed,
        "device": meta.device,
        "git_commit": meta.git_commit,
        "versions": list(meta.versions.items()),
        "records": len(results.records),
        "estimators": _estimators(results),
        "tuning": tuning if isinstance(tuning, dict) and isinstance(tuning.get("estimators"), dict) else None,
        "config": None if results.config is None else json.dumps(results.config, indent=2, sort_keys=True, default=str),
    }


def write_report(run_dirs: Sequence[Path | str], out_dir: Path | str) -> Path:
    """Write report.md and its PNG figures for one run directory, or several merged, into ``out_dir``: the runs'
    results.json read back (checked by :func:`load_run`), then :func:`render_report`."""
    if not run_dirs:
        raise ValueError("write_report needs at least one run directory")
    return render_report([(run_path(run_dir), load_run(run_dir)) for run_dir in run_dirs], out_dir)


def run_path(run_dir: Path | str) -> Path:
    """The run directory of a directory or of its results.json."""
    path = Path(run_dir)
    return path.parent if path.name == "results.json" and path.is_file() else path


def render_report(results: Sequence[tuple[Path, Results]], out_dir: Path | str) -> Path:
    """report.md and its figures, a pure function of the results held in memory (verdicts included) and the draws
    (each run's draws.nc, in its run directory): what a run writes as it finishes, and what ``localentropy report``
    rebuilds from disk."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    seen: dict[str, int] = defaultdict(int)
    for run_dir, data in results:
        seen[data.name] += 1
        runs.append(Run(data.name if seen[data.name] == 1 else f"{data.name}#{seen[data.name]}", run_dir, data))
    rows = _rows(runs)
    groups = sorted({row.group for row in rows})
    labels = sorted({row.label for row in rows})
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    colors = {label: to_hex(cmap(i % cmap.N)) for i, label in enumerate(labels)}

    estimand = estimand_of([run.results for run in runs])

    def title_of(group: tuple) -> str:
        return group_title(estimand, group)

    plotted = groups[:MAX_GROUPS_PLOTTED]
    group_views = []
    efficiency_panels = []
    for group in groups:
        title = title_of(group)
        in_group = [row for row in rows if row.group == group]
        ok_rows = _ordered([row for row in in_group if row.record.ok])
        figure = None
        if group in plotted and ok_rows:
            figure = figure_name(f"errors_p{group[0]}_g{group[1]}_T{group[2]}")
            plots.plot_errors(_series(ok_rows), f"MSE, bias² and variance: {title}", out_dir / figure, colors)
            eff = defaultdict(list)
            for row in sorted(ok_rows, key=lambda r: _metric(r, "grad_evals")):
                if not math.isnan(_metric(row, "efficiency_ratio")):  # smoothing has none: named apart
                    eff[row.label].append((_metric(row, "grad_evals"), _metric(row, "efficiency_ratio")))
            if any(not math.isnan(e) for points in eff.values() for _, e in points):
                efficiency_panels.append((title, dict(eff)))
        group_views.append(
            {
                "title": title,
                "rows": [_cells(row) for row in ok_rows],
                "near_zero": _near_zero(ok_rows),
                "verdicts": _verdicts(ok_rows, _group_verdicts(ok_rows, runs)) if ok_rows else [],
                "clipped": _clipped(ok_rows),
                "failed": _failed([row for row in in_group if not row.record.ok]),
                "figure": figure,
            }
        )
    efficiency = None
    if efficiency_panels:  # a section with nothing in it is left out
        without = sorted(
            {row.label for row in rows if row.record.ok}
            - {label for _, series in efficiency_panels for label in series}
        )
        plots.plot_efficiency(efficiency_panels, out_dir / "efficiency.png", colors, without=without)
        efficiency = {"without": without}
    forest = {"interval": FOREST_INTERVAL} if _difference_forest(rows, runs, out_dir, title_of) else None
    chains = chain_figures(rows, out_dir, title_of)
    text = render(
        "report.md.j2",
        estimand=estimand,
        dash=DASH,
        method=METHOD,
        runs=[_run_view(run) for run in runs],
        groups=group_views,
        plotted=MAX_GROUPS_PLOTTED,
        efficiency=efficiency,
        forest=forest,
        chains=chains,
        tuning_summary=tuning_summary,  # shared with the sweeps' report
        tuning_table=tuning_table,
    )
    report = out_dir / "report.md"
    data = (text.rstrip() + "\n").encode("utf-8")
    plots.atomic_write(report, lambda handle: handle.write(data))
    return report
