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
    tuned_reference,
)
from localentropy.experiments.reproduce.findings.render import section_text


def section_overhead(
    out: Path, figures: Path, speed: dict[str, Any] | None, numbers: dict[str, Any]
) -> tuple[Lines, str]:
    from localentropy.experiments.overhead import accuracy_table

    results, items, axes, cells = training_cells(out / "overhead_training")
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
            speed_rows.append(
                [r["row"], f"{r['ratio']:.2f}", f"{r.get('ratio_iqr') or 0:.2f}", _median_ci(r), str(r.get("n"))]
            )
            speed_info[r["row"]] = r["ratio"]
    sgd_step = speed_ratio(speed, "torch.optim.SGD", section="samplers")
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
    effect_lines, effects = factor_table(cells, axes)
    numbers["overhead"]["effects"] = effects
    numbers["overhead"]["minus_reference"] = minus_reference  # the table's paired column
    rows_by_accuracy = _accuracy_rows(accuracy)
    numbers["overhead"]["view"] = {
        "G": speed["entropy"]["G_median_ms"] if speed and "entropy" in speed else None,
        "speed_table": "\n".join(
            table(["inner loop", "cost per inner step (G)", "IQR", "95 % CI of the median", "repeats"], speed_rows)
        ),
        "speed_intervals": any("ratio_ci95" in r for r in (speed or {}).get("entropy", {}).get("rows", [])),
        "sgd_step": sgd_step,
        "t0": speed_ratio(speed, "sgld, T=0 (no noise)", section="samplers"),
        "gauss": speed_ratio(speed, "sgld", section="samplers"),
        "rad": speed_ratio(speed, "sgld, rademacher", section="samplers"),
        "inner": speed_info.get("L=20 sgld") or speed_info.get("L=5 sgld"),
        "replicates": accuracy["settings"].get("replicates", "?"),
        "accuracy_table": "\n".join(accuracy_table(accuracy)),
        "n_seeds": n_seeds,
        "sgd_errors": list(sgd.values()),
        "sgd_tuning": tuned_reference(results),
        "table": "\n".join(table([*axes, "test error", "seconds", "minus the reference (paired)"], rows)),
        "effect_table": "\n".join(effect_lines),
        "accuracy": rows_by_accuracy,
        "worse": len(worse),
        "better": len(better),
        "variants": len(cells) - 1,
        "effects": [
            {
                "key": key,
                "mean": d["mean"],
                "ci95": d["ci95"],
                "n": d["n"],
                "distinct": distinct(d),
                "noise": key.startswith("noise:"),
                "within": key.split("(")[1].rstrip(")") if "(" in key else "all",
            }
            for key, d in effects.items()
        ],
        "effects_n": max((d["n"] for d in effects.values()), default=0),
        "ent": speed_info.get("L=5 sgld"),
        "ent_r": speed_info.get("L=5 sgld, rademacher"),
        "short_accuracy": _accuracy_short(accuracy),
    }
    return section_text("overhead", numbers["overhead"]["view"])


def _median_ci(row: dict[str, Any]) -> str:
    """A benchmark row's 95 % distribution-free interval of its median ratio over the repeats, or why there is none."""
    if "ratio_ci95" not in row:
        return "not recorded"
    ci = row["ratio_ci95"]
    return "— (fewer than 6 repeats)" if ci is None else f"{ci[0]:.2f} to {ci[1]:.2f}"


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


def _accuracy_rows(accuracy: dict[str, Any]) -> list[dict[str, Any]]:
    """Per sampler (Gaussian noise), the relative error of a warm chain with the fewest inner steps and of cold
    chains with the fewest and the most, and whether the warm one beat the longest cold one."""
    rows = [r for r in accuracy.get("rows", []) if r["noise"] == "gaussian"]
    out = []
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        mine = {(r["inner_steps"], r["warm_start"]): r["rel_error_mean"] for r in rows if r["sampler"] == sampler}
        steps = sorted({k[0] for k in mine})
        lo, hi = steps[0], steps[-1]
        if (lo, True) in mine and (hi, False) in mine and (lo, False) in mine:
            warm, cold_lo, cold_hi = mine[(lo, True)], mine[(lo, False)], mine[(hi, False)]
            out.append(
                {
                    "sampler": sampler,
                    "lo": lo,
                    "hi": hi,
                    "warm_lo": warm,
                    "cold_lo": cold_lo,
                    "cold_hi": cold_hi,
                    "warm_wins": warm <= cold_hi,
                }
            )
    return out


def _accuracy_short(accuracy: dict[str, Any]) -> dict[str, Any] | None:
    """SGLD's warm chain with the fewest inner steps against its cold chain with the most (Gaussian noise)."""
    rows = {
        (r["sampler"], r["inner_steps"], r["warm_start"]): r["rel_error_mean"]
        for r in accuracy.get("rows", [])
        if r["noise"] == "gaussian"
    }
    steps = sorted({k[1] for k in rows})
    if not steps or ("sgld", steps[0], True) not in rows:
        return None
    lo, hi = steps[0], steps[-1]
    return {"lo": lo, "hi": hi, "warm_lo": rows[("sgld", lo, True)], "cold_hi": rows[("sgld", hi, False)]}


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
