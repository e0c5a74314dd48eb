"""Outputs of ``localentropy train``: per-epoch and final CSV tables, learning curves, SLQ densities, report.md.

Everything is written atomically from the run's ``results.json`` data, so ``write_train_outputs`` can rebuild
the report of a finished run. Figures use plain matplotlib (no pyplot state). The report's prose is rendered from
``templates/*.md.j2`` (Jinja2) fed by the plain view of those data that
:mod:`localentropy.experiments.training.summary` builds: a sentence appears only when the data carry what it states.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localentropy.experiments.core import templates
from localentropy.experiments.core.config import path_text
from localentropy.experiments.core.files import atomic_write_bytes, csv_bytes
from localentropy.experiments.core.plots import save_figure
from localentropy.experiments.training import summary
from localentropy.experiments.training.summary import DASH, MEASURE_HEADINGS, fmt

PACKAGE = "localentropy.experiments.training"

EPOCH_COLUMNS = (
    "optimizer",
    "kind",
    "status",
    "epoch",
    "lr",
    "steps",
    "grad_evals",
    "examples",
    "effective_epochs",
    "seconds",
    "train_loss",
    "train_error",
    "val_loss",
    "val_error",
    "test_loss",
    "test_error",
)
# the metrics of a record's final row (the trainer fills them from its last evaluated row)
FINAL_ROW_KEYS = (
    "test_error",
    "test_loss",
    "val_error",
    "val_loss",
    "train_error",
    "train_loss",
    "effective_epochs",
    "seconds",
    "grad_evals",
    "steps",
)
# the columns of final.csv read from each record's final row: all but the validation loss
FINAL_METRICS = tuple(k for k in FINAL_ROW_KEYS if k != "val_loss")
FINAL_COLUMNS = (
    "optimizer",
    "kind",
    "status",
    *FINAL_METRICS,
    "top_eigenvalue",
    "trace",
    "trace_mcse",
    "sharpness",
    "local_entropy_grad_norm",
    "local_entropy_mcse",
    "grad_norm",
    "llc",
    "llc_mcse",
    "message",
)


def _flat(record: dict[str, Any], measure: str, key: str) -> Any:
    value = (record.get("flatness") or {}).get(measure)
    return value.get(key) if isinstance(value, dict) else None


def final_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for rec in records:
        final = rec.get("final") or {}
        rows.append(
            {
                "optimizer": rec["label"],
                "kind": rec["kind"],
                "status": rec["status"],
                **{k: final.get(k) for k in FINAL_METRICS},
                "top_eigenvalue": _flat(rec, "top_eigenvalue", "value"),
                "trace": _flat(rec, "trace", "value"),
                "trace_mcse": _flat(rec, "trace", "mcse"),
                "sharpness": _flat(rec, "sharpness", "value"),
                "local_entropy_grad_norm": _flat(rec, "local_entropy", "norm"),
                "local_entropy_mcse": _flat(rec, "local_entropy", "mcse"),
                "grad_norm": _flat(rec, "local_entropy", "grad_norm"),
                "llc": _flat(rec, "llc", "value"),
                "llc_mcse": _flat(rec, "llc", "mcse"),
                "message": rec.get("message"),
            }
        )
    return rows


def _percent(value: Any) -> str:
    return DASH if value is None else f"{100 * float(value):.2f} %"


def _colors(labels: list[str]) -> dict[str, Any]:
    cmap = colormaps["tab10"]
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def plot_curves(records: list[dict[str, Any]], path: Path) -> Path:
    """Test error against effective epochs and against seconds (and, data-parallel, against the bytes each rank
    communicated), one line per optimizer."""
    xs = [
        ("effective_epochs", "effective epochs (examples forward-backwarded / training-set size)"),
        ("seconds", "training wall-clock seconds"),
    ]
    if any("bytes_communicated" in row for rec in records for row in rec["rows"]):
        xs.append(("bytes_communicated", "payload bytes communicated per rank"))
    fig = Figure(figsize=(6.5 * len(xs), 4.8))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.26, top=0.9, wspace=0.18)
    axes = fig.subplots(1, len(xs))
    colors = _colors([r["label"] for r in records])
    for rec in records:
        rows = [r for r in rec["rows"] if r.get("test_error") is not None]
        style = {
            "color": colors[rec["label"]],
            "marker": "o",
            "markersize": 3,
            "linewidth": 1.3,
            "linestyle": "-" if rec["status"] == "ok" else ":",
        }
        name = rec["label"] + ("" if rec["status"] == "ok" else " (diverged)")
        rows = [r for r in rows if r["test_error"] > 0]  # a log axis
        err = [100 * r["test_error"] for r in rows]
        for ax, (key, _) in zip(axes, xs, strict=True):
            ax.plot([r.get(key) for r in rows], err, label=name, **style)
    for ax, (_, xlabel) in zip(axes, xs, strict=True):
        ax.set(xlabel=xlabel, ylabel="test error (%, log scale)", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(handles), 4), fontsize=9)
    fig.suptitle("Test error per epoch (the first point: the initial weights)")
    return save_figure(fig, path)


def plot_density(records: list[dict[str, Any]], path: Path) -> Path | None:
    """The SLQ eigenvalue densities of the final Hessians, log scale, one line per optimizer that has one; None
    (and no file) when no record holds a density."""
    drawn = summary.densities(records)
    if not drawn:
        return None
    fig = Figure(figsize=(9, 5))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    ax = fig.subplots()
    colors = _colors([r["label"] for r in records])
    low = None
    for label, density in drawn:
        grid, values = np.asarray(density["grid"], float), np.asarray(density["density"], float)
        floor = max(values.max(), 1e-300) * summary.DENSITY_FLOOR
        low = floor if low is None else min(low, floor)
        ax.plot(grid, np.maximum(values, floor), color=colors[label], linewidth=1.2, label=label)
    ax.set(
        xlabel="Hessian eigenvalue",
        ylabel="density (Gaussian-broadened SLQ)",
        yscale="log",
        title="Eigenvalue density of the final Hessian (evaluation batch set)",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.set_ylim(bottom=low)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _cells(r: dict[str, Any], measured: list[str], intervals: dict[str, str]) -> list[str]:
    """One optimizer's row of the results table: the columns every run has, then one per flatness measure run."""
    effective = DASH if r["effective_epochs"] is None else f"{r['effective_epochs']:.2f}"
    seconds = DASH if r["seconds"] is None else f"{r['seconds']:.1f}"
    error = _percent(r["test_error"]) + (f" ({intervals[r['optimizer']]})" if r["optimizer"] in intervals else "")
    cells = [r["optimizer"], r["status"], error, effective, seconds, fmt(r["grad_evals"])]
    for measure in measured:
        if measure == "top_eigenvalue":
            cells.append(fmt(r["top_eigenvalue"]))
        elif measure == "trace":
            cells.append(DASH if r["trace"] is None else f"{fmt(r['trace'])} ± {fmt(r['trace_mcse'], 2)}")
        elif measure == "sharpness":
            cells.append(fmt(r["sharpness"]))
        elif measure == "local_entropy":
            norm = r["local_entropy_grad_norm"]
            cells.append(
                DASH if norm is None else f"{fmt(norm)} ± {fmt(r['local_entropy_mcse'], 2)} / {fmt(r['grad_norm'])}"
            )
        elif measure == "llc":
            cells.append(DASH if r["llc"] is None else f"{fmt(r['llc'])} ± {fmt(r['llc_mcse'], 2)}")
    return cells


TEMPLATES = templates.Templates(PACKAGE)


def report_markdown(results: dict[str, Any]) -> str:
    """The report: its answer first, what ran with the values it ran with, the tables and figures of what was
    measured (nothing for what was not), and the resolved config last."""
    found = summary.answer(results)
    flat = summary.flatness(results)
    table_rows = final_rows(results["records"])
    columns = flat["columns"] if flat else []
    drawn = summary.density(results)
    records = results["records"]
    meta = results.get("meta") or {}
    sections = [
        f"# Training comparison: {results['name']}",
        TEMPLATES.render("answer.md.j2", answer=found),
        TEMPLATES.render("ran.md.j2", ran=summary.what_ran(results)),
        TEMPLATES.render(
            "results.md.j2",
            head=["optimizer", "status", "test error" + (" (95 % interval)" if found["intervals"] else "")]
            + ["effective epochs", "seconds", "grad evals"]
            + [MEASURE_HEADINGS[m] for m in columns],
            rows=[_cells(r, columns, found["intervals"]) for r in table_rows],
            test_examples=found["test_examples"],
            flatness=flat,
        ),
        TEMPLATES.render("communication.md.j2", communication=summary.communication(results)),
        TEMPLATES.render(
            "diverged.md.j2", messages=[r.get("message") or r["label"] for r in records if r["status"] != "ok"]
        ),
        TEMPLATES.render(
            "curves.md.j2", clipped=summary.clipped(records), diverged=any(r["status"] != "ok" for r in records)
        ),
        TEMPLATES.render("density.md.j2", density=drawn),
        TEMPLATES.render("files.md.j2", density=drawn is not None),
        TEMPLATES.render(
            "config.md.j2",
            config=json.dumps(results["config"], indent=2, sort_keys=True, default=str),
            torch=(meta.get("versions") or {}).get("torch"),
            threads=meta.get("torch_threads"),
            commit=meta.get("git_commit"),
        ),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


class TrainRecord(BaseModel):
    """One optimizer's record of ``results.json`` (the fields the report reads; the others are kept as they are)."""

    model_config = ConfigDict(extra="allow")
    label: str
    kind: str
    status: str
    rows: list[dict[str, Any]]


class TrainResults(BaseModel):
    """A training run's ``results.json``, as ``localentropy report DIR`` reads it back."""

    model_config = ConfigDict(extra="allow")
    schema_: Literal[1, 2] = Field(alias="schema")  # 2 adds device and precision
    name: str
    config: dict[str, Any]
    records: list[TrainRecord] = Field(min_length=1)


def is_train_results(data: Any) -> bool:
    """Whether a parsed results.json is a training run's (its records are optimizers' epoch rows)."""
    records = data.get("records") if isinstance(data, dict) else None
    return isinstance(records, list) and bool(records) and all(isinstance(r, dict) and "rows" in r for r in records)


def check_train_results(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """``data`` if it holds what the report reads, else ValueError naming the file and every missing field."""
    try:
        TrainResults.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{path_text(tuple(e['loc']))}: {e['msg'].lower()}" for e in exc.errors()[:5])
        raise ValueError(f"{path}: not the results of a complete `localentropy train` run ({problems})") from None
    return data


def write_train_outputs(run_dir: Path, results: dict[str, Any]) -> Path:
    """epochs.csv, final.csv, curves.png, density.png (when a density was measured) and report.md in ``run_dir``;
    returns the report's path."""
    run_dir = Path(run_dir)
    records = results["records"]
    epoch_rows = [
        {"optimizer": rec["label"], "kind": rec["kind"], "status": rec["status"], **row}
        for rec in records
        for row in rec["rows"]
    ]
    columns = EPOCH_COLUMNS + (("bytes_communicated",) if results.get("world_size", 1) > 1 else ())
    atomic_write_bytes(run_dir / "epochs.csv", csv_bytes(epoch_rows, columns))
    atomic_write_bytes(run_dir / "final.csv", csv_bytes(final_rows(records), FINAL_COLUMNS))
    plot_curves(records, run_dir / "curves.png")
    plot_density(records, run_dir / "density.png")
    atomic_write_bytes(run_dir / "report.md", report_markdown(results).encode())
    return run_dir / "report.md"
