"""What a training run's results say, as plain data for the report's templates: the answer (the lowest final test
error and each error's Wilson interval over the test examples), what ran with the values it ran with, the flatness
measured and what failed, the density, the points a log axis cannot show and the data-parallel traffic.

Everything here reads a ``results.json`` dict and returns dicts, lists and strings; nothing is drawn or written
(:mod:`localentropy.experiments.training.report` draws and writes).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import torch

from localentropy.entropy.optim.local_entropy import DEFAULT_SAMPLER_OPTIONS
from localentropy.entropy.presets import INNER_LOOP_PRESETS
from localentropy.experiments.training.config import MEASURES
from localentropy.experiments.training.optim import ENTROPY_KINDS, SAMPLER_KINDS
from localentropy.experiments.training.parallel import backend_for
from localentropy.experiments.tuning.record import value_text

DASH = "—"
DENSITY_FLOOR = 1e-6  # density.png draws each curve down to this fraction of its peak (lower values at it)
# the results table's heading of each flatness measure that has a column (the density has a figure instead)
MEASURE_HEADINGS = {
    "top_eigenvalue": "top eigenvalue",
    "trace": "trace ± MCSE",
    "sharpness": "eps-sharpness",
    "local_entropy": "‖g_LE‖ ± MCSE / ‖∇f‖",
    "llc": "LLC ± MCSE",
}


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell's number: ``digits`` significant digits (an int as it is), a dash for none or a non-finite one."""
    if value is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    x = float(value)
    return f"{x:.{digits}g}" if math.isfinite(x) else DASH


def communication(results: dict[str, Any]) -> dict[str, Any] | None:
    """The data-parallel section's data: world size, backend and each optimizer's traffic (None for one process)."""
    world = results.get("world_size", 1)
    if world <= 1:
        return None
    rows = []
    for rec in results["records"]:
        per_step = rec.get("bytes_communicated", 0) / max(rec.get("steps") or 1, 1)
        rows.append(
            {
                "label": rec["label"],
                "bytes": f"{rec.get('bytes_communicated', 0):,}",
                "calls": f"{rec.get('collective_calls', 0):,}",
                "per_step": f"{per_step:,.0f}",
                "seconds": fmt((rec.get("final") or {}).get("seconds")),
            }
        )
    return {
        "world": world,
        "backend": backend_for(torch.device(results.get("device") or "cpu")),
        "batch_size": results["config"]["batch_size"],
        "rows": rows,
    }


def _settings(options: dict[str, Any]) -> list[str]:
    """``name = value`` for each option, sorted; a table's entries (a wrapper's sampler) as ``name.key = value``."""
    out = []
    for k, v in sorted(options.items()):
        if isinstance(v, dict):
            out += [f"{k}.{kk} = {value_text(vv)}" for kk, vv in sorted(v.items())]
        else:
            out.append(f"{k} = {value_text(v)}")
    return out


def schedule_text(schedule: dict[str, Any] | None) -> str | None:
    """The learning-rate schedule in words (None when the config records none)."""
    if not isinstance(schedule, dict):
        return None
    kind = schedule.get("kind", "constant")
    factor = f"lr multiplied by {value_text(schedule.get('gamma'))}"
    if kind == "step":
        return f"{factor} every {schedule['step_size']} epoch(s)"
    if kind == "multistep":
        return f"{factor} at epochs {', '.join(map(str, schedule['milestones']))}"
    if kind == "cosine":
        return f"cosine decay of lr to {value_text(schedule.get('min_lr', 0.0))}"
    return "constant lr"


def _sampler_text(spec: dict[str, Any]) -> str | None:
    """The inner sampler that ran, with its settings: the configured one, a preset's, or Parle's default."""
    if spec.get("kind") not in SAMPLER_KINDS:
        return None
    options = dict(spec.get("sampler_options") or {})
    preset = spec.get("preset")
    if spec.get("sampler"):
        name, whose = spec["sampler"], ""
    elif preset and spec.get("kind") in ENTROPY_KINDS and preset in INNER_LOOP_PRESETS:
        name, whose = INNER_LOOP_PRESETS[preset].sampler, "the preset's"
    elif spec.get("kind") == "parle":
        name, whose = "sgld", "the default"
        options = {**DEFAULT_SAMPLER_OPTIONS, **options}
    else:
        return None
    settings = _settings(options)
    inner = "; ".join(part for part in (whose, ", ".join(settings)) if part)
    return f"inner sampler `{name}`" + (f" ({inner})" if inner else "")


def _optimizers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Each optimizer as it ran: label, kind, lr and options, preset, inner sampler, its own schedule."""
    out = []
    for spec in config.get("optimizers", []):
        values = ([f"lr = {value_text(spec['lr'])}"] if spec.get("lr") is not None else []) + _settings(
            spec.get("options") or {}
        )
        out.append(
            {
                "label": spec.get("label"),
                "kind": spec.get("kind"),
                "ran_with": values,
                "preset": spec.get("preset"),
                "sampler": _sampler_text(spec),
                "schedule": schedule_text(spec.get("schedule")),
            }
        )
    return out


def _is_text(results: dict[str, Any]) -> bool:
    """Whether the run trained a language model on a token stream (its data info names a vocabulary)."""
    return "vocabulary_size" in (results.get("data") or {})


def what_ran(results: dict[str, Any]) -> dict[str, Any]:
    """What ran: data, model, batch size, budget, schedule, each optimizer's values, device and precision."""
    config, data, model = results["config"], results.get("data") or {}, results.get("model") or {}
    text = _is_text(results)
    sizes = data.get("sizes") or {}
    unit = ("characters" if data.get("unit") == "char" else "tokens") if text else "examples"
    budget = (
        f"{config['epochs']} epochs per optimizer"
        if config.get("epochs") is not None
        else f"{value_text(config['effective_epochs'])} effective epochs per optimizer"
    )
    return {
        "source": data.get("source") or (config.get("data") or {}).get("source"),
        "sizes": sizes if {"train", "validation", "test"} <= set(sizes) else None,
        "unit": unit,
        "seed": config.get("seed"),
        "model": model.get("name") or (config.get("model") or {}).get("name"),
        "parameters": model.get("parameters"),
        "batch_size": config.get("batch_size"),
        "budget": budget,
        "schedule": schedule_text(config.get("schedule")),
        "clip": value_text(config["clip_grad_norm"]) if config.get("clip_grad_norm") is not None else None,
        "bptt": config.get("bptt") if text else None,
        "optimizers": _optimizers(config),
        "device": results.get("device") or (results.get("meta") or {}).get("device") or "cpu",
        "precision": results.get("precision") or "32-true",  # schema 1 predates precision: float32 throughout
    }


def wilson_interval(errors: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ``errors / n`` at confidence ``level``."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = errors / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _test_examples(results: dict[str, Any]) -> int | None:
    """The independent test examples an error rate is a proportion of (None for a token stream: its tokens are
    not independent, and the error is over the predicted tokens, not the stream's length)."""
    n = ((results.get("data") or {}).get("sizes") or {}).get("test")
    return n if isinstance(n, int) and n > 0 and not _is_text(results) else None


def _finished(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The optimizers that finished with a final test error, lowest first, each with its Wilson interval when the
    error is a count of the recorded test examples."""
    n = _test_examples(results)
    out = []
    for rec in results["records"]:
        error = (rec.get("final") or {}).get("test_error")
        if rec["status"] != "ok" or error is None or not math.isfinite(error):
            continue
        entry = {"label": rec["label"], "error": error, "text": f"{100 * error:.2f} %", "low": None, "high": None}
        wrong = round(error * n) if n else None
        if n and abs(error * n - wrong) < 1e-6 * n:
            entry["low"], entry["high"] = wilson_interval(wrong, n)
            entry["interval"] = f"{100 * entry['low']:.2f} to {100 * entry['high']:.2f} %"
        else:
            entry["interval"] = None
        out.append(entry)
    return sorted(out, key=lambda e: e["error"])


def answer(results: dict[str, Any]) -> dict[str, Any]:
    """The answer's data: the lowest final test error (ties kept), the others whose intervals overlap its and
    those whose lie above it, and the optimizers that did not finish (named, never ranked)."""
    finished = _finished(results)
    lowest = [e for e in finished if e["error"] == finished[0]["error"]] if finished else []
    others = finished[len(lowest) :]
    top = lowest[0]["high"] if lowest else None
    overlap = [e for e in others if top is not None and e["low"] is not None and e["low"] <= top]
    above = [e for e in others if top is not None and e["low"] is not None and e["low"] > top]
    return {
        "lowest": lowest,
        "overlap": overlap,
        "above": above,
        "several": len(finished) > 1,
        "test_examples": _test_examples(results) if any(e["interval"] for e in finished) else None,
        "text": _is_text(results),
        "not_finished": [
            {"status": status, "labels": [r["label"] for r in results["records"] if r["status"] == status]}
            for status in dict.fromkeys(r["status"] for r in results["records"] if r["status"] != "ok")
        ],
        "intervals": {e["label"]: e["interval"].removesuffix(" %") for e in finished if e["interval"]},
    }


def _measured(records: list[dict[str, Any]]) -> list[str]:
    """The flatness measures some optimizer's record holds (asked for and run: a text run measures none)."""
    held = {m for rec in records for m, v in (rec.get("flatness") or {}).items() if isinstance(v, dict)}
    return [m for m in MEASURES if m in held]


def _first_result(records: list[dict[str, Any]], measure: str) -> dict[str, Any]:
    """The first record's result of ``measure`` (its settings, such as the trace's samples, are every record's)."""
    return next(v for rec in records if isinstance(v := (rec.get("flatness") or {}).get(measure), dict))


def flatness(results: dict[str, Any]) -> dict[str, Any] | None:
    """What the flatness columns measured, on how many examples, and what failed or stopped short (None when no
    measure ran)."""
    records = results["records"]
    measured = _measured(records)
    if not measured:
        return None
    fl = results["config"].get("flatness") or {}
    first = {m: _first_result(records, m) for m in measured}

    def setting(measure: str, key: str, field: str) -> str:  # as the results record it, else as configured
        value = first[measure].get(key) if measure in first else None
        return value_text(value if value is not None else fl.get(field))

    le = fl.get("local_entropy") or {}
    texts = {
        "top_eigenvalue": "top Hessian eigenvalue (power iteration)",
        "trace": f"trace (Hutchinson, {setting('trace', 'samples', 'hutchinson_samples')} Rademacher "
        "vectors, ± one MCSE)",
        "sharpness": f"Keskar eps-sharpness (eps = {setting('sharpness', 'epsilon', 'sharpness_epsilon')}, in %)",
        "local_entropy": f"local-entropy gradient norm (full training loss, gamma = {value_text(le.get('gamma'))}, "
        f"T = {value_text(le.get('temperature'))}) beside the gradient norm",
        "llc": "local learning coefficient ± MCSE (SGLD on the full training set, localentropy.llc)",
    }
    failed, unconverged = [], []
    for rec in records:
        for m in measured:
            value = (rec.get("flatness") or {}).get(m)
            if isinstance(value, dict) and value.get("error"):
                error = str(value["error"]).splitlines()[0].rstrip(".")
                failed.append({"label": rec["label"], "measure": m, "error": error})
            elif m == "top_eigenvalue" and isinstance(value, dict) and value.get("converged") is False:
                unconverged.append({"label": rec["label"], "iterations": value.get("iterations")})
    examples = next((f["examples"] for rec in records if (f := rec.get("flatness") or {}).get("examples")), None)
    return {
        "examples": examples,
        "measured": [texts[m] for m in measured if m != "density"],
        "columns": [m for m in measured if m in MEASURE_HEADINGS],
        "failed": failed,
        "unconverged": unconverged,
        "tol": value_text(fl.get("power_tol")),
    }


def densities(records: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(label, SLQ density) of each record that holds one on a grid."""
    out = []
    for rec in records:
        density = (rec.get("flatness") or {}).get("density")
        if isinstance(density, dict) and density.get("grid"):
            out.append((rec["label"], density))
    return out


def density(results: dict[str, Any]) -> dict[str, Any] | None:
    """The density section's data: the Lanczos runs and steps the records hold (None when none holds a density)."""
    drawn = densities(results["records"])
    if not drawn:
        return None
    nodes = [run for _, d in drawn for run in d.get("nodes") or []]
    labels = {label for label, _ in drawn}
    return {
        "runs": max(len(d.get("nodes") or []) for _, d in drawn),
        "steps": max((len(run) for run in nodes), default=None),
        "broadening": value_text((results["config"].get("flatness") or {}).get("broadening")),
        "missing": [r["label"] for r in results["records"] if r["status"] == "ok" and r["label"] not in labels],
        "floor": f"{DENSITY_FLOOR:g}",
    }


def clipped(records: list[dict[str, Any]]) -> list[str]:
    """What the log-scaled test-error axes of curves.png cannot show: each optimizer's points at 0 %."""
    notes = []
    for rec in records:
        zero = [row.get("epoch") for row in rec["rows"] if row.get("test_error") is not None and row["test_error"] <= 0]
        if zero:
            notes.append(f"`{rec['label']}` at epoch(s) {', '.join(map(str, zero))}")
    return notes
