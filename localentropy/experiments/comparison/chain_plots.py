"""The report's trace and rank plots: one figure per local-entropy estimator, at its worst-mixed record.

Each estimator is shown at the record (point, gamma, T, budget) with its highest R-hat, so that a reader sees
the worst chains of every estimator, not the first few records in config order. Past ``MAX_CHAIN_FIGURES``
estimators, the ones with the highest R-hat are drawn and the report says so.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from localentropy.experiments.comparison.formatting import Row, figure_name, fmt, fmt_count
from localentropy.experiments.comparison.results import RecordKey
from localentropy.experiments.core import plots
from localentropy.experiments.core.files import slug

MAX_CHAIN_FIGURES = 12


def record_ids(key: RecordKey | dict[str, Any]) -> list[str]:
    """The record's possible node names in draws.nc: gamma and T as Python prints them, then in ``:g`` form."""
    key = RecordKey.model_validate(key)
    ids = []
    for form in ("{}", "{:g}"):
        gamma, temperature = form.format(key.gamma), form.format(key.temperature)
        ids.append(slug(f"{key.estimator}__p{key.point}__g{gamma}__T{temperature}__b{key.budget}"))
    return list(dict.fromkeys(ids))


def find_node(tree: Any, key: RecordKey) -> str | None:
    """The draws.nc node holding a record's draws: by name, else by the key stored in the node's attributes."""
    for rid in record_ids(key):
        if rid in tree.children and "posterior" in tree[rid].children:
            return rid
    wanted = {k: str(v) for k, v in key.model_dump().items()}
    for name, node in tree.children.items():
        if "posterior" in node.children and {k: str(node.attrs.get(k)) for k in wanted} == wanted:
            return name
    return None


def _rhat(row: Row) -> float:
    value = row.record.chains.max_rhat if row.record.chains is not None else None
    return value if value is not None else -math.inf


def worst_records(rows: list[Row]) -> list[Row]:
    """Per (run, estimator) with chains, its record with the highest R-hat (then the largest budget)."""
    worst: dict[tuple, Row] = {}
    for row in rows:
        record = row.record
        if record.status != "ok" or (record.estimator is not None and record.estimator.kind == "smoothing"):
            continue
        key = (row.run, row.label)
        if key not in worst or (_rhat(row), record.key.budget) > (_rhat(worst[key]), worst[key].record.key.budget):
            worst[key] = row
    return sorted(worst.values(), key=lambda r: (-_rhat(r), r.label))


def chain_figures(rows: list[Row], out_dir: Path, title_of: Any) -> dict[str, Any] | None:
    """Trace and rank plots of every estimator's worst-mixed record, drawn into ``out_dir``; what the report says
    of them (``chains.md.j2``): how many estimators have chains and how many are shown, each figure's file and
    title, and each run or record whose draws could not be had. None when no estimator has chains."""
    import xarray as xr

    chosen = worst_records(rows)
    if not chosen:
        return None
    estimators = len(chosen)
    chosen = chosen[:MAX_CHAIN_FIGURES]
    images: list[dict[str, str]] = []
    problems: list[dict[str, str]] = []  # a run without draws.nc, a record without draws, a file not read
    by_run = defaultdict(list)
    for row in chosen:
        by_run[(row.run, row.run_dir)].append(row)
    for (run_label, run_dir), run_rows in by_run.items():
        path = Path(run_dir) / "draws.nc"
        if not path.exists():
            problems.append({"run": run_label})
            continue
        try:
            with xr.open_datatree(path, engine="h5netcdf") as tree:
                for row in run_rows:
                    rid = find_node(tree, row.record.key)
                    if rid is None:
                        problems.append({"run": run_label, "record": record_ids(row.record.key)[0]})
                        continue
                    draws = np.asarray(tree[rid]["posterior"]["x"].values, float)
                    images.append(_chain_figure(draws.reshape(*draws.shape[:2], -1), row, rid, out_dir, title_of))
        except (OSError, ValueError, KeyError) as exc:
            problems.append({"path": str(path), "error": str(exc)})
    unique = list({tuple(p.items()): p for p in problems}.values())  # a run directory merged twice: said once
    return {"estimators": estimators, "shown": len(chosen), "images": images, "problems": unique}


def _chain_figure(draws: np.ndarray, row: Row, rid: str, out_dir: Path, title_of: Any) -> dict[str, str]:
    """One record's trace and rank plots, drawn: the figure's file name and title."""
    import arviz_stats

    coords = [(0, "coordinate 0")]
    with contextlib.suppress(Exception):  # ESS needs >= 4 draws; without it only coordinate 0 is shown
        ess = np.asarray(arviz_stats.ess(draws, method="bulk"), float)
        low = int(np.nanargmin(ess))
        coords = [(0, f"ESS {fmt(ess[0])}")] + ([(low, f"lowest ESS, {fmt(ess[low])}")] if low != 0 else [])
    name = figure_name(f"chains_{row.run}_{rid}")
    rhat = _rhat(row)
    title = f"{row.label}, {title_of(row.group)}, budget {fmt_count(row.record.key.budget)}" + (
        f", max R-hat {fmt(rhat)}" if math.isfinite(rhat) else ""
    )
    plots.plot_chains(draws, coords, title, out_dir / name)
    return {"file": name, "title": title}
