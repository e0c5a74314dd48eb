"""Recurrent networks: does Entropy-SGD / Entropy-Adam train an LSTM in fewer effective epochs or seconds?

Two sweeps (``recurrent_char``: a char-LSTM on the Markov source, whose entropy rate is the floor; ``recurrent_row``:
a row-LSTM on MNIST-5k). Each sweep tunes every optimizer alike before its runs (its ``[tuning]``: the values chosen
on validation and those at an edge of their range are read from results.json by
:func:`~localentropy.experiments.reproduce.findings.common.sweep_tuning`); every comparison is paired over the seeds.
The level to reach is fixed before looking at the methods: :data:`TEXT_MARGIN` bits per character above the
source's entropy rate for text, :data:`IMAGE_LEVEL` test error for images.
:func:`write_section` renders this section alone into a document of its own (``findings.write_recurrent``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.plots import save_figure
from localentropy.experiments.reproduce.claims import Claim, difference_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    mean_sd,
    paired,
    pm,
    sweep_entries,
    sweep_tuning,
    table,
)
from localentropy.experiments.reproduce.findings.cost import first_reach
from localentropy.experiments.reproduce.findings.render import section_text
from localentropy.experiments.sweeps.summary import groups

PAIRS = (("entropy-sgd", "sgd"), ("entropy-adam", "adam"))
ORDER = ("sgd", "adam", "entropy-sgd", "entropy-adam")
# the levels to reach, set independently of the methods: text, this far above the source's entropy rate (the
# distance within which issue 35 asks every optimizer to end: trained to convergence); images, this test error
TEXT_MARGIN = 0.05
IMAGE_LEVEL = 0.10


def _chosen(items: list[dict[str, Any]], score_key: str) -> dict[str, dict[str, Any]]:
    """Per optimizer, its runs: a tuned sweep runs one setting per optimizer (the tuning's chosen values), kept
    whatever its seeds did; several settings (a grid), the one whose seeds all finished with the lowest mean final
    ``score_key`` (validation)."""
    best: dict[str, dict[str, Any]] = {}
    all_groups = groups(items)
    for g in all_groups:
        if sum(other["label"] == g["label"] for other in all_groups) == 1:
            best[g["label"]] = g
            continue
        scores = [e["final"].get(score_key) for e in g["ok"]]
        if not g["ok"] or len(g["ok"]) < g["n"] or any(s is None for s in scores):
            continue
        g = {**g, "score": float(np.mean(scores))}
        if g["label"] not in best or g["score"] < best[g["label"]]["score"]:
            best[g["label"]] = g
    return best


def _by_seed(members: list[dict[str, Any]], fn: Any) -> dict[Any, float]:
    return {e["seed"]: v for e in members if (v := fn(e)) is not None}


def _reach(members: list[dict[str, Any]], level: float, key: str, metric: str) -> dict[Any, float]:
    """Per seed, the first ``key`` at which ``metric`` is at or below ``level``. Effective epochs to a tenth: the
    curves are evaluated once per pass, and an entropy method's pass ends within its last outer step (L inner steps),
    a few thousandths of an epoch off the others' (otherwise a constant 0.004-epoch offset reads as a difference)."""
    reach = _by_seed(members, lambda e: first_reach(e["curve"], level, key, metric))
    return {seed: round(v, 1) for seed, v in reach.items()} if key == "effective_epochs" else reach


def _values(chosen: dict[str, Any], at_edge: list[str]) -> str:
    """A tuned optimizer's chosen values, those at an edge of their range marked: ``lr 0.012 (edge), ...``."""
    return ", ".join(f"{k} {v:.3g}" + (" (edge)" if k in at_edge else "") for k, v in chosen.items()) or "as configured"


def _plot(chosen: dict[str, dict[str, Any]], metric: str, floor: float | None, ylabel: str, path: Path) -> Path:
    fig = Figure(figsize=(12, 4.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9, wspace=0.2)
    axes = fig.subplots(1, 2)
    for label in [lab for lab in ORDER if lab in chosen]:
        curves = [e["curve"] for e in chosen[label]["ok"]]
        n = min(len(c) for c in curves)
        y = np.array([[c[i].get(metric) for i in range(n)] for c in curves], dtype=float)
        for ax, key in zip(axes, ("effective_epochs", "seconds"), strict=True):
            x = np.array([[c[i].get(key) or 0.0 for i in range(n)] for c in curves], dtype=float).mean(axis=0)
            line = ax.plot(
                x,
                y.mean(axis=0),
                marker="o",
                markersize=3,
                label=label,
                linestyle="--" if label.startswith("entropy") else "-",
            )[0]
            ax.fill_between(x, y.min(axis=0), y.max(axis=0), color=line.get_color(), alpha=0.15)
    for ax, xlabel in zip(
        axes,
        ("effective epochs (forward-backward passes / training size)", "training seconds (mean over seeds)"),
        strict=True,
    ):
        if floor is not None:
            ax.axhline(floor, color="black", linestyle=":", linewidth=1.0, label="entropy rate (floor)")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"held-out {ylabel}: mean over seeds, band from min to max")
    return save_figure(fig, path)


def _task(out: Path, step: str, figures: Path | None, text: bool) -> dict[str, Any]:
    """The tuning, the reach level and the paired comparisons of one sweep step (its figure drawn into ``figures``
    unless None)."""
    results, items = sweep_entries(out / step)
    metric, score = ("test_bits_per_char", "val_bits_per_char") if text else ("test_error", "val_error")
    final_key = "bits_per_char" if text else "test_error"
    chosen = _chosen(items, score)
    floor = next((e["final"].get("entropy_rate") for e in items if e["final"]), None) if text else None
    # each seed samples its own text: the count model's held-out bits, one per seed
    count = (
        {e["seed"]: e["final"]["count_model_bits"] for e in items if e["final"].get("count_model_bits") is not None}
        if text
        else {}
    )
    finals = {lab: _by_seed(g["ok"], lambda e: e["final"].get(final_key)) for lab, g in chosen.items()}
    level = (None if floor is None else floor + TEXT_MARGIN) if text else IMAGE_LEVEL
    reach = (
        {
            lab: {key: _reach(g["ok"], level, key, metric) for key in ("effective_epochs", "seconds")}
            for lab, g in chosen.items()
        }
        if level is not None
        else {lab: {"effective_epochs": {}, "seconds": {}} for lab in chosen}
    )
    pairs = {}
    for a, b in PAIRS:
        if a in chosen and b in chosen:
            pairs[f"{a} - {b}"] = {
                "reach_epochs": paired(reach[a]["effective_epochs"], reach[b]["effective_epochs"]),
                "reach_seconds": paired(reach[a]["seconds"], reach[b]["seconds"]),
                "final": paired(finals[a], finals[b]),
            }
    means = {lab: mean_sd(list(v.values()))[0] for lab, v in finals.items()}
    name = f"{step}.png"
    if figures is not None:
        _plot(chosen, metric, floor, "bits per character" if text else "test error", figures / name)
    return {
        "results": results,
        "chosen": chosen,
        "tuning": sweep_tuning(results),
        "floor": floor,
        "count_model": count,
        "finals": finals,
        "means": means,
        "above_floor": {} if floor is None else {lab: m - floor for lab, m in means.items() if m is not None},
        "level": level,
        "reach": reach,
        "pairs": pairs,
        "figure": None if figures is None else f"{figures.name}/{name}",
        "seeds": len({e["seed"] for e in items}),
        "budget": results["config"]["base"].get("effective_epochs"),
        "schedule": (results["config"]["base"].get("schedule") or {}).get("kind", "constant"),
    }


def _rows(task: dict[str, Any], scale: float, digits: int, unit: str) -> list[list[str]]:
    tuning = task["tuning"] or {"chosen": {}, "at_edge": {}}
    rows = []
    for lab in [lab for lab in ORDER if lab in task["chosen"]] + sorted(set(task["chosen"]) - set(ORDER)):
        g = task["chosen"][lab]
        ep, sec = task["reach"][lab]["effective_epochs"], task["reach"][lab]["seconds"]
        missing = len(g["ok"]) - len(ep)
        lost = g["n"] - len(g["ok"])
        rows.append(
            [
                lab,
                _values(tuning["chosen"].get(lab, {}), tuning["at_edge"].get(lab, [])),
                pm(list(task["finals"][lab].values()), scale, digits, unit) + (f" ({lost} diverged)" if lost else ""),
                pm(list(ep.values()), 1, 1) + (f" ({missing} never)" if missing else ""),
                pm(list(sec.values()), 1, 1),
                pm([e["final"]["seconds"] for e in g["ok"]], 1, 1),
            ]
        )
    if task["count_model"]:
        rows.append(
            [
                "count model (order 2, fitted on the training block)",
                "—",
                pm(list(task["count_model"].values()), scale, digits, unit),
                "—",
                "—",
                "—",
            ]
        )
    if task["floor"] is not None:
        rows.append(
            ["exact floor (the source's entropy rate)", "—", f"{task['floor'] * scale:.{digits}f}{unit}"] + ["—"] * 3
        )
    return rows


def recurrent_claims(step_dir: Path) -> list[Claim]:
    """Per pair (Entropy-SGD - SGD, Entropy-Adam - Adam), each at its value chosen on validation: the paired
    differences in effective epochs and seconds to the level and in the final held-out value."""
    text = step_dir.name.endswith("char")
    task = _task(step_dir.parent, step_dir.name, None, text)
    final = (1.0, "bits per character", 3) if text else (100.0, "points", 2)
    kinds = (
        ("reach_epochs", "effective epochs to the level", 1.0, "effective epochs", 1),
        ("reach_seconds", "seconds to the level", 1.0, "s", 1),
        ("final", "final held-out", *final),
    )
    return [
        difference_claim(f"{step_dir.name}/{name}: {key}", f"{words}, `{name}`", d[key], scale, unit, digits)
        for name, d in task["pairs"].items()
        for key, words, scale, unit, digits in kinds
    ]


def section_recurrent(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    char = _task(out, "recurrent_char", figures, text=True)
    row = _task(out, "recurrent_row", figures, text=False)
    numbers["recurrent"] = {
        name: {k: v for k, v in t.items() if k not in ("results", "chosen")}
        for name, t in (("char", char), ("row", row))
    }
    header = [
        "optimizer",
        "chosen (tuned on validation)",
        "final held-out",
        "effective epochs to the level",
        "seconds to the level",
        "training seconds",
    ]

    def view(task: dict[str, Any], scale: float, digits: int, unit: str) -> dict[str, Any]:
        return {
            "seeds": task["seeds"],
            "budget": task["budget"],
            "schedule": task["schedule"],
            "floor": task["floor"],
            "count_model": mean_sd(list(task["count_model"].values()))[0],
            "level": task["level"],
            "margin": TEXT_MARGIN,
            "tuning": task["tuning"],
            "above_floor": task["above_floor"],
            "within": sorted(lab for lab, gap in task["above_floor"].items() if gap <= TEXT_MARGIN),
            "methods": len(task["chosen"]),
            "table": "\n".join(table(header, _rows(task, scale, digits, unit))),
            "pairs": list(task["pairs"].items()),
            "figure": task["figure"],
            "timing": task["results"].get("timing"),
        }

    numbers["recurrent"]["view"] = {"char": view(char, 1.0, 4, " bits"), "row": view(row, 100.0, 2, " %")}
    return section_text("recurrent", numbers["recurrent"]["view"])


def write_section(
    out: str | Path, doc: str | Path, replication: Callable[[Lines, str], tuple[Lines, str]] | None = None
) -> Path:
    """This section alone, as ``doc`` (figures and numbers in ``<doc stem>/``), from a reproduction's ``out``;
    ``replication`` adds the replication of its claims (the findings package's :func:`write_recurrent` passes it)."""
    out, doc = Path(out), Path(doc)
    figures = doc.parent / doc.stem
    figures.mkdir(parents=True, exist_ok=True)
    numbers: dict[str, Any] = {}
    lines, summary = section_recurrent(out, figures, numbers)
    if replication is not None:
        lines, summary = replication(lines, summary)
    commits = sorted(
        {
            str(sweep_entries(out / s)[0].get("meta", {}).get("git_commit") or "")[:12]
            for s in ("recurrent_char", "recurrent_row")
        }
        - {""}
    )
    head = [
        "# Findings: recurrent networks",
        "",
        f"> Written by `write_recurrent` from `localentropy reproduce --steps recurrent_char,recurrent_row` "
        f"(steps run at commit {', '.join(commits) or 'unknown'}); every number below comes from those runs.",
        "",
        f"* {summary}",
        "",
    ]
    atomic_write_json(figures / "findings.json", numbers)
    atomic_write_bytes(doc, "\n".join(head + lines).encode())
    return doc
