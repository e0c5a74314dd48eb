"""Numbers, tables and loading shared by the sections of the findings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from localentropy.diagnostics.compare import mean_interval, paired_difference
from localentropy.experiments.core.files import atomic_write_bytes
from localentropy.experiments.sweeps.figures import value_text as _text
from localentropy.experiments.sweeps.summary import entries

Lines = list[str]


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def pm(values: list[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """ "mean ± sd" of ``values`` x ``scale`` (sd over seeds or replicates); "—" when there is nothing."""
    m, s = mean_sd(values)
    if m is None:
        return "—"
    text = f"{m * scale:.{digits}f}"
    return f"{text} ± {s * scale:.{digits}f}{unit}" if s is not None else f"{text}{unit}"


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}"


def paired(a: dict[Any, float], b: dict[Any, float]) -> dict[str, Any]:
    """a - b over the seeds both have (the statistics module's paired difference): mean, sd, n, how often a is
    higher / lower, and the 95 % t-interval half-width on n - 1 degrees of freedom (``ci95``)."""
    d = paired_difference(a, b, unit="seed").as_dict()
    return {**d, "ci95": d["half_width"]}


def distinct(d: dict[str, Any]) -> bool:
    """Whether a paired difference is outside its 95 % t-interval, with at least 3 seeds (fewer decide nothing)."""
    return d["n"] >= 3 and d["ci95"] is not None and abs(d["mean"]) > d["ci95"]


def over_seeds(per_seed: dict[Any, list[float]]) -> dict[str, Any]:
    """A contrast measured several times per seed (once per setting of the other factors): averaged within each
    seed first, so that the interval is over the seeds, the independent unit, with n - 1 degrees of freedom."""
    means = {seed: float(np.mean(values)) for seed, values in per_seed.items() if values}
    d = mean_interval(means, unit="seed").as_dict()
    d["pairs"] = sum(len(v) for v in per_seed.values())
    d["identical"] = sum(abs(x) < 1e-12 for v in per_seed.values() for x in v)
    return {**d, "ci95": d["half_width"]}


def table(header: list[str], rows: list[list[str]]) -> Lines:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def sweep_entries(step_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = read_json(step_dir / "results.json")
    return results, entries(results)


def by_seed(items: list[dict[str, Any]], key: str = "test_error") -> dict[Any, float]:
    """seed -> final ``key`` of one setting's runs; several runs of one seed (settings mixed up) is an error."""
    done = [e for e in items if e["final"] and e["final"].get(key) is not None]
    seeds = [e["seed"] for e in done]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"by_seed: several runs per seed ({sorted(seeds, key=str)}): select one setting first")
    return {e["seed"]: float(e["final"][key]) for e in done}


def select(items: list[dict[str, Any]], label: str | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Entries of one optimizer label whose swept settings include ``settings`` (values compared as text)."""
    want = {k: _text(v) for k, v in settings.items()}
    out = []
    for e in items:
        have = dict(e["settings"])
        if (label is None or e["label"] == label) and all(have.get(k) == v for k, v in want.items()):
            out.append(e)
    return out


def finals(items: list[dict[str, Any]], key: str) -> list[float]:
    return [float(e["final"][key]) for e in items if e["final"] and e["final"].get(key) is not None]


def copy_figure(source: Path, figures: Path, name: str) -> str | None:
    """Copy a step's figure next to the document; returns its path relative to the document, or None."""
    if not source.is_file():
        return None
    atomic_write_bytes(figures / name, source.read_bytes())
    return f"{figures.name}/{name}"


def short(d: dict[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    """A paired difference in a few words: mean and 95 % t-interval half-width over the paired seeds."""
    if d["mean"] is None:
        return "no paired seeds"
    ci = f" ± {d['ci95'] * scale:.2f}" if d["ci95"] is not None else ""
    return f"{d['mean'] * scale:+.2f}{ci}{unit}, 95 % CI over {d['n']} seeds"


def speed_ratio(speed: dict[str, Any] | None, row: str, section: str = "entropy") -> float | None:
    if not speed or section not in speed:
        return None
    for r in speed[section]["rows"]:
        if r["row"] == row:
            return r.get("ratio")
    return None


def run_records(step_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = read_json(step_dir / "results.json")
    return results, [r for r in results["records"] if r.get("status") == "ok" and r.get("metrics")]


def group_rows(items: list[dict[str, Any]], label: str, axes: list[str]) -> list[dict[str, Any]]:
    """Per setting of ``axes``: the test errors by seed, their mean and sd, and the failures."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for e in select(items, label):
        have = dict(e["settings"])
        cells.setdefault(tuple(have.get(a) for a in axes), []).append(e)
    out = []
    for key, members in cells.items():
        errs = by_seed(members)
        m, s = mean_sd(list(errs.values()))
        out.append(
            {
                "setting": dict(zip(axes, key, strict=True)),
                "by_seed": errs,
                "mean": m,
                "sd": s,
                "bad": sum(e["status"] != "ok" for e in members),
                "n": len(members),
                "seconds": mean_sd(finals(members, "seconds"))[0],
            }
        )
    return out


def sort_key(text: Any) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(text))


def setting_text(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in setting.items())


def sweep_tuning(results: dict[str, Any]) -> dict[str, Any] | None:
    """How a sweep tuned its optimizers, from its results.json: the trials, the number of tuning seeds, the
    objective, and per tuned label its chosen values and the ranges whose best lay at an edge; None when it tuned
    none."""
    tuning = results.get("tuning") or {}
    records = tuning.get("optimizers") or {}
    if not records:
        return None
    return {
        "trials": tuning.get("trials"),
        "seeds": len(tuning.get("tuning_seeds") or []),
        "objective": tuning.get("objective") or "validation error",
        "chosen": {label: r.get("chosen") or {} for label, r in records.items()},
        "at_edge": {label: [e["name"] for e in r["at_edge"]] for label, r in records.items() if r.get("at_edge")},
    }


def tuned_reference(results: dict[str, Any], label: str = "sgd") -> dict[str, Any] | None:
    """How a sweep tuned one of its optimizers (a factor sweep's reference): its chosen values, the trials, the
    number of tuning seeds and its ranges whose best lay at an edge; None when it was not tuned (the sweep then ran
    the configured values)."""
    tuning = sweep_tuning(results)
    if tuning is None or label not in tuning["chosen"]:
        return None
    return {
        "chosen": tuning["chosen"][label],
        "trials": tuning["trials"],
        "seeds": tuning["seeds"],
        "at_edge": tuning["at_edge"].get(label, []),
    }
