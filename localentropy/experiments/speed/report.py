"""The speed benchmark's targets and tables: what is printed, and the targets each run is compared with.

The targets are ratios measured in one run, never timed tests. Besides the first round's limits (in units of G),
the inner step's targets compare parts measured in the same run: the Gaussian inner step (SGLD) over its floor
``G + parallel draw`` (the gradient plus the chunked noise draw alone, on the same cores: goal 1.05, limit 1.15),
the Rademacher inner step in G, and the inner and single sampler steps against their figures of the previous round
(docs/performance.md), which they must not exceed.
"""

from __future__ import annotations

import argparse
from typing import Any

from localentropy.experiments.speed.entropy import PARALLEL_FLOOR, SERIAL_FLOOR
from localentropy.experiments.speed.timing import format_table

SECTIONS = ("entropy", "samplers", "estimator")
CORE_SAMPLERS = ("sgld", "sghmc", "psgld", "msgld")
TARGETS = {
    "entropy_gaussian": 2.85,  # G per Entropy-SGD inner step, Gaussian noise
    "entropy_rademacher": 2.0,  # G per Entropy-SGD inner step, Rademacher noise
    "step_sgld": 2.3,
    "step_sghmc": 2.5,
    "step_psgld": 2.5,
    "chains_64_over_1": 4.0,
    "ours_over_peer": 0.9,
    "entropy_gaussian_over_parallel_floor_goal": 1.05,  # SGLD Gaussian inner step / (G + parallel draw)
    "entropy_gaussian_over_parallel_floor": 1.15,  # the same, at worst
    "entropy_rademacher_sgld": 1.35,  # G per SGLD Rademacher inner step
}
# Entropy-SGD inner step / G of the previous round (2026-12-03, 2 threads, mnistfc, batch 128): "never slower".
INNER_BEFORE = {
    "L=5 sgld": 1.72,
    "L=20 sgld": 1.65,
    "L=5 sgld, rademacher": 1.45,
    "L=20 sgld, rademacher": 1.35,
    "L=5 preset authors (msgld)": 1.88,
    "L=20 preset authors (msgld)": 1.80,
}
# One sampler step / G before the chunked inner step (2 threads, mnistfc, batch 128): "no slower than before".
STEPS_BEFORE = {
    "sgld": 1.83,
    "sghmc": 1.89,
    "psgld": 2.06,
    "sgld, rademacher": 1.15,
    "sghmc, rademacher": 1.20,
    "psgld, rademacher": 1.39,
}


def _ratio(rows: list[dict[str, Any]], name: str) -> float | None:
    for r in rows:
        if r["row"] == name:
            return r["ratio"]
    return None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, what: str, value: float | None, limit: float) -> None:
        status = "not measured" if value is None else ("holds" if value <= limit else "misses")
        margin = None if value is None else value / limit - 1.0
        out.append({"target": name, "what": what, "value": value, "limit": limit, "status": status, "over_by": margin})

    ent = report.get("entropy")
    if ent:
        for L in (5, 20):
            for noise, key in (("gaussian", "entropy_gaussian"), ("rademacher", "entropy_rademacher")):
                for name in CORE_SAMPLERS:
                    label = f"L={L} {name}" + ("" if noise == "gaussian" else f", {noise}")
                    value = _ratio(ent["rows"], label)
                    if value is not None:
                        add(key, f"EntropySGD inner step, {name}, {noise}, L={L} (G)", value, TARGETS[key])
        floor = _ratio(ent["rows"], PARALLEL_FLOOR)
        for L in (5, 20):
            gaussian, rademacher = _ratio(ent["rows"], f"L={L} sgld"), _ratio(ent["rows"], f"L={L} sgld, rademacher")
            if gaussian is not None or rademacher is not None:
                over = None if gaussian is None or floor is None else gaussian / floor
                what = f"EntropySGD inner step, sgld, gaussian, L={L} / (G + parallel draw)"
                for key in ("entropy_gaussian_over_parallel_floor_goal", "entropy_gaussian_over_parallel_floor"):
                    add(key, what, over, TARGETS[key])
                what = f"EntropySGD inner step, sgld, rademacher, L={L} (G)"
                add("entropy_rademacher_sgld", what, rademacher, TARGETS["entropy_rademacher_sgld"])
        for label, before in INNER_BEFORE.items():
            what = f"EntropySGD inner step, {label} / G, no slower than the previous round ({before:g})"
            add("entropy_before", what, _ratio(ent["rows"], label), before)
    smp = report.get("samplers")
    if smp:
        for name in ("sgld", "sghmc", "psgld"):
            add(
                f"step_{name}",
                f"{name} step, gradient included (G)",
                _ratio(smp["rows"], name),
                TARGETS[f"step_{name}"],
            )
        for label, before in STEPS_BEFORE.items():
            what = f"{label} step / G, no slower than before ({before:g})"
            add(f"step_{label.replace(', ', '_')}_before", what, _ratio(smp["rows"], label), before)
    est = report.get("estimator")
    if est:
        for r in est["rows"]:
            if r["n_chains"] == 64:
                add(
                    "chains_64_over_1",
                    f"time per step, 64 chains / 1 chain (keep_draws={r['keep_draws']})",
                    r["time_over_one_chain"],
                    TARGETS["chains_64_over_1"],
                )
    peers = report.get("peers")
    if peers:
        for r in peers["rows"]:
            add("ours_over_peer", f"{r['ours']} / {r['peer']}", r["ours_over_peer"], TARGETS["ours_over_peer"])
    return out


def floor_section(entropy: dict[str, Any]) -> dict[str, Any]:
    """How far the SGLD Gaussian inner step is from its floor, per L, in units of G (from section (a)'s rows)."""
    floors = {
        SERIAL_FLOOR: _ratio(entropy["rows"], SERIAL_FLOOR),
        PARALLEL_FLOOR: _ratio(entropy["rows"], PARALLEL_FLOOR),
    }
    serial, parallel = floors[SERIAL_FLOOR], floors[PARALLEL_FLOOR]
    rows = []
    for L in sorted({r["inner_steps"] for r in entropy["rows"] if r["kind"] == "entropy"}):
        inner = _ratio(entropy["rows"], f"L={L} sgld")
        rows.append(
            {
                "row": f"L={L} sgld",
                "inner_G": inner,
                "serial_floor_G": serial,
                "parallel_floor_G": parallel,
                "above_parallel_floor_G": None if inner is None or parallel is None else inner - parallel,
                "above_serial_floor_G": None if inner is None or serial is None else inner - serial,
                "over_parallel_floor": None if inner is None or parallel is None else inner / parallel,
                "over_serial_floor": None if inner is None or serial is None else inner / serial,
            }
        )
    return {"benchmark": "the Gaussian inner step (SGLD) against G + its noise draw, in units of G", "rows": rows}


def format_floor(section: dict[str, Any]) -> str:
    lines = [
        f"| inner step | inner (G) | {SERIAL_FLOOR} (G) | {PARALLEL_FLOOR} (G) | above parallel floor (G) | "
        "inner / (G + parallel draw) | inner / (G + serial draw) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    f = _fmt
    for r in section["rows"]:
        lines.append(
            f"| {r['row']} | {f(r['inner_G'])} | {f(r['serial_floor_G'])} | {f(r['parallel_floor_G'])} | "
            f"{f(r['above_parallel_floor_G'])} | {f(r['over_parallel_floor'])} | {f(r['over_serial_floor'])} |"
        )
    return "\n".join(lines)


def format_estimator(section: dict[str, Any]) -> str:
    lines = [
        "| chains | keep_draws | us per step | IQR | chain-steps / s | time / time(1 chain) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in section["rows"]:
        if r["us_per_step"] is None:
            lines.append(f"| {r['n_chains']} | {r['keep_draws']} | - | - | - | - |")
            continue
        lines.append(
            f"| {r['n_chains']} | {r['keep_draws']} | {r['us_per_step']:.1f} | {r['us_per_step_iqr']:.1f} | "
            f"{r['chain_steps_per_s']:,.0f} | {_fmt(r['time_over_one_chain'])} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_peers(section: dict[str, Any]) -> str:
    lines = ["| ours | peer | ours (G) | peer (G) | ours / peer |", "|---|---|---:|---:|---:|"]
    f = _fmt
    for r in section["rows"]:
        lines.append(f"| {r['ours']} | {r['peer']} | {f(r['ours_G'])} | {f(r['peer_G'])} | {f(r['ours_over_peer'])} |")
    return "\n".join(lines)


def format_targets(rows: list[dict[str, Any]]) -> str:
    lines = ["| target | measured | limit | status |", "|---|---:|---:|---|"]
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.2f}"
        status = (
            r["status"] if r["over_by"] is None or r["status"] == "holds" else f"misses by {100 * r['over_by']:.0f}%"
        )
        lines.append(f"| {r['what']} | {value} | {r['limit']:g} | {status} |")
    return "\n".join(lines)


def load_line(section: dict[str, Any]) -> str:
    cores = section.get("other_processes_cores")
    text = "unknown" if cores is None else f"{cores:.2f}"
    line = f"{section['repeats']} repeats, {section['measure_wall_s']:.0f} s; other processes used {text} cores"
    if section.get("dropped"):
        line += f", {section['dropped']} {section['dropped_unit'].split(' during')[0]} dropped for contention"
    waited = section.get("quiet_wait", {}).get("waited_s", 0.0)
    return line + (f" (after waiting {waited:.0f} s for a quiet machine)" if waited >= 1 else "")


def _ms(value: float | None) -> str:
    # None when every repeat was dropped for contention: the table then says so row by row
    return "not measured (every repeat dropped)" if value is None else f"{value:.2f} ms"


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    m = report["machine"]
    where = m.get("gpu", m["cpu"])
    print(
        f"{report['model']}; {where} ({m['cpu_count']} CPUs), device {m['device']}, {m['threads']} threads, "
        f"torch {m['torch']}, Python {m['python']}, "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if k != "torch")
    )
    if "samplers" in report:
        s = report["samplers"]
        print(f"\n## (b) one sampler step / G (gradient included); G = {_ms(s['G_median_ms'])}; {load_line(s)}\n")
        print(format_table(s["rows"]))
    if "peers" in report:
        print("\n## (d) peers: our step / posteriors' step\n")
        print(format_peers(report["peers"]))
    if "entropy" in report:
        e = report["entropy"]
        print(f"\n## (a) EntropySGD outer step / (L x G); G = {_ms(e['G_median_ms'])}; {load_line(e)}\n")
        print(format_table(e["rows"]).replace("| median ms |", "| ms per inner step |"))
    if "floor" in report:
        print("\n## (e) the Gaussian inner step against its floor (G + the noise draw alone)\n")
        print(format_floor(report["floor"]))
    if "estimator" in report:
        s = report["estimator"]
        print(
            f"\n## (c) estimator throughput: {s['problem']}, {s['settings']['n_steps']} steps per call; "
            f"{load_line(s)}\n"
        )
        print(format_estimator(s))
    print("\n## targets\n")
    print(format_targets(report["targets"]))
    loads = [report[k].get("other_processes_cores") for k in SECTIONS if k in report]
    cores = m["cpu_count"] or 1
    if m["device"] == "cpu" and any(c is not None and c + args.threads > cores + 0.25 for c in loads):
        if args.max_other_cores is None:
            print(
                f"\nwarning: other processes competed with the {args.threads} threads on {cores} CPUs in some "
                "section; ratios can be distorted. Rerun on a quiet machine."
            )
        else:
            print(
                f"\nnote: other processes competed with the {args.threads} threads on {cores} CPUs during some "
                f"section; the measurements taken while they used more than {args.max_other_cores:g} cores were "
                "dropped (counts in the section titles)."
            )
