"""The LLC section: which sampler estimates the local learning coefficient best, from the ``llc_samplers`` step.

The step is one comparison per problem (``llc_samplers.toml``: the three exact 2-D toys and a deep linear network);
its ``suite.json`` holds each problem's rows (the LLC's estimate, signed bias with its standard error over the
replicates, RMSE, the estimator's own MCSE, ArviZ's ESS and R-hat of the trace of L, the tuned values) and
verdicts. Every number the section prints is stored under ``numbers["llc"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localentropy.diagnostics.compare import METHOD, best_set, verdict_text
from localentropy.experiments.comparison.suite import SUITE_FILE
from localentropy.experiments.reproduce.claims import Claim, difference_claim, verdict_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    fmt,
    paired,
    pm,
    read_json,
    short,
    sweep_tuning,
    table,
)
from localentropy.experiments.reproduce.findings.render import section_text
from localentropy.experiments.reproduce.findings.samplers import verdicts_now
from localentropy.experiments.reproduce.findings.smoothing import flatness_by_label
from localentropy.llc.problems import TRUTHS
from localentropy.llc.reference import find_reference

STEP = "llc_samplers"
TRAINING = "llc_training"
ENTROPY = "entropy-sgd"
LLC_MEASURE = (("llc", "value", "the LLC"),)  # flatness_by_label's (name, field, words)


def training_llc(step_dir: Path) -> tuple[int, dict[str, dict[str, dict[Any, float]]], dict[str, dict[str, Any]]]:
    """The seeds, label -> {"llc", "test_error"} -> seed -> value, and Entropy-SGD minus each other optimizer in
    LLC and in test error, paired by seed."""
    results, by_label = flatness_by_label(step_dir, LLC_MEASURE)
    others = [label for label in by_label if label != ENTROPY]
    pairs = {
        other: {m: paired(by_label[ENTROPY].get(m, {}), by_label[other].get(m, {})) for m in ("llc", "test_error")}
        for other in others
        if ENTROPY in by_label
    }
    return len(results["runs"]), by_label, pairs


def _relation(higher: list[str], lower: list[str], tied: list[str]) -> str:
    """ "higher than a, lower than b and not told apart from c's", the parts that apply."""
    parts = [f"{words} {_names(names)}" for words, names in (("higher than", higher), ("lower than", lower)) if names]
    parts += [f"not told apart from {_names(tied)}'s"] if tied else []
    return " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)


def llc_training_claims(step_dir: Path) -> list[Claim]:
    """Entropy-SGD minus SGD, SAM and LPF-SGD in the LLC of their final weights, paired by seed."""
    _, _, pairs = training_llc(step_dir)
    return [
        difference_claim(f"{TRAINING}/llc: {ENTROPY} - {other}", f"LLC, `{ENTROPY}` minus `{other}`", d["llc"], 1.0, "")
        for other, d in pairs.items()
    ]


def training_view(step_dir: Path, numbers: dict[str, Any]) -> dict[str, Any]:
    """The LLC along training for the template: each optimizer's LLC and test error over seeds (a table), the paired
    differences, the best set (lowest LLC) and how Entropy-SGD's minima relate to the others'."""
    n_seeds, by_label, pairs = training_llc(step_dir)
    tuning = sweep_tuning(read_json(step_dir / "results.json"))
    llc = {label: m.get("llc", {}) for label, m in by_label.items()}
    shared = sorted(set.intersection(*(set(v) for v in llc.values())), key=str) if llc else []
    verdict = best_set({label: [v[seed] for seed in shared] for label, v in llc.items()}, unit="seed")
    numbers["llc"]["training"] = {
        "seeds": n_seeds,
        "by_label": by_label,
        "paired": pairs,
        "best_set": verdict.as_dict(),
        "tuning": tuning,
    }
    rows = [
        [
            f"`{label}`",
            pm(list(m.get("llc", {}).values()), 1, 2),
            f"{pm(list(m['test_error'].values()), 100, 2)} %",
            "—" if label == ENTROPY else short(pairs[label]["llc"], 1.0, ""),
        ]
        for label, m in by_label.items()
    ]

    def excludes(d: dict[str, Any], sign: int) -> bool:  # the 95 % interval lies on that side of 0
        return d["mean"] is not None and d["ci95"] is not None and sign * d["mean"] - d["ci95"] > 0

    higher = [o for o, d in pairs.items() if excludes(d["llc"], 1)]
    lower = [o for o, d in pairs.items() if excludes(d["llc"], -1)]
    tied = [o for o in pairs if o not in higher and o not in lower]
    return {
        "seeds": n_seeds,
        "table": "\n".join(table(["optimizer", "LLC", "test error", "Entropy-SGD minus this (LLC)"], rows)),
        "best_text": verdict_text(verdict, name=lambda n: f"`{n}`"),
        "relation": _relation(higher, lower, tied),
        "tuning": tuning,
    }


def llc_claims(step_dir: Path) -> list[Claim]:
    """Per problem, the verdict on the squared errors of the LLC (judged again with the statistics module's current
    rule from the per-replicate errors, kept in the claim so that a replication can pool them)."""
    claims = []
    for problem in read_json(step_dir / SUITE_FILE)["problems"]:
        results = read_json(step_dir / problem["label"] / "results.json")
        errors = {
            str(r["key"]["estimator"]): r["metrics"]["squared_errors"]
            for r in results["records"]
            if r.get("status") == "ok" and isinstance((r.get("metrics") or {}).get("squared_errors"), list)
        }
        for v in verdicts_now(results):
            claims.append(
                verdict_claim(
                    f"llc_samplers/{problem['label']}",
                    f"lowest squared error of the LLC on {problem['label']}",
                    v["best"],
                    v.get("n", 0),
                    verdict=v,
                    values=errors,
                )
            )
    return claims


def _tuned(chosen: dict[str, Any] | None) -> str:
    if not chosen:
        return "— (no trial finished: the configured values)"
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in chosen.items())


def _row(r: dict[str, Any]) -> list[str]:
    if r["status"] != "ok":
        return [f"`{r['estimator']}`", _tuned(r["chosen"]), f"{r['status']}", "—", "—", "—", "—", "—"]
    return [
        f"`{r['estimator']}`",
        _tuned(r["chosen"]),
        f"{r['estimate']:.4f}",
        f"{r['bias']:+.4f} ± {r['bias_se']:.4f}",
        f"{r['rmse']:.4f}",
        f"{r['mean_mcse']:.4f}",
        fmt(r["min_ess_bulk"], 3),
        fmt(r["max_rhat"], 4),
    ]


def _names(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "none"


def answer(problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Which samplers are in the best set on every problem, on some, and which are separated or diverged where;
    per problem the lowest, its RMSE, the size of the best set, the samplers the rank test would rank out (the
    t-test governs) and the largest RMSE in the best set."""
    samplers = list(dict.fromkeys(r["estimator"] for p in problems for r in p["rows"]))
    best = {p["label"]: set(p["verdicts"][0]["best"]) if p["verdicts"] else set() for p in problems}
    per_problem = {}
    for p in problems:
        v = p["verdicts"][0] if p["verdicts"] else None
        rmse = {r["estimator"]: r.get("rmse") for r in p["rows"] if r["status"] == "ok"}
        in_set = [name for name in rmse if v and name in v["best"]]
        per_problem[p["label"]] = {
            "lowest": v["lowest"] if v else None,
            "lowest_rmse": rmse.get(v["lowest"]) if v else None,
            "best_size": len(in_set),
            "rank_test_out": [
                c["name"] for c in (v or {}).get("comparisons", []) if c.get("agree") is False and c["name"] in in_set
            ],
            "largest_rmse_in_set": max(in_set, key=lambda name: rmse[name]) if in_set else None,
            "largest_rmse": max((rmse[name] for name in in_set), default=None),
            "diverged": sorted(r["estimator"] for r in p["rows"] if r["status"] != "ok"),
            "bias_range": [
                min(r["bias"] for r in p["rows"] if r["status"] == "ok"),
                max(r["bias"] for r in p["rows"] if r["status"] == "ok"),
            ],
        }
    return {
        "samplers": samplers,
        "best_everywhere": [s for s in samplers if all(s in b for b in best.values())],
        "never_best": [s for s in samplers if not any(s in b for b in best.values())],
        "separated": [label for label, b in best.items() if len(b) == 1],
        "problems": per_problem,
    }


def _problem_sentence(label: str, a: dict[str, Any], samplers: int) -> str:
    if a["lowest"] is None:
        return f"`{label}`: no verdict."
    text = f"`{label}`: lowest `{a['lowest']}` (RMSE {a['lowest_rmse']:.4f})"
    if a["best_size"] == 1:
        return text + ", separated from every other."
    others = "every other" if a["best_size"] == samplers else f"{a['best_size'] - 1} of the other {samplers - 1}"
    text += f", tied with {others}, up to `{a['largest_rmse_in_set']}` (RMSE {a['largest_rmse']:.4f})"
    if a["rank_test_out"]:
        text += f"; the rank test would separate {_names(a['rank_test_out'])}"
    return text + "."


def _truth_kind(problem: dict[str, Any]) -> str | None:
    """The key of :data:`TRUTHS` whose text a problem's rows record (None for a problem with no row)."""
    text = problem["rows"][0].get("truth_kind") if problem["rows"] else None
    return next((kind for kind, said in TRUTHS.items() if said == text), None)


def _problem_specs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The resolved config's problem tables, in the suite's order (one ``problem`` or ``problems``)."""
    return list(config.get("problems") or [config["problem"]])


def section_llc(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    """The LLC section's lines and its summary sentence, rendered from its view (``figures`` is unused: the section
    draws none)."""
    suite = read_json(out / STEP / SUITE_FILE)
    config = suite["config"]
    problems = suite["problems"]
    first = next(r for p in problems for r in p["rows"] if r["status"] == "ok")
    budgets = sorted({r["budget"] for p in problems for r in p["rows"]})
    tuning = config.get("tuning") or {}
    verdict = answer(problems)
    numbers["llc"] = {
        "nbeta": first["nbeta"],
        "localization": first["localization"],
        "chains": config["chains"],
        "replicates": config["replicates"],
        "budgets": budgets,
        "samplers": len(verdict["samplers"]),
        "problems": {p["label"]: p for p in problems},
        "problem_count": len(problems),
        "tuning": {"trials": tuning.get("trials"), "replicates": tuning.get("replicates")},
        "answer": verdict,
    }
    kinds = {p["label"]: _truth_kind(p) for p in problems}
    limit = {label for label, kind in kinds.items() if kind == "limit"}  # Aoyagi's nbeta -> infinity limit
    shown = []
    for p, spec in zip(problems, _problem_specs(config), strict=True):
        truth = next((r for r in p["rows"] if r["status"] == "ok"), None)
        columns = ["sampler", "tuned", "estimate", "bias ± SE", "RMSE", "mean MCSE", "ESS (bulk)", "R-hat"]
        reference = None
        if kinds[p["label"]] == "reference":
            widths, rank, seed = spec["widths"], spec["rank"], spec.get("seed", 0)
            found = find_reference(widths, rank, seed, first["nbeta"], first["localization"])
            reference = None if found is None else found.model_dump()
        shown.append(
            {
                "label": p["label"],
                "truth": None if truth is None else truth["truth"],
                "truth_kind": None if truth is None else truth["truth_kind"],
                "reference": reference,
                "table": "\n".join(table(columns, [_row(r) for r in p["rows"]])),
                "verdicts": [verdict_text(v, name=lambda n: f"`{n}`") for v in p["verdicts"]],
            }
        )
    view = {
        "step": STEP,
        "n_samplers": len(verdict["samplers"]),
        "nbeta": first["nbeta"],
        "localization": first["localization"],
        "chains": config["chains"],
        "budgets": budgets,
        "trials": tuning.get("trials"),
        "tuning_replicates": tuning.get("replicates"),
        "replicates": config["replicates"],
        "method": METHOD,
        "problems": shown,
        "answer": verdict,
        "diverged": {label: a["diverged"] for label, a in verdict["problems"].items() if a["diverged"]},
        "limit_labels": sorted(limit),
        "reference_labels": sorted(label for label, kind in kinds.items() if kind == "reference"),
        "toy_count": sum(kind == "exact" for kind in kinds.values()),
        "below_limit": {
            label: a for label, a in verdict["problems"].items() if label in limit and a["bias_range"][1] < 0
        },
        "training": training_view(out / TRAINING, numbers) if (out / TRAINING / "results.json").is_file() else None,
    }
    numbers["llc"]["view"] = view
    return section_text("llc", view)
