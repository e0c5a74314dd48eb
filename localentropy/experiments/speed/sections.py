"""Sections (b), (c) and (d) of the speed benchmark: one sampler step / G (the sampler benchmark's rows), the
estimator's throughput with 1, 8 and 64 chains, and our sampler step over the ``posteriors`` peers' step."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from localentropy.entropy.estimators import LocalEntropyEstimator
from localentropy.entropy.problems import Quadratic
from localentropy.experiments.core.cpuload import LoadMeter, busy_cpu_seconds, other_cores_since, own_cpu_seconds
from localentropy.experiments.speed.samplers import TEMPERATURE, build_rows
from localentropy.experiments.speed.timing import measure, quantile, section_record, summarise, synchroniser
from localentropy.samplers import SGLD

CHAIN_COUNTS = (1, 8, 64)


def samplers_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    unit, rows = build_rows(args.hidden, args.batch, device, args.seed)
    dropped: list[int] = []
    with LoadMeter() as load:
        measured = measure(
            unit, rows, args.sampler_repeats, args.warmup, device, args.max_seconds, args.max_other_cores, dropped
        )
    results = summarise(unit, rows)
    benchmark = "sampler step cost in units of G (bench_samplers.py)"
    return {
        **section_record(benchmark, measured, load, dropped[0], "repeats", args.max_other_cores),
        "G_median_ms": results[0]["median_ms"],
        "temperature": TEMPERATURE,
        "rows": results,
    }


def peers_section(samplers: dict[str, Any]) -> dict[str, Any]:
    by_row = {r["row"]: r for r in samplers["rows"]}
    out = []
    for ours, peer in (("sgld", "posteriors sgld"), ("sghmc", "posteriors sghmc")):
        for noise in ("gaussian", "rademacher"):
            label = ours if noise == "gaussian" else f"{ours}, {noise}"
            a, b = by_row.get(label), by_row.get(peer)
            ratio = None
            if a and b and a["ratio"] is not None and b["ratio"] is not None:
                ratio = a["ratio"] / b["ratio"]
            out.append(
                {
                    "ours": label,
                    "peer": peer,
                    "ours_G": a and a["ratio"],
                    "peer_G": b and b["ratio"],
                    "ours_over_peer": ratio,
                    "peer_note": b["note"] if b else "missing",
                }
            )
    return {"benchmark": "our sampler step / posteriors' step (both gradient included)", "rows": out}


def estimator_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    dim, n_steps = args.estimator_dim, args.estimator_steps
    problem = Quadratic.random(dim, condition=10.0, seed=args.seed)
    A = problem.A.to(device=device, dtype=torch.float32)
    b = problem.b.to(device=device, dtype=torch.float32)

    def grad_fn(points: torch.Tensor) -> torch.Tensor:
        return torch.addmm(b, points, A, alpha=1.0, beta=-1.0)  # points @ A - b, one kernel

    gamma = 1.0
    step_size = 0.5 * problem.max_stable_step(gamma)
    x = torch.linspace(-1.0, 1.0, dim, device=device)
    sync = synchroniser(device)
    entries = []
    for keep in (True, False):
        for n_chains in CHAIN_COUNTS:
            sampler = SGLD(step_size=step_size, temperature=0.1)
            est = LocalEntropyEstimator(grad_fn, gamma, sampler, n_steps, keep_draws=keep)
            generator = torch.Generator(device=device).manual_seed(args.seed + n_chains)
            entries.append({"n_chains": n_chains, "keep_draws": keep, "run": (est, generator), "times": []})
    with LoadMeter() as load:
        started, measured, dropped, r = None, 0, 0, 0
        while measured < args.estimator_repeats:
            if r == args.warmup:
                started = time.perf_counter()
            k = r % len(entries)
            busy0, own0, start = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
            times = []
            for e in entries[k:] + entries[:k]:
                est, generator = e["run"]
                sync()
                t0 = time.perf_counter()
                est.estimate(x, e["n_chains"], generator)
                sync()
                times.append((e, (time.perf_counter() - t0) / n_steps))
            other = other_cores_since(busy0, own0, start)
            r += 1
            if r <= args.warmup:
                continue
            if args.max_other_cores is not None and other is not None and other > args.max_other_cores:
                dropped += 1
            else:
                for e, t in times:
                    e["times"].append(t)
                measured += 1
            if time.perf_counter() - started > args.max_seconds or dropped >= 20 * args.estimator_repeats:
                break
    rows = []
    medians = {id(e): statistics.median(e["times"]) if e["times"] else None for e in entries}
    one = {e["keep_draws"]: medians[id(e)] for e in entries if e["n_chains"] == 1}
    for e in entries:
        per_step, base = medians[id(e)], one[e["keep_draws"]]
        row: dict[str, Any] = {"n_chains": e["n_chains"], "keep_draws": e["keep_draws"], "n": len(e["times"])}
        if per_step is None:  # every repeat dropped for contention
            row.update(us_per_step=None, us_per_step_iqr=None, chain_steps_per_s=None, time_over_one_chain=None)
        else:
            row.update(
                us_per_step=1e6 * per_step,
                us_per_step_iqr=1e6 * (quantile(e["times"], 0.75) - quantile(e["times"], 0.25)),
                chain_steps_per_s=e["n_chains"] / per_step,
                time_over_one_chain=None if base is None else per_step / base,
            )
        rows.append(row)
    benchmark = "LocalEntropyEstimator (SGLD) throughput on a quadratic"
    return {
        **section_record(benchmark, measured, load, dropped, "repeats", args.max_other_cores),
        "problem": f"Quadratic.random({dim}, condition=10), float32, grad = x A - b (addmm)",
        "settings": {"gamma": gamma, "step_size": step_size, "temperature": 0.1, "n_steps": n_steps},
        "rows": rows,
    }
