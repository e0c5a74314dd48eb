"""A run directory's report: ``report.md`` with one table per (point, gamma, temperature) and PNG figures.

``write_report([run_dir], out_dir)`` rebuilds one run's report; several run directories are merged into one
report (an estimator name found in more than one run is labelled ``<run name>/<estimator>``). Figures are
drawn by :mod:`localentropy.experiments.core.plots`; every file is written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex

from localentropy.experiments.comparison.results import load_run
from localentropy.experiments.core import plots
from localentropy.experiments.core.files import slug

MAX_GROUPS_PLOTTED = 6
MAX_CHAIN_FIGURES = 4  # trace and rank figures, first combinations first
DASH = "—"
COLUMNS = (
    "estimator",
    "budget",
    "grad evals",
    "MSE",
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
that (point, gamma, T). **MSE** is the mean squared error of one replicate's estimate (= bias² + variance); **relative
MSE** divides it by ‖truth‖². **Bias norm** is corrected for replicate noise (variance / R subtracted, clipped at
0), given ± its Monte Carlo standard error: a bias within about 2 MCSE of 0 is not distinguishable from zero.
**Cosine** is between the mean estimate and the truth (1: right direction). **Grad evals** are gradient
evaluations per replicate, the cost a budget buys. **Efficiency ratio** is the MSE divided by the MSE of as many
exact i.i.d. draws from the Gibbs measure: 1 matches exact sampling, above 1 is worse, below 1 is possible with
negatively correlated draws. **Min ESS (bulk)** and **max R-hat** are ArviZ diagnostics of the inner chains of the
first replicate (R-hat above 1.01: chains not mixed); **KSD** is the kernel Stein discrepancy of those draws to the
Gibbs measure (0: exact). {dash} means not applicable (smoothing estimators have no chains). Rows are grouped by
estimator, the estimator with the lowest MSE at the largest budget first; numbers have 3 significant digits."""


def record_ids(key: dict[str, Any]) -> list[str]:
    """The record's possible node names in draws.nc: gamma and T as Python prints them, then in ``:g`` form."""
    ids = []
    for form in ("{}", "{:g}"):
        parts = [key.get(name) for name in ("gamma", "temperature")]
        with contextlib.suppress(TypeError, ValueError):
            parts = [form.format(v) for v in parts]
        raw = f"{key['estimator']}__p{key.get('point')}__g{parts[0]}__T{parts[1]}__b{key.get('budget')}"
        ids.append(slug(raw))
    return list(dict.fromkeys(ids))


def _find_node(tree: Any, key: dict[str, Any]) -> str | None:
    """The draws.nc node holding a record's draws: by name, else by the key stored in the node's attributes."""
    for rid in record_ids(key):
        if rid in tree.children and "posterior" in tree[rid].children:
            return rid
    wanted = {k: str(v) for k, v in key.items()}
    for name, node in tree.children.items():
        if "posterior" in node.children and {k: str(node.attrs.get(k)) for k in wanted} == wanted:
            return name
    return None


def fmt(value: Any) -> str:
    """3 significant digits; exact integers for counts; a dash for missing or NaN values."""
    if value is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return DASH
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def fmt_count(value: Any) -> str:
    if isinstance(value, int | float) and math.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return fmt(value)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _sort_key(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, int | float) else (1, 0, str(value))


def _group_title(group: tuple) -> str:
    point, gamma, temperature = group
    return f"point {point}, gamma = {fmt(gamma)}, T = {fmt(temperature)}"


MAX_FIGURE_NAME = 150  # file names are limited to 255 bytes; the atomic writer adds about 25


def _figure_name(stem: str) -> str:
    """``<stem>.png`` with the stem slugged, and shortened with a hash of it when it would be too long."""
    name = slug(stem)
    if len(name) > MAX_FIGURE_NAME:
        name = f"{name[: MAX_FIGURE_NAME - 13]}_{hashlib.sha256(stem.encode()).hexdigest()[:12]}"
    return f"{name}.png"


def _is_ok(record: dict[str, Any]) -> bool:
    return record.get("status") == "ok" and isinstance(record.get("metrics"), dict)


def _metric(row: dict[str, Any], name: str) -> float:
    value = (row["record"].get("metrics") or {}).get(name)
    return float(value) if isinstance(value, int | float) else math.nan


def _rows(runs: list[tuple[str, Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every record with its display label, run and group."""
    owners = defaultdict(set)
    for run_label, _, data in runs:
        for record in data["records"]:
            owners[str(record["key"]["estimator"])].add(run_label)
    rows = []
    for run_label, run_dir, data in runs:
        for record in data["records"]:
            key = record["key"]
            name = str(key["estimator"])
            label = f"{run_label}/{name}" if len(owners[name]) > 1 else name
            group = (key.get("point"), key.get("gamma"), key.get("temperature"))
            rows.append({"label": label, "run": run_label, "run_dir": run_dir, "group": group, "record": record})
    return rows


def _ordered(ok_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by estimator (lowest MSE at the largest budget first), then budget."""
    by_label = defaultdict(list)
    for row in ok_rows:
        by_label[row["label"]].append(row)
    budgets = [row["record"]["key"].get("budget") for row in ok_rows]
    top = max((b for b in budgets if isinstance(b, int | float)), default=None)

    def rank(label: str) -> tuple:
        rows = sorted(by_label[label], key=lambda r: _sort_key(r["record"]["key"].get("budget")))
        at_top = [r for r in rows if r["record"]["key"].get("budget") == top]
        mse = _metric((at_top or rows)[-1], "mse")
        return (not at_top, math.isnan(mse), mse, label)

    out = []
    for label in sorted(by_label, key=rank):
        out.extend(sorted(by_label[label], key=lambda r: _sort_key(r["record"]["key"].get("budget"))))
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        record = row["record"]
        m, chains = record["metrics"], record.get("chains") or {}
        cells = [
            f"`{_md(row['label'])}`",
            fmt_count(record["key"].get("budget")),
            fmt_count(m.get("grad_evals")),
            fmt(m.get("mse")),
            fmt(m.get("relative_mse")),
            f"{fmt(m.get('bias_norm'))} ± {fmt(m.get('bias_norm_mcse'))}",
            fmt(m.get("variance")),
            fmt(m.get("cosine")),
            fmt(m.get("efficiency_ratio")),
            fmt(chains.get("min_ess_bulk")),
            fmt(chains.get("max_rhat")),
            fmt(record.get("ksd")),
            fmt((record.get("timing") or {}).get("seconds_per_replicate")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def best_per_budget(ok_rows: list[dict[str, Any]]) -> list[tuple[Any, dict[str, Any]]]:
    """(budget, row with the lowest MSE at that budget), budgets ascending; rows with a NaN MSE never win."""
    best: dict[Any, dict[str, Any]] = {}
    for row in ok_rows:
        budget, mse = row["record"]["key"].get("budget"), _metric(row, "mse")
        if not math.isnan(mse) and (budget not in best or mse < _metric(best[budget], "mse")):
            best[budget] = row
    return [(b, best[b]) for b in sorted(best, key=_sort_key)]


def _best_line(ok_rows: list[dict[str, Any]]) -> str:
    parts = [
        f"budget {fmt_count(b)}: `{_md(r['label'])}` (MSE {fmt(_metric(r, 'mse'))}, "
        f"{fmt_count(r['record']['metrics'].get('grad_evals'))} grad evals)"
        for b, r in best_per_budget(ok_rows)
    ]
    return "**Best per gradient evaluation** (lowest MSE at each budget): " + ("; ".join(parts) or "none") + "."


def _not_ok(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        record, key = row["record"], row["record"]["key"]
        status = record.get("status") if record.get("status") != "ok" else "ok, but no metrics"
        error = record.get("error") or "no error message"
        lines.append(f"- `{_md(row['label'])}`, budget {fmt_count(key.get('budget'))}: **{status}**: {_md(error)}")
    return lines


def _meta(run_label: str, run_dir: Path, data: dict[str, Any]) -> list[str]:
    meta = data.get("meta") or {}
    versions = meta.get("versions") or {}
    lines = [
        f"### Run `{_md(run_label)}`",
        "",
        f"- directory: `{run_dir}`",
        f"- seed: {meta.get('seed', DASH)}; device: {meta.get('device', DASH)}; git commit: "
        f"{meta.get('git_commit') or 'unknown'}",
        "- versions: " + (", ".join(f"{k} {v or '?'}" for k, v in versions.items()) or "unknown"),
        f"- records: {len(data['records'])}",
    ]
    if data.get("config") is not None:
        config = json.dumps(data["config"], indent=2, sort_keys=True, default=str)
        lines += ["", "<details><summary>resolved config</summary>", "", "```json", config, "```", "</details>"]
    return [*lines, ""]


def _series(ok_rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, ...]]]:
    out = defaultdict(list)
    for row in sorted(ok_rows, key=lambda r: _metric(r, "grad_evals")):
        names = ("grad_evals", "mse", "bias_norm", "bias_norm_mcse", "variance")
        out[row["label"]].append(tuple(_metric(row, n) for n in names))
    return dict(out)


def _chain_figures(rows: list[dict[str, Any]], groups: list[tuple], out_dir: Path) -> tuple[list[str], list[str]]:
    """Trace and rank plots for up to MAX_CHAIN_FIGURES local-entropy records: (image lines, notes)."""
    import xarray as xr

    images, notes = [], []
    by_run = defaultdict(list)
    for row in rows:
        by_run[(row["run"], row["run_dir"])].append(row)
    for (run_label, run_dir), run_rows in by_run.items():
        path = Path(run_dir) / "draws.nc"
        if not path.exists():
            notes.append(f"Run `{_md(run_label)}` has no draws.nc: no trace or rank plots.")
            continue
        candidates = {}  # per (estimator, combination) its largest budget; combinations in report order
        for row in sorted(
            run_rows, key=lambda r: (groups.index(r["group"]), _sort_key(r["record"]["key"].get("budget")))
        ):
            if _is_ok(row["record"]) and (row["record"].get("estimator") or {}).get("kind") != "smoothing":
                candidates[(row["group"], row["label"])] = row
        try:
            with xr.open_datatree(path, engine="h5netcdf") as tree:
                for row in candidates.values():
                    if len(images) >= MAX_CHAIN_FIGURES:
                        notes.append(f"Trace and rank plots are capped at {MAX_CHAIN_FIGURES} records.")
                        break
                    rid = _find_node(tree, row["record"]["key"])
                    if rid is None:
                        rid = record_ids(row["record"]["key"])[0]
                        notes.append(f"draws.nc of run `{_md(run_label)}` has no draws for `{rid}`.")
                        continue
                    draws = np.asarray(tree[rid]["posterior"]["x"].values, float)
                    images.append(_chain_figure(draws.reshape(*draws.shape[:2], -1), row, rid, out_dir))
        except (OSError, ValueError, KeyError) as exc:
            notes.append(f"Could not read `{path}`: {_md(exc)}")
    return images, list(dict.fromkeys(notes))


def _chain_figure(draws: np.ndarray, row: dict[str, Any], rid: str, out_dir: Path) -> str:
    import arviz_stats

    coords = [(0, "coordinate 0")]
    with contextlib.suppress(Exception):  # ESS needs >= 4 draws; without it only coordinate 0 is shown
        ess = np.asarray(arviz_stats.ess(draws, method="bulk"), float)
        low = int(np.nanargmin(ess))
        coords = [(0, f"ESS {fmt(ess[0])}")] + ([(low, f"lowest ESS, {fmt(ess[low])}")] if low != 0 else [])
    name = _figure_name(f"chains_{row['run']}_{rid}")
    title = f"{row['label']}, {_group_title(row['group'])}, budget {fmt_count(row['record']['key'].get('budget'))}"
    plots.plot_chains(draws, coords, title, out_dir / name)
    return f"![trace and rank plots: {_md(title)}]({name})"


def write_report(run_dirs: Sequence[Path | str], out_dir: Path | str) -> Path:
    """Write report.md and its PNG figures for one run directory, or several merged, into ``out_dir``."""
    if not run_dirs:
        raise ValueError("write_report needs at least one run directory")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, seen = [], defaultdict(int)
    for run_dir in run_dirs:
        data = load_run(run_dir)
        run_dir = Path(run_dir)
        run_dir = run_dir.parent if run_dir.name == "results.json" and run_dir.is_file() else run_dir
        name = str(data.get("name"))
        seen[name] += 1
        runs.append((name if seen[name] == 1 else f"{name}#{seen[name]}", run_dir, data))
    rows = _rows(runs)
    groups = sorted({row["group"] for row in rows}, key=lambda g: tuple(_sort_key(v) for v in g))
    labels = sorted({row["label"] for row in rows})
    cmap = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    colors = {label: to_hex(cmap(i % cmap.N)) for i, label in enumerate(labels)}

    lines = [f"# Local-entropy gradient report: {' + '.join(f'`{_md(r[0])}`' for r in runs)}", ""]
    for run in runs:
        lines += _meta(*run)
    lines += ["## How to read this", "", HOW_TO_READ.format(dash=DASH), ""]
    plotted = groups[:MAX_GROUPS_PLOTTED]
    if len(groups) > MAX_GROUPS_PLOTTED:
        lines += [
            f"Figures cover the first {MAX_GROUPS_PLOTTED} of {len(groups)} (point, gamma, T) combinations; "
            "the tables cover all of them.",
            "",
        ]
    efficiency_panels = []
    for group in groups:
        title = _group_title(group)
        in_group = [row for row in rows if row["group"] == group]
        ok_rows = _ordered([row for row in in_group if _is_ok(row["record"])])
        lines += [f"## {title}", ""]
        if ok_rows:
            lines += [*_table(ok_rows), "", _best_line(ok_rows), ""]
        else:
            lines += ["No record finished for this combination.", ""]
        failed = [row for row in in_group if not _is_ok(row["record"])]
        if failed:
            lines += ["Not in the table (status not ok):", "", *_not_ok(failed), ""]
        if group in plotted and ok_rows:
            name = _figure_name(f"errors_p{group[0]}_g{group[1]}_T{group[2]}")
            plots.plot_errors(_series(ok_rows), f"MSE, bias² and variance: {title}", out_dir / name, colors)
            lines += [f"![MSE, bias² and variance against gradient evaluations: {title}]({name})", ""]
            eff = defaultdict(list)
            for row in sorted(ok_rows, key=lambda r: _metric(r, "grad_evals")):
                eff[row["label"]].append((_metric(row, "grad_evals"), _metric(row, "efficiency_ratio")))
            if any(not math.isnan(e) for points in eff.values() for _, e in points):
                efficiency_panels.append((title, dict(eff)))
    lines += ["## Efficiency ratios", ""]
    if efficiency_panels:
        plots.plot_efficiency(efficiency_panels, out_dir / "efficiency.png", colors)
        lines += ["![efficiency ratio against gradient evaluations](efficiency.png)", ""]
    else:
        lines += ["No record has an efficiency ratio.", ""]
    images, notes = _chain_figures(rows, groups, out_dir)
    lines += ["## Inner chains: trace and rank plots", ""]
    lines += [*(f"{note}\n" for note in notes), *(f"{image}\n" for image in images)]
    if not images and not notes:
        lines += ["No local-entropy record with draws.", ""]
    report = out_dir / "report.md"
    text = "\n".join(lines).rstrip() + "\n"
    plots.atomic_write(report, lambda handle: handle.write(text.encode("utf-8")))
    return report
