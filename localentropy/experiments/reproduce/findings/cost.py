"""Q1: the cost of Entropy-SGD against SGD, Adam and LPF-SGD in effective epochs and seconds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from localentropy.diagnostics.compare import PairedRatio, paired_ratio
from localentropy.experiments.reproduce.claims import Claim, difference_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    by_seed,
    copy_figure,
    finals,
    fmt,
    mean_sd,
    paired,
    pm,
    select,
    speed_ratio,
    sweep_entries,
    sweep_tuning,
    table,
)
from localentropy.experiments.reproduce.findings.render import section_text
from localentropy.experiments.sweeps.paths import optimizer_label
from localentropy.experiments.tuning.record import tuning_table


def first_reach(curve: list[dict[str, Any]], level: float, key: str, metric: str = "test_error") -> float | None:
    """``key`` (effective epochs, seconds) of the first row whose ``metric`` is at or below ``level``."""
    for row in curve:
        if row.get(metric) is not None and row[metric] <= level + 1e-12 and row.get(key) is not None:
            return float(row[key])
    return None


def _entropy_label(labels: list[str]) -> str:
    return next((lab for lab in labels if lab.startswith("entropy")), labels[0])


def cost_claims(step_dir: Path) -> list[Claim]:
    """Entropy-SGD's final test error minus each other optimizer's at the same effective epochs, paired by seed.
    (The seconds are measurements of the machine under its load, not a quantity the seeds sample: not claims.)"""
    _, items = sweep_entries(step_dir)
    labels = list(dict.fromkeys(e["label"] for e in items))
    entropy = _entropy_label(labels)
    return [
        difference_claim(
            f"cost/{entropy} - {lab}",
            f"final test error, `{entropy}` minus `{lab}`",
            paired(by_seed(select(items, entropy)), by_seed(select(items, lab))),
        )
        for lab in labels
        if lab != entropy
    ]


def section_cost(out: Path, figures: Path, speed: dict[str, Any] | None, numbers: dict[str, Any]) -> tuple[Lines, str]:
    results, items = sweep_entries(out / "cost")
    base = results["config"]["base"]
    labels = list(dict.fromkeys(e["label"] for e in items))
    means = {lab: mean_sd(finals(select(items, lab), "test_error"))[0] for lab in labels}
    level = max(v for v in means.values() if v is not None)
    rows, info = [], {}
    sgd_seconds = mean_sd(finals(select(items, "sgd"), "seconds"))[0]
    for lab in labels:
        mine = [e for e in select(items, lab) if e["final"]]
        secs = finals(mine, "seconds")
        reach_ep = [first_reach(e["curve"], level, "effective_epochs") for e in mine]
        reach_s = [first_reach(e["curve"], level, "seconds") for e in mine]
        ratio = (mean_sd(secs)[0] / sgd_seconds) if sgd_seconds and secs else None
        per_seed = paired_ratio(by_seed(mine, "seconds"), by_seed(select(items, "sgd"), "seconds"), unit="seed")
        spacing = min(
            (r["effective_epochs"] for e in mine for r in e["curve"] if r.get("effective_epochs")), default=None
        )
        info[lab] = {
            "test_error": finals(mine, "test_error"),
            "seconds": secs,
            "reach_epochs": reach_ep,
            "grad_evals": finals(mine, "grad_evals"),
            "effective_epochs": finals(mine, "effective_epochs"),
            "eval_spacing": spacing,
            "reach_seconds": reach_s,
            "seconds_over_sgd": ratio,
            "seconds_ratio_to_sgd": per_seed.as_dict(),
        }
        rows.append(
            [
                lab,
                f"{pm(finals(mine, 'test_error'), 100)} %",
                fmt(mean_sd(finals(mine, "effective_epochs"))[0]),
                fmt(mean_sd(finals(mine, "grad_evals"))[0], 5),
                pm(secs, 1, 0),
                ratio_cell(per_seed),
                pm([r for r in reach_ep if r is not None], 1, 0) + _missing(reach_ep),
                pm([r for r in reach_s if r is not None], 1, 0) + _missing(reach_s),
                str(len(select(items, lab)) - len(mine)),
            ]
        )
    n_seeds = len({e["seed"] for e in items})
    entropy = _entropy_label(labels)
    d_sgd = paired(by_seed(select(items, entropy)), by_seed(select(items, "sgd")))
    d_adam = paired(by_seed(select(items, entropy)), by_seed(select(items, "adam")))
    seconds = {lab: by_seed(select(items, lab), "seconds") for lab in labels}
    numbers["cost"] = {
        "optimizers": info,
        "level": level,
        "entropy_minus_sgd": d_sgd,
        "entropy_minus_adam": d_adam,
        "seconds_by_seed": seconds,
        "timing": results.get("timing"),
    }
    matched_lines, matched = matched_epochs_table(items, labels, entropy)
    numbers["cost"]["matched_epochs"] = matched
    data = base.get("data", {})
    numbers["cost"]["view"] = {
        "data_source": data.get("source", "mnist5k"),
        "batch_size": base.get("batch_size"),
        "effective_epochs": base.get("effective_epochs"),
        "n_seeds": n_seeds,
        "epoch_unit": base.get("epoch_unit", "optimizer"),
        "optimizers": _settings(base, labels),
        "tuning": sweep_tuning(results),
        "tuning_table": _tuning_table(results),
        "searched": {label: len(r.get("space") or {}) for label, r in _tuning_records(results).items()},
        "table": "\n".join(
            table(
                [
                    "optimizer",
                    "final test error (mean ± sd)",
                    "effective epochs",
                    "grad evals",
                    "training seconds (mean ± sd)",
                    "seconds / SGD's (per-seed geometric mean, 95 % CI)",
                    f"effective epochs to reach {100 * level:.2f} %",
                    f"seconds to reach {100 * level:.2f} %",
                    "diverged/failed runs",
                ],
                rows,
            )
        ),
        "level": level,
        "timing": results.get("timing"),
        "time_ratio": time_ratio(
            seconds.get(entropy, {}), seconds.get("sgd", {}), info.get(entropy, {}), results.get("timing")
        ),
        "matched_table": "\n".join(matched_lines),
        "figure": copy_figure(out / "cost" / "curves.png", figures, "cost_curves.png"),
        "d_sgd": d_sgd,
        "d_adam": d_adam,
        "entropy": entropy,
        "inner": speed_ratio(speed, "L=20 preset authors (msgld)") or speed_ratio(speed, "L=5 preset authors (msgld)"),
        "sgd_step": speed_ratio(speed, "sgd", section="samplers"),
        "reach": _reach(info, entropy),
        "entropy_errors": info[entropy]["test_error"],
        "sgd_errors": info.get("sgd", {}).get("test_error", []),
        "adam_errors": info.get("adam", {}).get("test_error", []),
        "lowest_at": _lowest_at(matched, entropy),
    }
    return section_text("cost", numbers["cost"]["view"])


def _settings(base: dict[str, Any], labels: list[str]) -> list[dict[str, Any]]:
    """Per optimizer the sweep ran, what the section says of its configuration: its preset, inner steps and
    learning-rate schedule (in its own epochs), from the sweep's base config."""
    out = []
    for i, opt in enumerate(base.get("optimizers", [])):
        label = optimizer_label(opt, i)
        if label in labels:
            schedule = opt.get("schedule") or base.get("schedule") or {"kind": "constant"}
            inner = (opt.get("options") or {}).get("inner_steps")
            out.append({"label": label, "preset": opt.get("preset"), "inner_steps": inner, "schedule": schedule})
    return out


def _tuning_table(results: dict[str, Any]) -> str | None:
    """The sweep's tuning, one row per optimizer (chosen values, validation error, space searched, edges): the
    sweep report's table; None when it tuned nothing."""
    records = _tuning_records(results)
    if not records:
        return None
    return "\n".join(tuning_table(records, "validation error reached", lambda v: f"{100 * v:.2f} %"))


def _tuning_records(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return (results.get("tuning") or {}).get("optimizers") or {}


def time_ratio(
    a: dict[Any, float], b: dict[Any, float], info: dict[str, Any], timing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """a's training seconds over b's: the paired per-seed ratio with its 95 % interval (t on the log ratio) when
    per-seed times are recorded, else the stored ratio of means (``of_means``), which carries no interval; with the
    sweep's timing record (how many runs at a time, alone or not) for the sentence that states it."""
    ratio = paired_ratio(a, b, unit="seed").as_dict() if a and b else None
    return {"ratio": ratio, "of_means": info.get("seconds_over_sgd"), "timing": timing}


def _reach(info: dict[str, Any], entropy: str) -> dict[str, Any]:
    """When each optimizer first reached the level, in effective epochs (inner steps included): per optimizer
    (Entropy-SGD first) the mean over the runs that did, how many never did and of how many; whom Entropy-SGD was
    faster than by this count, and its evaluation spacing."""

    def mean(label: str) -> float:
        done = [r for r in info.get(label, {}).get("reach_epochs", []) if r is not None]
        return mean_sd(done)[0] if done and len(done) == len(info[label]["reach_epochs"]) else math.inf

    rows = []
    for lab in [entropy, *(lab for lab in info if lab != entropy)]:
        reach = info.get(lab, {}).get("reach_epochs", [])
        done = [r for r in reach if r is not None]
        rows.append({"label": lab, "mean": mean_sd(done)[0], "never": len(reach) - len(done), "runs": len(reach)})
    return {
        "rows": rows,
        "faster": [lab for lab in info if lab != entropy and mean(entropy) < mean(lab)],
        "spacing": info.get(entropy, {}).get("eval_spacing"),
    }


def _lowest_at(matched: dict[str, dict[str, list[float]]], entropy: str) -> dict[str, Any]:
    """At which of Entropy-SGD's evaluation points its mean test error was the lowest of all optimizers: the
    effective epochs as numbers (``matched`` is keyed by their text, as the record stores them)."""
    points = list(matched.get(entropy, {}))
    lowest = []
    for point in points:
        means = {lab: mean_sd(v.get(point, []))[0] for lab, v in matched.items()}
        if means[entropy] is not None and all(
            m is None or means[entropy] < m for lab, m in means.items() if lab != entropy
        ):
            lowest.append(float(point))
    return {"points": len(points), "lowest": lowest}


def matched_epochs_table(items: list[dict[str, Any]], labels: list[str], entropy: str) -> tuple[Lines, dict]:
    """Test error of every optimizer at the effective epochs where Entropy-SGD was evaluated (mean ± sd)."""
    points = sorted(
        {
            round(float(r["effective_epochs"]), 6)
            for e in select(items, entropy)
            for r in e["curve"]
            if r.get("effective_epochs") and r.get("test_error") is not None
        }
    )
    rows, numbers = [], {}
    for lab in labels:
        row, mine = [lab], {}
        for point in points:
            errs = [
                r["test_error"]
                for e in select(items, lab)
                for r in e["curve"]
                if r.get("effective_epochs") is not None
                and abs(r["effective_epochs"] - point) < 1e-6
                and r.get("test_error") is not None
            ]
            mine[point] = errs
            row.append(f"{pm(errs, 100)} %")
        rows.append(row)
        numbers[lab] = {str(k): v for k, v in mine.items()}
    return table(["optimizer", *(f"{p:g} eff. epochs" for p in points)], rows), numbers


def ratio_cell(r: PairedRatio) -> str:
    """A seconds ratio for a table: the geometric mean of the per-seed ratios and its 95 % CI."""
    if r.ratio is None:
        return "—"
    return f"{r.ratio:.3g}" + (f" ({r.low:.3g} to {r.high:.3g})" if r.low is not None else "")


def _missing(values: list[Any]) -> str:
    n = sum(v is None for v in values)
    return f" [{n} never]" if n else ""
