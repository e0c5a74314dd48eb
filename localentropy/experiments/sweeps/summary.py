"""What a sweep's results say, before any of it is drawn or written: its runs as entries (one per run and
optimizer), grouped into settings with statistics over seeds, each optimizer's best setting, and the answer (the
lowest optimizer at its best setting, the best set over the seeds, the paired differences to it).

A *setting* is an optimizer's values of the swept fields that apply to it (the seed aside): a swept ``gamma`` is
part of Entropy-SGD's settings, not of Adam's. Statistics over seeds
use the runs that finished (status "ok"); diverged and failed runs are counted beside them. The best setting of an
optimizer is chosen by the mean final *validation* error (the test error when there is no validation set), among
settings whose every seed finished when there is one.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from localentropy.diagnostics.compare import best_set, divergence_text, mean_interval, paired_difference, paired_ratio
from localentropy.experiments.sweeps.figures import IGNORED_AXES, Settings, setting_text, value_text


def entries(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per run and optimizer: label, kind, seed, settings, status, final numbers and curve."""
    base_labels = [o.get("label", o.get("kind")) for o in results["config"]["base"].get("optimizers", [])]
    order = [a["key"] for a in results["axes"]]
    out = []
    for run in results["runs"]:
        overrides, touched = run["overrides"], run.get("touched", {})
        records = run.get("records") or []
        if not records:  # a failed run: its optimizers from the selection or the base config
            labels = [overrides["optimizer"]] if "optimizer" in overrides else base_labels
            records = [
                {
                    "label": label,
                    "kind": None,
                    "status": "failed",
                    "message": run.get("message"),
                    "final": None,
                    "curve": [],
                }
                for label in labels
            ]
        for rec in records:
            label = rec["label"]
            settings = tuple(
                (k, value_text(overrides[k]))
                for k in order
                if k in overrides and k not in IGNORED_AXES and (touched.get(k) is None or label in touched[k])
            )
            status = "failed" if run["status"] == "failed" else rec["status"]
            out.append(
                {
                    "run": run["id"],
                    "label": label,
                    "kind": rec.get("kind"),
                    "seed": overrides.get("seed"),
                    "settings": settings,
                    "status": status,
                    "message": rec.get("message") or run.get("message"),
                    "final": rec.get("final") if status == "ok" else None,
                    "curve": rec.get("curve") or [],
                }
            )
    return out


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _sd(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def groups(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries grouped by (optimizer, settings), with statistics over the seeds that finished."""
    table: dict[tuple[str, Settings], list[dict[str, Any]]] = {}
    for e in items:
        table.setdefault((e["label"], e["settings"]), []).append(e)
    out = []
    for (label, settings), members in table.items():
        ok = [m for m in members if m["status"] == "ok" and m["final"]]

        def final(key: str, ok: list[dict[str, Any]] = ok) -> list[float]:
            return [float(m["final"][key]) for m in ok if m["final"].get(key) is not None]

        tests = final("test_error")
        out.append(
            {
                "label": label,
                "kind": next((m["kind"] for m in members if m["kind"]), None),
                "settings": settings,
                "members": members,
                "ok": ok,
                "n": len(members),
                "diverged": sum(m["status"] == "diverged" for m in members),
                "failed": sum(m["status"] == "failed" for m in members),
                "test_mean": _mean(tests),
                "test_sd": _sd(tests),
                "val_mean": _mean(final("val_error")),
                "grad_evals": _mean(final("grad_evals")),
                "effective_epochs": _mean(final("effective_epochs")),
                "seconds": _mean(final("seconds")),
                "seconds_sd": _sd(final("seconds")),
            }
        )
    return out


def best_groups(all_groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per optimizer, the setting with the lowest mean validation error (test error without a validation set)."""
    best: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(g["label"] for g in all_groups):
        mine = [g for g in all_groups if g["label"] == label and g["ok"]]
        if not mine:
            continue
        complete = [g for g in mine if len(g["ok"]) == g["n"]] or mine

        def score(g: dict[str, Any]) -> float:
            value = g["val_mean"] if g["val_mean"] is not None else g["test_mean"]
            return math.inf if value is None else value

        best[label] = min(complete, key=score)
    return best


def _by_seed(g: dict[str, Any], key: str) -> dict[Any, float]:
    """seed -> final ``key`` of a group's finished runs."""
    return {m["seed"]: float(m["final"][key]) for m in g["ok"] if m["final"].get(key) is not None}


def answer(all_groups: list[dict[str, Any]], best: dict[str, dict[str, Any]], varied: bool) -> dict[str, Any] | None:
    """The report's answer: which optimizer (each at its best setting) has the lowest mean final test error, with
    its 95 % t-interval over seeds, the best set over the seeds every optimizer ran (a diverged run counts as a
    diverged unit, ranked out; a failed one drops its seed), and each optimizer's paired difference to the lowest.
    None when no optimizer finished a seed."""
    chosen = [best[label] for label in dict.fromkeys(g["label"] for g in all_groups) if label in best]
    if not chosen:
        return None
    seeds = sorted({m["seed"] for g in chosen for m in g["members"]}, key=str)

    def value(g: dict[str, Any], seed: Any) -> float | None:
        m = next((m for m in g["members"] if m["seed"] == seed), None)
        if m is None or m["status"] == "failed":
            return None
        if m["status"] == "diverged" or not m["final"] or m["final"].get("test_error") is None:
            return math.inf
        return float(m["final"]["test_error"])

    units = [seed for seed in seeds if all(value(g, seed) is not None for g in chosen)]
    verdict = None
    if len(chosen) > 1 and units:
        verdict = best_set({g["label"]: [value(g, seed) for seed in units] for g in chosen}, unit="seed").as_dict()
    groups_by_label = {g["label"]: g for g in chosen}
    lowest_label = (verdict or {}).get("lowest") or min(
        chosen, key=lambda g: math.inf if g["test_mean"] is None else g["test_mean"]
    )["label"]
    low = groups_by_label[lowest_label]

    def described(g: dict[str, Any]) -> dict[str, Any]:
        d = mean_interval(_by_seed(g, "test_error"), unit="seed")
        ci = f" ± {100 * d.half_width:.2f}" if d.half_width is not None else ""
        text = f"{100 * d.mean:.2f}{ci} % (mean{' ± 95 % t-interval' if ci else ''} over {d.n} seeds)"
        return {"label": g["label"], "setting": setting_text(g["settings"]) if varied else "", "text": text}

    differences = []
    for g in chosen:
        if g is low:
            continue
        d = paired_difference(_by_seed(g, "test_error"), _by_seed(low, "test_error"), unit="seed")
        r = paired_ratio(_by_seed(g, "seconds"), _by_seed(low, "seconds"), unit="seed")
        differences.append({"label": g["label"], "difference": d, "ratio": r})
    return {
        "lowest": described(low),
        "verdict": verdict,
        "diverged": divergence_text(verdict, name=lambda k: f"`{k}`") if verdict else "",
        "differences": differences,
    }
