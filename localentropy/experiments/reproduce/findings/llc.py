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
from localentropy.experiments.reproduce.findings.common import Lines, fmt, paired, pm, read_json, short, table
from localentropy.experiments.reproduce.findings.samplers import verdicts_now
from localentropy.experiments.reproduce.findings.smoothing import flatness_by_label

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


def training_lines(step_dir: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    """The LLC along training: each optimizer's LLC and test error over seeds, the paired differences, the best set
    (lowest LLC), and one sentence for the summary."""
    n_seeds, by_label, pairs = training_llc(step_dir)
    llc = {label: m.get("llc", {}) for label, m in by_label.items()}
    shared = sorted(set.intersection(*(set(v) for v in llc.values())), key=str) if llc else []
    verdict = best_set({label: [v[seed] for seed in shared] for label, v in llc.items()}, unit="seed")
    numbers["llc"]["training"] = {
        "seeds": n_seeds,
        "by_label": by_label,
        "paired": pairs,
        "best_set": verdict.as_dict(),
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
    higher = [
        o
        for o, d in pairs.items()
        if d["llc"]["mean"] is not None and d["llc"]["ci95"] is not None and d["llc"]["mean"] - d["llc"]["ci95"] > 0
    ]
    lower = [
        o
        for o, d in pairs.items()
        if d["llc"]["mean"] is not None and d["llc"]["ci95"] is not None and d["llc"]["mean"] + d["llc"]["ci95"] < 0
    ]
    tied = [o for o in pairs if o not in higher and o not in lower]
    lines = [
        "### Along training: the LLC of the minima each optimizer finds",
        "",
        f"Config: `sweep_llc.toml`: Entropy-SGD, SGD, SAM and LPF-SGD on digits from the same initial weights and "
        f"minibatch order per seed, {n_seeds} seeds, the LLC measured at each final weight vector (flatness "
        "measure `llc`; its settings in docs/diagnostics.md). Mean ± sd over the seeds; the difference is "
        "Entropy-SGD minus the row's optimizer, paired by seed.",
        "",
        *table(["optimizer", "LLC", "test error", "Entropy-SGD minus this (LLC)"], rows),
        "",
        f"* Lowest LLC: {verdict_text(verdict, name=lambda n: f'`{n}`')}",
        "",
        f"Entropy-SGD's minima have an LLC {_relation(higher, lower, tied)} (95 % intervals over the seeds).",
        "",
    ]
    summary = (
        f" Along training (digits, {n_seeds} seeds), Entropy-SGD's minima have an LLC {_relation(higher, lower, tied)}."
    )
    return lines, summary


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


def section_llc(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    """The LLC section's lines and its summary sentence (``figures`` is unused: the section draws none)."""
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
    lines = [
        "## LLC. Which sampler estimates the local learning coefficient best",
        "",
        f"Config: `{STEP}.toml`. Every registered sampler ({len(verdict['samplers'])}) estimates the LLC "
        f"lambda(w*) = nbeta (E_p[L] - L(w*)) at nbeta = {first['nbeta']:g} and localization "
        f"{first['localization']:g} on {len(problems)} problems with a known answer, each with {config['chains']} "
        f"chains and {', '.join(map(str, budgets))} gradient evaluations per estimate (MALA's two per step counted). "
        f"On each problem every sampler is first tuned alike ({tuning.get('trials')} TPE trials of "
        f"{tuning.get('replicates')} replicate estimates, on seeds apart from the reported ones, scored by the "
        f"squared error), then {config['replicates']} replicates on seeds shared by every sampler go to the verdict: "
        f"{METHOD}. The truth of the toys is their exact finite-nbeta LLC (quadrature); a deep linear network's is "
        "Aoyagi's learning coefficient, the nbeta -> infinity limit, so its errors include the finite-nbeta bias "
        "that every sampler shares. Bias ± its standard error over the replicates; RMSE over the replicates; mean "
        "MCSE: the estimator's own (ArviZ) error bar, averaged over the replicates; ESS and R-hat: ArviZ's, of the "
        "first replicate's trace of L.",
        "",
    ]
    for p in problems:
        rows = p["rows"]
        truth = next((r for r in rows if r["status"] == "ok"), None)
        head = f"### {p['label']}" + (f": truth {truth['truth']:.4f} ({truth['truth_kind']})" if truth else "")
        lines += [
            head,
            "",
            *table(
                ["sampler", "tuned", "estimate", "bias ± SE", "RMSE", "mean MCSE", "ESS (bulk)", "R-hat"],
                [_row(r) for r in rows],
            ),
            "",
            *(f"* Lowest squared error: {verdict_text(v, name=lambda n: f'`{n}`')}" for v in p["verdicts"]),
            "",
        ]
    everywhere = _names(verdict["best_everywhere"])
    n = len(verdict["samplers"])
    diverged = {label: a["diverged"] for label, a in verdict["problems"].items() if a["diverged"]}
    dln = [
        label
        for label, p in zip(verdict["problems"], problems, strict=True)
        if p["rows"] and "limit" in str(p["rows"][0].get("truth_kind"))
    ]
    lines += [
        f"**Answer.** In the best set on every problem: {everywhere}; never in it: {_names(verdict['never_best'])}. "
        + " ".join(_problem_sentence(label, a, n) for label, a in verdict["problems"].items())
        + " "
        + (
            "Diverged (a replicate not finite or run away, ranked out): "
            + "; ".join(f"{_names(names)} on `{label}`" for label, names in diverged.items())
            + "."
            if diverged
            else "No sampler diverged after tuning."
        ),
        "",
        "**What the evidence supports.** "
        + (
            f"A single sampler is separated from every other on {_names(verdict['separated'])}. "
            if verdict["separated"]
            else "No sampler is separated from every other on any problem. "
        )
        + f"Where several are tied, the tie says that {config['replicates']} replicates cannot separate them by "
        "the t-test on the squared errors, not that they are as accurate: a sampler whose errors vary a lot stays "
        "tied with the lowest at a larger RMSE (the largest in each best set is named above), and the Wilcoxon test "
        "beside it separates some of them (named above). "
        + "".join(
            f"On `{label}` every sampler's estimate lies below Aoyagi's value (biases from "
            f"{a['bias_range'][0]:+.4f} to {a['bias_range'][1]:+.4f}): part of that is the finite-nbeta bias that "
            "every sampler shares, so the verdict there favours the samplers with the least downward bias, which "
            "are not necessarily the most accurate for the finite-nbeta value. "
            for label, a in verdict["problems"].items()
            if label in dln and a["bias_range"][1] < 0
        ).rstrip(),
        "",
        "**What it does not support.** A ranking on networks: three of the problems are two-dimensional and the "
        "fourth is a small deep linear network scored against the nbeta -> infinity limit. The verdicts hold for "
        "this budget, nbeta and localization, and for hyperparameters tuned on each problem against its answer, "
        "which a user estimating an unknown LLC does not have.",
        "",
    ]
    train_summary = ""
    if (out / TRAINING / "results.json").is_file():
        train, train_summary = training_lines(out / TRAINING, numbers)
        lines += train
    summary = (
        f"**LLC (Q3, Q2).** Tuned alike at equal gradient evaluations on {len(problems)} problems with a known LLC, "
        f"in the best set everywhere: {everywhere}; never in it: {_names(verdict['never_best'])}; separated from "
        f"every other sampler on {_names(verdict['separated'])}"
        + "".join(f" (`{verdict['problems'][label]['lowest']}`)" for label in verdict["separated"][:1])
        + "."
        + train_summary
    )
    return lines, summary
