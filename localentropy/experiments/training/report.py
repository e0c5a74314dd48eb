"""Outputs of ``localentropy train``: per-epoch and final CSV tables, learning curves, SLQ densities, report.md.

Everything is written atomically from the run's ``results.json`` data, so ``write_train_outputs`` can rebuild
the report of a finished run. Figures use plain matplotlib (no pyplot state).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from localentropy.experiments.core.config import path_text
from localentropy.experiments.core.files import atomic_write_bytes, csv_bytes
from localentropy.experiments.core.plots import save_figure

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
DASH = "—"


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


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    x = float(value)
    return f"{x:.{digits}g}" if math.isfinite(x) else DASH


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


def plot_density(records: list[dict[str, Any]], path: Path) -> Path:
    """The SLQ eigenvalue densities of the final Hessians, log scale, one line per optimizer."""
    fig = Figure(figsize=(9, 5))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    ax = fig.subplots()
    colors = _colors([r["label"] for r in records])
    drawn, low = False, None
    for rec in records:
        density = (rec.get("flatness") or {}).get("density")
        if not isinstance(density, dict) or not density.get("grid"):
            continue
        grid, values = np.asarray(density["grid"], float), np.asarray(density["density"], float)
        floor = max(values.max(), 1e-300) * 1e-6
        low = floor if low is None else min(low, floor)
        ax.plot(grid, np.maximum(values, floor), color=colors[rec["label"]], linewidth=1.2, label=rec["label"])
        drawn = True
    ax.set(
        xlabel="Hessian eigenvalue",
        ylabel="density (Gaussian-broadened SLQ)",
        yscale="log",
        title="Eigenvalue density of the final Hessian (evaluation batch set)",
    )
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.set_ylim(bottom=low)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no density measured", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    head = (
        "| optimizer | status | test error | effective epochs | seconds | grad evals | top eigenvalue | "
        "trace ± MCSE | eps-sharpness | ‖g_LE‖ ± MCSE / ‖∇f‖ |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        trace = DASH if r["trace"] is None else f"{fmt(r['trace'])} ± {fmt(r['trace_mcse'], 2)}"
        ratio = (
            f"{fmt(r['local_entropy_grad_norm'])} ± {fmt(r['local_entropy_mcse'], 2)} / {fmt(r['grad_norm'])}"
            if r["local_entropy_grad_norm"] is not None
            else DASH
        )
        effective = DASH if r["effective_epochs"] is None else f"{r['effective_epochs']:.2f}"
        seconds = DASH if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(
            f"| {r['optimizer']} | {r['status']} | {_percent(r['test_error'])} | {effective} | {seconds} | "
            f"{fmt(r['grad_evals'])} | {fmt(r['top_eigenvalue'])} | {trace} | {fmt(r['sharpness'])} | {ratio} |"
        )
    return lines


def _backend(results: dict[str, Any]) -> str:
    """The process group's backend, from the device the ranks trained on (older results name none: the CPU)."""
    return "nccl" if str(results.get("device", "cpu")).startswith("cuda") else "gloo"


def _communication(results: dict[str, Any]) -> list[str]:
    """The data-parallel section: world size and each optimizer's traffic (nothing for one process)."""
    world = results.get("world_size", 1)
    if world <= 1:
        return []
    lines = [
        "## Communication",
        "",
        f"Data-parallel on {world} processes (torch.distributed, {_backend(results)}): every rank reads its share "
        f"of each global batch of {results['config']['batch_size']} examples and DDP all-reduces the gradients. Bytes: "
        "the payload each rank handed to collectives (gradient all-reduces, the noise broadcast, drift checks, "
        "BatchNorm buffer broadcasts); a ring all-reduce sends 2 (n - 1) / n of it "
        "(`localentropy docs distributed`).",
        "",
        "| optimizer | bytes per rank | collective calls | bytes per optimizer step | seconds |",
        "|---|---|---|---|---|",
    ]
    for rec in results["records"]:
        per_step = rec.get("bytes_communicated", 0) / max(rec.get("steps") or 1, 1)
        seconds = (rec.get("final") or {}).get("seconds")
        lines.append(
            f"| {rec['label']} | {rec.get('bytes_communicated', 0):,} | {rec.get('collective_calls', 0):,} | "
            f"{per_step:,.0f} | {fmt(seconds)} |"
        )
    return [*lines, ""]


def _flatness_sentence(fl: dict[str, Any]) -> str:
    """What the flatness columns measured: only the measures the run asked for."""
    measured = set(fl.get("measures") or [])
    parts = {
        "top_eigenvalue": "top Hessian eigenvalue (power iteration)",
        "trace": f"trace (Hutchinson, {fl['hutchinson_samples']} Rademacher vectors, ± one MCSE)",
        "sharpness": f"Keskar eps-sharpness (eps = {fl['sharpness_epsilon']:g}, in %)",
        "local_entropy": f"local-entropy gradient norm (full training loss, gamma = {fl['local_entropy']['gamma']:g}, "
        f"T = {fl['local_entropy']['temperature']:g}) beside the gradient norm",
        "llc": "local learning coefficient (SGLD, localentropy.llc)",
    }
    named = [text for key, text in parts.items() if key in measured]
    if not named:
        return " No flatness was measured."
    return (
        f" Flatness at the final weights in eval mode on {fl['examples']} training examples: " + "; ".join(named) + "."
    )


def _what_ran(results: dict[str, Any]) -> list[str]:
    """Each optimizer with the values it ran with: its learning rate, options and inner-loop sampler."""
    config = results["config"]
    lines = ["## What ran", ""]
    for spec in config.get("optimizers", []):
        options = ", ".join(f"{k} = {v}" for k, v in sorted((spec.get("options") or {}).items()))
        text = f"- `{spec.get('label')}` ({spec.get('kind')}): lr {spec.get('lr')}"
        text += f"; {options}" if options else ""
        if spec.get("preset"):
            text += f"; preset {spec['preset']}"
        if spec.get("sampler"):
            sampler_options = ", ".join(f"{k} = {v}" for k, v in sorted((spec.get("sampler_options") or {}).items()))
            text += f"; inner sampler `{spec['sampler']}`" + (f" ({sampler_options})" if sampler_options else "")
        lines.append(text)
    device, precision = results.get("device"), results.get("precision")
    if device or precision:
        lines += ["", f"Device {device or 'cpu'}, precision {precision or '32-true'}."]
    return [*lines, ""]


def _density_section(fl: dict[str, Any]) -> list[str]:
    if "density" not in (fl.get("measures") or []):
        return []
    return [
        "## Hessian eigenvalue density (stochastic Lanczos quadrature)",
        "",
        f"{fl['lanczos_runs']} run(s) of {fl['lanczos_steps']} Lanczos steps with full re-orthogonalisation, "
        f"Gaussian broadening of {fl['broadening']:g} times the spread of the nodes.",
        "",
        "![SLQ density](density.png)",
        "",
    ]


def report_markdown(results: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    config, data, model = results["config"], results.get("data", {}), results.get("model", {})
    budget = (
        f"{config['epochs']} epochs per optimizer"
        if config.get("epochs") is not None
        else f"{config['effective_epochs']:g} effective epochs per optimizer"
    )
    sizes = data.get("sizes", {})
    fl = config["flatness"]
    lines = [
        f"# Training comparison: {results['name']}",
        "",
        f"Data: `{data.get('source')}` ({sizes.get('train')} train / {sizes.get('validation')} validation / "
        f"{sizes.get('test')} test, split seed {config['seed']}); model `{model.get('name')}` "
        f"({model.get('parameters')} parameters); batch size {config['batch_size']}; budget: {budget}. "
        "Every optimizer starts from the same weights and reads the minibatches in the same order.",
        "",
        "## Final results",
        "",
        *_table(rows),
        "",
        "Test error at the final weights. Effective epochs: examples forward-backwarded / training-set size "
        "(Entropy-SGD's inner steps, LPF-SGD's samples and SAM's second pass included); grad evals: "
        "forward-backward passes; seconds: training wall-clock time (evaluation excluded)." + _flatness_sentence(fl),
        "",
        *_what_ran(results),
    ]
    lines += _communication(results)
    failed = [r for r in results["records"] if r["status"] != "ok"]
    if failed:
        lines += ["## Diverged", ""] + [f"- {r['message']}" for r in failed] + [""]
    lines += [
        "## Learning curves",
        "",
        "![test error against effective epochs and seconds](curves.png)",
        "",
        *_density_section(fl),
        "Files: `results.json` (everything), `epochs.csv` (one row per optimizer and epoch), `final.csv`, "
        "`checkpoints/` (the last epoch of each optimizer: `torch.load(path, weights_only=True)`).",
        "",
    ]
    meta = results.get("meta", {})
    versions = meta.get("versions", {})
    lines.append(
        f"torch {versions.get('torch')}, {meta.get('torch_threads')} thread(s), commit "
        f"{meta.get('git_commit') or 'unknown'}."
    )
    return "\n".join(lines) + "\n"


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
    """epochs.csv, final.csv, curves.png, density.png and report.md in ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir)
    records = results["records"]
    epoch_rows = [
        {"optimizer": rec["label"], "kind": rec["kind"], "status": rec["status"], **row}
        for rec in records
        for row in rec["rows"]
    ]
    columns = EPOCH_COLUMNS + (("bytes_communicated",) if results.get("world_size", 1) > 1 else ())
    atomic_write_bytes(run_dir / "epochs.csv", csv_bytes(epoch_rows, columns))
    rows = final_rows(records)
    atomic_write_bytes(run_dir / "final.csv", csv_bytes(rows, FINAL_COLUMNS))
    plot_curves(records, run_dir / "curves.png")
    plot_density(records, run_dir / "density.png")
    atomic_write_bytes(run_dir / "report.md", report_markdown(results, rows).encode())
    return run_dir / "report.md"
