"""A run directory's report: ``report.md`` with one table per (point, gamma, temperature) and PNG figures.

:func:`render_report` draws it from typed results held in memory (:class:`~localentropy.experiments.comparison
.results.Results`, the verdicts included: the run computed them once, the report reads them) and each run's
draws.nc; ``write_report([run_dir], out_dir)`` rebuilds one run's report from disk; several run directories are
merged into one report (an estimator name found in more than one run is labelled ``<run name>/<estimator>``).
Figures are drawn by :mod:`localentropy.experiments.core.plots`; every file is written atomically.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from matplotlib import colormaps
from matplotlib.colors import to_hex

from localentropy.diagnostics.compare import METHOD, verdict_text
from localentropy.experiments.comparison.chain_plots import chain_figures, record_ids
from localentropy.experiments.comparison.formatting import (
    DASH,
    Row,
    estimator_cell,
    figure_name,
    fmt,
    fmt_count,
    quoted,
)
from localentropy.experiments.comparison.formatting import md as _md
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
COLUMNS = (
    "estimator",
    "budget",
    "grad evals",
    "MSE ± MCSE",
    "relative MSE",
    "bias norm ± MCSE",
    "variance",
    "cosine",
    "efficiency ratio",
    "min ESS (bulk)",
    "max R-hat",
    "KSD",
    "s / replicate",
)
HOW_TO_READ = """\
Each table row is one estimator at one budget, measured over independent replicates against the exact gradient at
that (point, gamma, T). **MSE** is the mean squared error of one replicate's estimate (= bias² + variance), ± its
Monte Carlo standard error over the replicates; **relative MSE** divides it by ‖truth‖², and is not shown ({dash})
where the truth is near zero (‖truth‖² below the noise of one gradient evaluation): there read the MSE and the
efficiency ratio. A label that is not the name of what the estimator runs has its sampler beside it. **Bias norm**
is corrected for replicate noise (variance / R subtracted, clipped at 0), given ± its Monte Carlo standard error: a
bias within about 2 MCSE of 0 is not distinguishable from zero. **Cosine** is between the mean estimate and the
truth (1: right direction). **Grad evals** are gradient evaluations per replicate, the cost a budget buys.
**Efficiency ratio** is the MSE divided by the MSE of as many exact i.i.d. draws from the Gibbs measure: 1 matches
exact sampling, above 1 is worse, below 1 is possible with negatively correlated draws. **Min ESS (bulk)** and
**max R-hat** are ArviZ diagnostics of the inner chains of the first replicate (R-hat above 1.01: chains not
mixed); **KSD** is the kernel Stein discrepancy of those draws to the Gibbs measure (0: exact). {dash} means not
applicable (smoothing estimators have no chains). Rows are grouped by estimator, the estimator with the lowest MSE
at the largest budget first; numbers have 3 significant digits.

**Verdicts** compare the estimators at each budget on the squared error of each replicate, paired replicate by
replicate: replicate r of every estimator at a point uses the same random numbers, so identical estimators give
identical numbers. Method: {method}, at 95 %. **Tied** lists the estimators not distinguishable from the lowest,
with the largest simultaneous half-width among them: smaller differences could not have been detected."""


HOW_TO_READ_LLC = """\
Each table row is one sampler at one budget, measured over independent replicates of the LLC estimate
nbeta (E_p[L] - L(w*)) at w*, where p is proportional to exp(-nbeta L(w) - localization/2 |w - w*|^2) (Entropy-SGD's
inner measure at x = w*: nbeta = 1/T, localization = gamma/T). The truth is exact at this nbeta and localization (by
quadrature) for the 2-D potentials, and Aoyagi's asymptotic value for a deep linear network, which a finite nbeta
(below it) and a sampler's step (above it, for SGLD) both move the estimate away from. **MSE** is the mean squared
error of one replicate's estimate (= bias² + variance), ± its Monte Carlo standard error over the replicates;
**relative MSE** divides it by the LLC². A label that is not the name of what the estimator runs has its sampler
beside it. **Bias norm** is |mean estimate - LLC| corrected for replicate noise (variance / R subtracted, clipped at
0), ± its Monte Carlo standard error. **Cosine** is the sign of the mean estimate against the LLC's (1: same sign).
**Grad evals** are gradient evaluations per replicate, the cost a budget buys. **Min ESS (bulk)** and **max R-hat**
are ArviZ diagnostics of the first replicate's chains (R-hat above 1.01: chains not mixed); {dash} means not
applicable. Rows are grouped by sampler, the one with the lowest MSE at the largest budget first; numbers have
3 significant digits.
"""


class Wording(NamedTuple):
    """How a report names what its runs estimate: its title, how to read its tables and each group's title."""

    title: str
    how_to_read: str
    group_title: Callable[[tuple], str]


def _group_title(group: tuple) -> str:
    point, gamma, temperature = group
    return f"point {point}, gamma = {fmt(gamma)}, T = {fmt(temperature)}"


def _llc_group_title(group: tuple) -> str:
    point, gamma, temperature = group
    return f"point {point}, nbeta = {fmt(1 / temperature)}, localization = {fmt(gamma / temperature)}"


WORDINGS = {
    "gradient": Wording("Local-entropy gradient report", HOW_TO_READ, _group_title),
    "llc": Wording("LLC estimator report", HOW_TO_READ_LLC, _llc_group_title),
}


def wording(results: Sequence[Results]) -> Wording:
    """The runs' wording: by their estimand (a run of another config's estimand is refused, not mixed)."""
    estimands = {(r.config or {}).get("estimand", "gradient") for r in results}
    if len(estimands) > 1:
        raise ValueError(f"runs of different estimands ({', '.join(sorted(estimands))}) cannot share one report")
    return WORDINGS[estimands.pop() if estimands else "gradient"]


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


def _table(rows: list[Row]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        record = row.record
        m, chains, timing = record.metrics or Metrics(), record.chains or Chains(), record.timing or Timing()
        mse = fmt(m.mse) + (f" ± {fmt(m.mse_mcse)}" if m.mse_mcse is not None else "")
        cells = [
            estimator_cell(row.label, record),
            fmt_count(record.key.budget),
            fmt_count(m.grad_evals),
            mse,
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
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _group_verdicts(ok_rows: list[Row], runs: list[Run]) -> list[Verdict]:
    """The verdicts of the rows' (point, gamma, T): the ones their run computed, read from its results; rows of
    several merged runs are compared here, across the runs (a comparison no run holds)."""
    owners = {row.run for row in ok_rows}
    if len(owners) == 1:
        results = next(run.results for run in runs if run.label in owners)
        return [v for v in results.verdicts if v.group == ok_rows[0].group]
    labels = {id(row.record): row.label for row in ok_rows}
    return comparison_verdicts([row.record for row in ok_rows], label=lambda record: labels[id(record)])


def _verdict_lines(ok_rows: list[Row], verdicts: list[Verdict]) -> list[str]:
    """One verdict per budget with two or more estimators, in words."""
    lines = []
    for v in sorted(verdicts, key=lambda v: v.budget):
        if not v.best and not v.divergence:
            lowest = min(ok_rows, key=lambda r: _metric(r, "mse") if r.record.key.budget == v.budget else math.inf)
            text = (
                f"no per-replicate errors in this run (written before they were kept), so no verdict; lowest "
                f"MSE {quoted(lowest.label)}"
            )
        else:
            text = verdict_text(v.model_dump(), fmt=fmt, name=quoted)
            if v.excluded:  # a record that did not finish (or has other replicates) is named, not silently left out
                text += (
                    f"; not compared (no squared errors on the common replicates): {', '.join(map(quoted, v.excluded))}"
                )
        lines.append(f"- budget {fmt_count(v.budget)}: {text}")
    if not lines:
        return []
    return ["**Verdicts** (lowest MSE at each budget; paired over replicates, 95 %):", "", *lines]


def _near_zero_note(ok_rows: list[Row]) -> list[str]:
    norms = sorted({fmt(r.record.metric("truth_norm")) for r in ok_rows if r.record.metric("truth_near_zero")})
    if not norms:
        return []
    return [
        f"The truth is near zero here (‖truth‖ = {', '.join(norms)}, below the noise of one gradient "
        "evaluation): no relative MSE is shown; compare the MSE and the efficiency ratios.",
        "",
    ]


def _not_ok(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        record = row.record
        status = record.status if record.status != "ok" else "ok, but no metrics"
        error = record.error or "no error message"
        lines.append(f"- `{_md(row.label)}`, budget {fmt_count(record.key.budget)}: **{_md(status)}**: {_md(error)}")
    return lines


def _meta(run: Run) -> list[str]:
    results = run.results
    meta = results.meta or Meta()
    lines = [
        f"### Run `{_md(run.label)}`",
        "",
        f"- directory: `{run.path}`",
        f"- seed: {DASH if meta.seed is None else meta.seed}; device: {meta.device or DASH}; git commit: "
        f"{meta.git_commit or 'unknown'}",
        "- versions: " + (", ".join(f"{k} {v or '?'}" for k, v in meta.versions.items()) or "unknown"),
        f"- records: {len(results.records)}",
        *(["- estimators as they ran:", *(f"  {line}" for line in _ran_with(results))] if _ran_with(results) else []),
    ]
    if results.config is not None:
        config = json.dumps(results.config, indent=2, sort_keys=True, default=str)
        lines += ["", "<details><summary>resolved config</summary>", "", "```json", config, "```", "</details>"]
    return [*lines, ""]


def _tuning(run: Run) -> list[str]:
    """The run's tuning section: the search, the equal budget, where the trials ran, and a row per estimator."""
    tuning = run.results.tuning
    if not isinstance(tuning, dict) or not isinstance(tuning.get("estimators"), dict):
        return []
    units = (
        f"{tuning['replicates']} replicate estimates of {tuning['budget']:,} gradient evaluations each "
        f"(gamma {tuning['gamma']:g}, T {tuning['temperature']:g}, {tuning['chains']} chains)"
    )
    return [
        f"## Tuning (run `{_md(run.label)}`)",
        "",
        tuning_summary(tuning, units) + " "
        f"Objective: the mean squared error against the truth. Trials ran on {tuning['points']}, with replicate "
        f"seeds derived from config seed + {tuning['seed_offset']:,} (apart from the reported replicates'); both "
        "are in results.json under `tuning`.",
        "",
        *tuning_table(tuning["estimators"], "MSE reached"),
        "",
    ]


def _series(ok_rows: list[Row]) -> dict[str, list[tuple[float, ...]]]:
    out = defaultdict(list)
    for row in sorted(ok_rows, key=lambda r: _metric(r, "grad_evals")):
        names = ("grad_evals", "mse", "bias_norm", "bias_norm_mcse", "variance")
        out[row.label].append(tuple(_metric(row, n) for n in names))
    return dict(out)


def _clipped_note(ok_rows: list[Row]) -> list[str]:
    """The points the log-scaled panels of the errors figure cannot show: a bias corrected to 0 (variance / R
    subtracted, clipped at 0) has no place on the bias² axis, nor a variance or MSE of 0 on theirs."""
    lost = defaultdict(list)
    for row in ok_rows:
        for name, panel in (("bias_norm", "bias²"), ("mse", "MSE"), ("variance", "variance")):
            value = _metric(row, name)
            if not math.isnan(value) and value <= 0:
                lost[(panel, row.label)].append(fmt_count(row.record.key.budget))
    if not lost:
        return []
    parts = [f"{panel}: {quoted(label)} at budget {', '.join(budgets)}" for (panel, label), budgets in lost.items()]
    return [
        "Not drawn in the figure below (a value of 0, which a log axis cannot show; the bias is corrected for "
        f"replicate noise and clipped at 0): {'; '.join(parts)}.",
        "",
    ]


def _difference_forest(
    rows: list[Row], runs: list[Run], out_dir: Path, group_title: Callable[[tuple], str] = _group_title
) -> list[str]:
    """The forest plot of every verdict's paired differences (each stable estimator's mean squared error minus
    the lowest's at the same point and budget, with the Bonferroni simultaneous 95 % t-interval over the
    replicates), one panel per (point, gamma, T, budget); nothing when no verdict has a difference."""
    drawn = []
    for group in sorted({row.group for row in rows}):
        ok_rows = [row for row in rows if row.group == group and row.record.ok]
        verdicts = sorted(_group_verdicts(ok_rows, runs), key=lambda v: v.budget) if ok_rows else []
        drawn += [
            {
                "label": f"{c.name} minus {v.lowest}",
                "unit": f"MSE, {group_title(group)}, budget {fmt_count(v.budget)}",
                "estimate": {"mean": c.difference, "ci95": c.half_width},
            }
            for v in verdicts
            for c in v.comparisons
            if c.difference is not None and c.half_width is not None
        ]
    interval = "mean and Bonferroni simultaneous 95 % t-interval over the paired replicates"
    if plots.plot_forest(drawn, out_dir / "forest.png", "paired differences to the lowest MSE", interval=interval):
        return [
            "## Paired differences",
            "",
            "Each stable estimator's MSE minus the lowest's at the same (point, gamma, T) and budget, paired replicate "
            f"by replicate ({interval}; an interval that holds 0: tied):",
            "",
            "![paired differences in MSE to the lowest, with their intervals](forest.png)",
            "",
        ]
    return []


def _ran_with(results: Results) -> list[str]:
    """Each estimator with the values it ran with: the tuned ones (the search's choice, in place of the
    configured ones, which the resolved config below still shows) marked."""
    tuning = results.tuning if isinstance(results.tuning, dict) else {}
    chosen = {k: r["chosen"] for k, r in (tuning.get("estimators") or {}).items() if r.get("chosen")}
    lines = []
    for e in (results.config or {}).get("estimators", []):
        tuned = chosen.get(e["label"], {})
        values = {**(e.get("hyperparameters") or {}), **tuned}
        text = ", ".join(f"{k} = {fmt(v)}" + (" (**tuned**)" if k in tuned else "") for k, v in values.items())
        sampler = f", sampler `{e['sampler']}`" if e.get("sampler") else ""
        budgets = ", ".join(fmt_count(b) for b in e.get("budgets", []))
        lines.append(f"- `{_md(e['label'])}` ({e.get('kind')}{sampler}): {text or 'its defaults'}; budgets {budgets}")
    return lines


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

    words = wording([run.results for run in runs])
    title_line = f"# {words.title}: {' + '.join(f'`{_md(run.label)}`' for run in runs)}"
    answer: list[str] = []  # the verdicts of every (point, gamma, T), first in the report
    lines = []
    for run in runs:
        lines += _tuning(run)
    lines += ["## How to read this", "", words.how_to_read.format(dash=DASH, method=METHOD), ""]
    plotted = groups[:MAX_GROUPS_PLOTTED]
    if len(groups) > MAX_GROUPS_PLOTTED:
        lines += [
            f"Figures cover the first {MAX_GROUPS_PLOTTED} of {len(groups)} (point, gamma, T) combinations; "
            "the tables cover all of them.",
            "",
        ]
    efficiency_panels = []
    for group in groups:
        title = words.group_title(group)
        in_group = [row for row in rows if row.group == group]
        ok_rows = _ordered([row for row in in_group if row.record.ok])
        lines += [f"## {title}", ""]
        if ok_rows:
            verdicts = _verdict_lines(ok_rows, _group_verdicts(ok_rows, runs))
            lines += [*_table(ok_rows), "", *_near_zero_note(ok_rows), *verdicts, *([""] if verdicts else [])]
            lines += _clipped_note(ok_rows) if group in plotted else []
            if verdicts:
                answer += [f"**{title}**", "", *verdicts[2:], ""]
        else:
            lines += ["No record finished for this combination.", ""]
        failed = [row for row in in_group if not row.record.ok]
        if failed:
            lines += ["Not in the table (status not ok):", "", *_not_ok(failed), ""]
        if group in plotted and ok_rows:
            name = figure_name(f"errors_p{group[0]}_g{group[1]}_T{group[2]}")
            plots.plot_errors(_series(ok_rows), f"MSE, bias² and variance: {title}", out_dir / name, colors)
            lines += [f"![MSE, bias² and variance against gradient evaluations: {title}]({name})", ""]
            eff = defaultdict(list)
            for row in sorted(ok_rows, key=lambda r: _metric(r, "grad_evals")):
                if not math.isnan(_metric(row, "efficiency_ratio")):  # smoothing has none: named apart
                    eff[row.label].append((_metric(row, "grad_evals"), _metric(row, "efficiency_ratio")))
            if any(not math.isnan(e) for points in eff.values() for _, e in points):
                efficiency_panels.append((title, dict(eff)))
    if efficiency_panels:  # a section with nothing in it is left out
        without = sorted(
            {row.label for row in rows if row.record.ok}
            - {label for _, series in efficiency_panels for label in series}
        )
        plots.plot_efficiency(efficiency_panels, out_dir / "efficiency.png", colors, without=without)
        lines += ["## Efficiency ratios", "", "![efficiency ratio against gradient evaluations](efficiency.png)", ""]
        if without:
            lines += [f"No efficiency ratio (no Gibbs measure to compare with): {', '.join(map(quoted, without))}.", ""]
    lines += _difference_forest(rows, runs, out_dir, words.group_title)
    images, notes = chain_figures(rows, out_dir, words.group_title)
    if images or notes:
        lines += ["## Inner chains: trace and rank plots", ""]
        lines += [*(f"{_md(note)}\n" for note in notes), *(f"{image}\n" for image in images)]
    # the answer first, what ran and its resolved config last
    if answer:
        answer = ["## Answer", "", "Lowest MSE at each budget (paired over replicates, 95 %):", "", *answer]
    meta = [line for run in runs for line in _meta(run)]
    lines = [title_line, "", *answer, *lines, "## What ran", "", *meta]
    report = out_dir / "report.md"
    text = "\n".join(lines).rstrip() + "\n"
    plots.atomic_write(report, lambda handle: handle.write(text.encode("utf-8")))
    return report
