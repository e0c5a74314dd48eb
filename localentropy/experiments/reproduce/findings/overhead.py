"""Cutting the overhead: what an inner step costs, fewer inner steps, warm starts and cheaper noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localentropy.experiments.reproduce.claims import Claim, difference_claim
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    by_seed,
    distinct,
    fmt,
    group_rows,
    over_seeds,
    paired,
    pm,
    read_json,
    select,
    short,
    sort_key,
    speed_ratio,
    sweep_entries,
    table,
)


def section_overhead(
    out: Path, figures: Path, speed: dict[str, Any] | None, numbers: dict[str, Any]
) -> tuple[Lines, str]:
    from localentropy.experiments.overhead import accuracy_table

    _, items, axes, cells = training_cells(out / "overhead_training")
    default = next(
        (
            c
            for c in cells
            if c["setting"].get("inner_steps") == "5"
            and c["setting"].get("warm_start") == "false"
            and c["setting"].get("noise") == "gaussian"
            and c["setting"].get("temperature", "1e-08") == "1e-08"
        ),
        None,
    )
    sgd = by_seed(select(items, "sgd"))
    rows, minus_reference = [], []
    for c in sorted(cells, key=lambda c: tuple(sort_key(c["setting"].get(a)) for a in axes)):
        d = paired(c["by_seed"], default["by_seed"]) if default and c is not default else None
        minus_reference.append({"setting": c["setting"], "minus_reference": d})
        rows.append(
            [
                *(c["setting"].get(a, "—") for a in axes),
                f"{pm(list(c['by_seed'].values()), 100)} %",
                fmt(c["seconds"], 3),
                "reference" if c is default else ("—" if d is None else short(d)),
            ]
        )
    accuracy = read_json(out / "overhead_accuracy" / "accuracy.json")
    speed_rows, speed_info = [], {}
    if speed and "entropy" in speed:
        for r in speed["entropy"]["rows"][1:]:
            if r.get("ratio") is None:
                continue
            speed_rows.append([r["row"], f"{r['ratio']:.2f}", f"{r.get('ratio_iqr') or 0:.2f}", str(r.get("n"))])
            speed_info[r["row"]] = r["ratio"]
    sgd_step = speed_ratio(speed, "torch.optim.SGD", section="samplers")
    sgld_t0 = speed_ratio(speed, "sgld, T=0 (no noise)", section="samplers")
    sgld_g = speed_ratio(speed, "sgld", section="samplers")
    sgld_r = speed_ratio(speed, "sgld, rademacher", section="samplers")
    numbers["overhead"] = {
        "training": [{k: v for k, v in c.items()} for c in cells],
        "sgd": sgd,
        "speed": speed_info,
        "sgd_step": sgd_step,
        "accuracy": {k: v for k, v in accuracy.items() if k != "rows"}
        | {"rows": [{k: v for k, v in r.items() if not k.endswith("_by_step")} for r in accuracy.get("rows", [])]},
    }
    n_seeds = len({e["seed"] for e in items})
    vs_default = {id(c): paired(c["by_seed"], default["by_seed"]) for c in cells if default and c is not default}
    worse = [c for c in cells if id(c) in vs_default and distinct(vs_default[id(c)]) and vs_default[id(c)]["mean"] > 0]
    better = [c for c in cells if id(c) in vs_default and distinct(vs_default[id(c)]) and vs_default[id(c)]["mean"] < 0]
    G = speed["entropy"]["G_median_ms"] if speed and "entropy" in speed else None
    effect_lines, effects = factor_table(cells, axes)
    numbers["overhead"]["effects"] = effects
    numbers["overhead"]["minus_reference"] = minus_reference  # the table's paired column
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
        "Each factor's effect in table (c): paired by seed and every other setting, averaged within each seed "
        "(pairs that share a seed are not independent), then a 95 % t-interval over the seeds:",
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
    summary = (
        f"**Overhead.** An SGLD inner step costs {fmt(ent, 3)} G with Gaussian and {fmt(ent_r, 3)} G with "
        f"Rademacher noise (an SGD step {fmt(sgd_step, 3)} G). {_accuracy_short(accuracy)} Rademacher minus "
        f"Gaussian test error: {noise}."
    )
    return lines, summary


def training_cells(step_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[str], list[dict[str, Any]]]:
    """The training sweep's results, entries, swept axes (besides optimizer and seed) and Entropy-SGD's cells."""
    results, items = sweep_entries(step_dir)
    axes = [a["key"] for a in results["axes"] if a["key"] not in ("optimizer", "seed")]
    return results, items, axes, group_rows(items, "entropy-sgd", axes)


def training_claims(step_dir: Path) -> list[Claim]:
    """The claims of table (c): each factor's effect on the test error, paired by seed (the factor table's rows)."""
    _, _, axes, cells = training_cells(step_dir)
    return [
        difference_claim(f"overhead_training/{key}", f"test error, {key}", d)
        for key, d in factor_table(cells, axes)[1].items()
    ]


def _effects_text(effects: dict[str, dict[str, Any]]) -> str:
    """The contrasts whose 95 % t-interval over seeds excludes zero, in words."""
    said = []
    for key, d in effects.items():
        if distinct(d):
            said.append(
                f"{key} {'raised' if d['mean'] > 0 else 'lowered'} the test error by "
                f"{abs(100 * d['mean']):.2f} ± {100 * d['ci95']:.2f} points"
            )
    if not effects:
        return ""
    n = max(d["n"] for d in effects.values())
    if not said:
        return f"No factor moved the test error beyond its 95 % t-interval over {n} seeds."
    return f"Beyond a 95 % t-interval over {n} seeds: " + "; ".join(said) + "."


def _cost_text(
    sgd_step: float | None, t0: float | None, gauss: float | None, rad: float | None, speed: dict[str, float]
) -> str:
    """What the inner step's cost is made of, from the benchmark's ratios."""
    if None in (sgd_step, t0, gauss, rad):
        return "The sampler table of the benchmark was not measured."
    inner = speed.get("L=20 sgld") or speed.get("L=5 sgld")
    text = (
        f"For scale: a `torch.optim.SGD` step with its gradient costs {sgd_step:.2f} G, an SGLD step without "
        f"noise (T = 0) {t0:.2f} G, with Gaussian noise {gauss:.2f} G and with Rademacher noise {rad:.2f} G. "
        f"So the sampler's own update costs {max(t0 - sgd_step, 0.0):.2f} G more than SGD's, the Gaussian draw "
        f"{gauss - t0:.2f} G and the Rademacher draw {rad - t0:.2f} G"
    )
    if inner:
        text += (
            f"; Entropy-SGD's coupling and running average add {inner - gauss:+.2f} G on top of an SGLD step "
            f"({inner:.2f} G per inner step)"
        )
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
            parts.append(
                f"{sampler}: warm L = {lo} {mine[(lo, True)]:.3f}, cold L = {lo} {mine[(lo, False)]:.3f}, "
                f"cold L = {hi} {mine[(hi, False)]:.3f}"
            )
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
    rows = {
        (r["sampler"], r["inner_steps"], r["warm_start"]): r["rel_error_mean"]
        for r in accuracy.get("rows", [])
        if r["noise"] == "gaussian"
    }
    steps = sorted({k[1] for k in rows})
    if not steps or ("sgld", steps[0], True) not in rows:
        return ""
    lo, hi = steps[0], steps[-1]
    return (
        f"On the quadratic, a warm-started SGLD chain with L = {lo} gave the direction with relative error "
        f"{rows[('sgld', lo, True)]:.2f} against {rows[('sgld', hi, False)]:.2f} for a cold one with L = {hi}."
    )


def factor_effect(
    cells: list[dict[str, Any]], axes: list[str], axis: str, a: str, b: str, by: str | None = None
) -> dict[str, dict[Any, list[float]]]:
    """Test error at ``axis = a`` minus at ``axis = b``, paired by seed and every other setting, kept per seed
    (the independent unit); grouped by ``by``."""
    others = [x for x in axes if x != axis]
    lookup = {(tuple(c["setting"].get(x) for x in others), c["setting"].get(axis)): c for c in cells}
    out: dict[str, dict[Any, list[float]]] = {}
    for (key, value), c in lookup.items():
        base = lookup.get((key, b))
        if value != a or base is None:
            continue
        group = dict(zip(others, key, strict=True)).get(by, "all") if by else "all"
        for seed in sorted(set(c["by_seed"]) & set(base["by_seed"]), key=str):
            out.setdefault(group, {}).setdefault(seed, []).append(c["by_seed"][seed] - base["by_seed"][seed])
    return dict(sorted(out.items(), key=lambda kv: sort_key(kv[0])))


def _effect_cell(d: dict[str, Any]) -> list[str]:
    ci = f" ± {100 * d['ci95']:.2f}" if d["ci95"] is not None else ""
    return [f"{100 * d['mean']:+.2f}{ci}", str(d["n"]), str(d["higher"]), str(d["pairs"]), str(d["identical"])]


FACTORS = (
    ("warm_start", "true", "false", "temperature"),
    ("noise", "rademacher", "gaussian", "temperature"),
    ("temperature", "0.001", "1e-08", None),
)


def factor_table(cells: list[dict[str, Any]], axes: list[str]) -> tuple[Lines, dict[str, Any]]:
    """One row per factor contrast (and per temperature where it matters), and per L against L = 5."""
    rows, effects = [], {}
    contrasts = [f for f in FACTORS if f[0] in axes]
    if "inner_steps" in axes:
        values = sorted({c["setting"]["inner_steps"] for c in cells}, key=sort_key)
        contrasts += [("inner_steps", v, "5", "temperature") for v in values if v != "5"]
    for axis, a, b, by in contrasts:
        for group, per_seed in factor_effect(cells, axes, axis, a, b, by if by in axes else None).items():
            d = over_seeds(per_seed)
            effects[f"{axis}: {a} - {b}" + ("" if group == "all" else f" ({by} = {group})")] = d
            rows.append([f"{axis}: {a} minus {b}", "all" if group == "all" else f"{by} = {group}", *_effect_cell(d)])
    header = [
        "contrast",
        "within",
        "test error difference (points, mean ± 95 % t-interval over seeds)",
        "seeds",
        "seeds higher",
        "pairs averaged",
        "identical pairs",
    ]
    return table(header, rows), effects


def _noise_short(effects: dict[str, dict[str, Any]]) -> str:
    parts = []
    for key, d in effects.items():
        if key.startswith("noise:"):
            where = key.split("(")[1].rstrip(")") if "(" in key else "all"
            ci = f" ± {100 * d['ci95']:.2f}" if d["ci95"] is not None else ""
            parts.append(f"{where}: {100 * d['mean']:+.2f}{ci} points (95 % t-interval over {d['n']} seeds)")
    return "; ".join(parts) or "not measured"
