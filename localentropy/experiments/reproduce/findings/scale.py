"""Parle at scale: SGD-DDP, Entropy-SGD-DDP and Parle on 2 processes, measured; then the time per epoch projected.

The measured part reads the ``scale`` sweep (each run ``localentropy train --nproc 2``): test error at equal
effective epochs, with paired seed-level intervals and Holm's best set, against the training wall-clock and the
bytes each rank handed to all-reduces. When the sweep tuned its optimizers (``[tuning]``), the values each chose
and those at the edge of a range are reported, and every L is the one the runs ran (their records' passes per
outer step), the tuned one when the search chose it. The projected part feeds the ``scale_compute`` step's compute
per pass (one process), the payload of the model and Parle's L into the alpha-beta ring all-reduce model of
:mod:`localentropy.experiments.training.scaling`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from localentropy.diagnostics.compare import best_set, verdict_text
from localentropy.experiments.reproduce.claims import Claim, difference_claim, verdict_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    by_seed,
    fmt,
    paired,
    pm,
    read_json,
    select,
    sweep_entries,
    sweep_tuning,
    table,
)
from localentropy.experiments.reproduce.findings.render import section_text
from localentropy.experiments.sweeps.paths import optimizer_label
from localentropy.experiments.sweeps.tuning import with_chosen
from localentropy.experiments.training.scaling import LINKS, WORKERS, epoch_seconds

SGD, ENTROPY, PARLE = "sgd-ddp", "entropy-sgd-ddp", "parle"
LABELS = (SGD, ENTROPY, PARLE)


def _run_records(step: Path, results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """label -> seed -> the run's full record (rows with bytes), from each run's own results.json."""
    out: dict[str, dict[str, Any]] = {label: {} for label in LABELS}
    for run in results["runs"]:
        path = step / run["dir"] / "results.json"
        if run["status"] == "failed" or not path.is_file():
            continue
        seed = run["overrides"].get("seed")
        for rec in read_json(path)["records"]:
            if rec["label"] in out and rec["status"] == "ok":
                out[rec["label"]][seed] = rec
    return out


def projection(
    compute: dict[str, Any], examples: int, inner_steps: int, workers: tuple[int, ...] = WORKERS
) -> list[dict[str, Any]]:
    """Projected seconds per epoch (one pass over ``examples`` by all workers together, global batch as measured)
    of SGD-DDP, Entropy-SGD-DDP and Parle, per link and worker count, and Parle's speed-up over SGD-DDP."""
    passes = -(-examples // int(compute["batch_size"]))
    payload = 4 * int(compute["parameters"])
    rows = []
    for name, bandwidth, alpha in LINKS:
        for n in workers:
            link = (payload, n, alpha, bandwidth)
            sgd = epoch_seconds(passes, compute["gradient"], compute["sgd_update"], *link)
            entropy = epoch_seconds(passes, compute["gradient"], compute["entropy_update"], *link)
            parle = epoch_seconds(passes, compute["gradient"], compute["entropy_update"], *link, inner_steps)
            rows.append({"link": name, "n": n, SGD: sgd, ENTROPY: entropy, PARLE: parle, "speedup": sgd / parle})
    return rows


def measured(
    step: Path,
) -> tuple[
    dict[str, Any], list[dict[str, Any]], dict[str, dict[Any, float]], list[Any], Any, dict[str, dict[str, Any]]
]:
    """The scale sweep's results, entries, test errors by label and seed, the seeds all labels share, the best set
    over them, and the paired differences in test error."""
    results, items = sweep_entries(step)
    errors = {label: by_seed(select(items, label)) for label in LABELS}
    seeds = sorted(set.intersection(*(set(e) for e in errors.values())), key=str)
    verdict = best_set({label: [errors[label][s] for s in seeds] for label in LABELS}, unit="seed")
    pairs = {f"{a} - {b}": paired(errors[a], errors[b]) for a, b in ((PARLE, SGD), (PARLE, ENTROPY), (ENTROPY, SGD))}
    return results, items, errors, seeds, verdict, pairs


def scale_claims(step_dir: Path) -> list[Claim]:
    """The lowest test error of the three (Holm's best set over the seeds) and the paired differences."""
    _, _, errors, seeds, verdict, pairs = measured(step_dir)
    values = {label: [errors[label][s] for s in seeds] for label in LABELS}
    return [
        verdict_claim(
            "scale/lowest test error", "lowest test error", verdict.best, len(seeds), "seeds", verdict.as_dict(), values
        ),
        *(difference_claim(f"scale/{name}", f"test error, `{name}`", d) for name, d in pairs.items()),
    ]


def section_scale(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    step = out / "scale"
    results, _, errors, seeds, verdict, pairs = measured(step)
    compute = read_json(out / "scale_compute" / "compute.json")
    records = _run_records(step, results)
    seconds = {label: {s: r["final"]["seconds"] for s, r in records[label].items()} for label in LABELS}
    time_pairs = {f"{a} - {b}": paired(seconds[a], seconds[b]) for a, b in ((PARLE, SGD), (ENTROPY, SGD))}
    base = results["config"]["base"]
    tuning = _tuning(results)
    inner = {label: inner_steps(records, base, tuning, label) for label in (ENTROPY, PARLE)}
    world = sorted({r["world_size"] for recs in records.values() for r in recs.values()})
    examples = _train_examples(step, results)
    rows = []
    for label in LABELS:
        recs = list(records[label].values())
        rows.append(
            [
                label,
                f"{pm(list(errors[label].values()), 100)} %",
                pm([r["final"]["effective_epochs"] for r in recs], 1, 2),
                f"{np.mean([r['steps'] for r in recs]):.0f}" if recs and all("steps" in r for r in recs) else "—",
                pm([r["final"]["seconds"] for r in recs], 1, 1, " s"),
                f"{np.mean([r['bytes_communicated'] for r in recs]) / 1e6:.1f}" if recs else "—",
                f"{np.mean([r['collective_calls'] for r in recs]):.0f}" if recs else "—",
                f"{1e3 * np.mean([r['final']['seconds'] / r['final']['grad_evals'] for r in recs]):.2f}"
                if recs
                else "—",
            ]
        )
    per_run = {
        label: {
            "steps": [r["steps"] for r in records[label].values() if "steps" in r],
            "megabytes": [r["bytes_communicated"] / 1e6 for r in records[label].values()],
            "collective_calls": [r["collective_calls"] for r in records[label].values()],
            "ms_per_pass": [1e3 * r["final"]["seconds"] / r["final"]["grad_evals"] for r in records[label].values()],
        }
        for label in LABELS
    }
    bytes_ratio = _ratio(records, "bytes_communicated")
    projected = projection(compute, examples, inner[PARLE])
    figure = _plot(records, figures)
    numbers["scale"] = {
        "test_error": errors,
        "best_set": verdict.as_dict(),
        "paired": pairs,
        "seconds": time_pairs,
        "bytes_ratio_parle_sgd": bytes_ratio,
        "compute": compute,
        "projection": projected,
        "examples": examples,
        "inner_steps": inner,
        "world_size": world,
        "tuning": tuning,
    }
    numbers["scale"]["per_run"] = per_run  # the values behind the table's means
    numbers["scale"]["view"] = {
        "inner": inner[PARLE],
        "inner_entropy": inner[ENTROPY],
        "tuning": tuning,
        "tuning_table": "\n".join(_tuning_table(tuning)) if tuning else None,
        "world": world,
        "nproc": results["config"].get("nproc", 1),
        "n_seeds": len(seeds),
        "batch_size": base.get("batch_size"),
        "table": "\n".join(
            table(
                [
                    "optimizer",
                    "test error (mean ± sd)",
                    "effective epochs",
                    "steps (outer steps of L passes)",
                    "training wall-clock",
                    "MB all-reduced per rank",
                    "all-reduce calls",
                    "ms per pass (measured, 2 ranks)",
                ],
                rows,
            )
        ),
        "lowest": verdict_text(verdict, fmt=lambda v: f"{100 * v:.2f} %"),
        "pairs": list(pairs.items()),
        "time_pairs": list(time_pairs.items()),
        "parle_sgd": pairs[f"{PARLE} - {SGD}"],
        "parle_entropy": pairs[f"{PARLE} - {ENTROPY}"],
        "bytes_ratio": bytes_ratio,
        "figure": figure,
        "compute": compute,
        "examples": examples,
        "projection_table": "\n".join(_projection_table(projected)),
        "projected": projected,
        "entropy_faster": [f"n = {r['n']} ({r['link']})" for r in projected if r[ENTROPY] < r[SGD]],
    }
    return section_text("scale", numbers["scale"]["view"])


def inner_steps(
    records: dict[str, dict[str, Any]], base: dict[str, Any], tuning: dict[str, Any] | None, label: str
) -> int | None:
    """L of ``label`` as its runs ran it: the passes per outer step their records report (all runs of a sweep
    share it: the tuned value when the search chose it); from the config with the chosen values applied when no
    record says (an older record); None when neither does."""
    ran = {int(r["passes_per_step"]) for r in records[label].values() if r.get("passes_per_step")}
    if len(ran) > 1:
        raise ValueError(f"scale: the runs of {label!r} ran different L ({sorted(ran)}); one L per optimizer expected")
    if ran:
        return ran.pop()
    config = with_chosen(base, tuning["chosen"] if tuning else {})
    spec = next((o for i, o in enumerate(config["optimizers"]) if optimizer_label(o, i) == label), {})
    value = (spec.get("options") or {}).get("inner_steps")
    return int(value) if value is not None else None


def _tuning(results: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`sweep_tuning`, plus per tuned label the space it searched in the end (after any extension) and the
    validation error its chosen values reached on the tuning seeds; None when the sweep tuned none."""
    tuning = sweep_tuning(results)
    if tuning is None:
        return None
    records = results["tuning"]["optimizers"]
    tuning["space"] = {label: r.get("space") or {} for label, r in records.items()}
    tuning["objective"] = {label: r.get("objective") for label, r in records.items()}
    return tuning


def _tuning_table(tuning: dict[str, Any]) -> Lines:
    """One row per tuned optimizer: the value it chose of each hyperparameter (— where it searched none), the range
    or choices it searched, and the validation error reached on the tuning seeds."""
    names = sorted({name for chosen in tuning["chosen"].values() for name in chosen})
    rows = [
        [
            f"`{label}`",
            *(fmt(chosen.get(name)) for name in names),
            "; ".join(f"{name} {_searched(d)}" for name, d in tuning["space"].get(label, {}).items()),
            f"{100 * tuning['objective'][label]:.2f} %" if tuning["objective"].get(label) is not None else "—",
        ]
        for label, chosen in tuning["chosen"].items()
    ]
    header = ["optimizer", *(f"`{name}`" for name in names), "searched", "validation error (tuning seeds)"]
    return table(header, rows)


def _searched(d: dict[str, Any]) -> str:
    """A searched dimension as the tuning record holds it: ``{a, b}`` (choices) or ``[low, high]`` (log)."""
    if d.get("choices") is not None:
        return "{" + ", ".join(str(c) for c in d["choices"]) + "}"
    return f"[{fmt(d['low'])}, {fmt(d['high'])}]{' log' if d.get('log') else ''}"


def _train_examples(step: Path, results: dict[str, Any]) -> int:
    for run in results["runs"]:
        path = step / run["dir"] / "results.json"
        if path.is_file():
            return int(read_json(path)["data"]["sizes"]["train"])
    raise ValueError(f"{step}: no finished run to read the training-set size from")


def _ratio(records: dict[str, dict[str, Any]], key: str) -> float | None:
    shared = set(records[PARLE]) & set(records[SGD])
    if not shared:
        return None
    return float(np.mean([records[PARLE][s][key] / records[SGD][s][key] for s in shared]))


def _projection_table(projected: list[dict[str, Any]]) -> Lines:
    """Seconds per epoch of each method at each n and link, and Parle's speed-up over SGD-DDP."""
    links = list(dict.fromkeys(r["link"] for r in projected))
    header = ["workers n"] + [f"{label} s/epoch ({link})" for link in links for label in (SGD, ENTROPY, PARLE)]
    header += [f"Parle speed-up over SGD-DDP ({link})" for link in links]
    body = []
    for n in dict.fromkeys(r["n"] for r in projected):
        cells = [str(n)]
        mine = {r["link"]: r for r in projected if r["n"] == n}
        cells += [f"{mine[link][label]:.3f}" for link in links for label in (SGD, ENTROPY, PARLE)]
        cells += [f"{mine[link]['speedup']:.2f}x" for link in links]
        body.append(cells)
    return table(header, body)


def _plot(records: dict[str, dict[str, Any]], figures: Path) -> str | None:
    """Test error (mean over seeds) against training seconds and against MB all-reduced per rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(records.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in LABELS:
        runs = list(records[label].values())
        if not runs:
            continue
        length = min(len(r["rows"]) for r in runs)
        curves = {
            key: [float(np.mean([r["rows"][i].get(key) or 0 for r in runs])) for i in range(length)]
            for key in ("test_error", "seconds", "bytes_communicated")
        }
        error = [100 * e for e in curves["test_error"]]
        axes[0].plot(curves["seconds"], error, marker="o", ms=3, label=label)
        axes[1].plot([b / 1e6 for b in curves["bytes_communicated"]], error, marker="o", ms=3, label=label)
    axes[0].set(xlabel="training wall-clock (s, 2 processes)", ylabel="test error (%)")
    axes[1].set(xlabel="MB all-reduced per rank", xscale="symlog")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(figures / "scale.png", dpi=110)
    plt.close(fig)
    return f"{figures.name}/scale.png"
