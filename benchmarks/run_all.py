"""All speed benchmarks of the inner loop in one command: tables on stdout, everything in one JSON file.

    python benchmarks/run_all.py [--json [PATH]] [--quick] [--device cpu|cuda] [--threads 2]
                                 [--sections entropy,samplers,estimator] [--hidden 1024] [--batch 128]
                                 [--max-other-cores C] [--quiet-wait S] [--max-seconds S]

Sections (docs/performance.md describes them and the targets):

* ``entropy``: one EntropySGD outer step (``optimizer.step(closure)``, L closure calls) divided by L x G, per
  sampler, noise kind and L (5 and 20). G = zero_grad + forward + backward of the same model at the same batch,
  timed in the same loop right before each outer step (interleaved), so every figure is a ratio.
* ``samplers``: one sampler step, gradient included, divided by G, for every registered sampler and both noise
  kinds, plus torch.optim.SGD and the ``posteriors`` peers (this is ``bench_samplers.py``, imported).
* ``estimator``: LocalEntropyEstimator with SGLD on a 100-D quadratic with 1, 8 and 64 chains: chain-steps
  per second and the time of one step with 64 chains over the time with one chain.
* ``peers`` (derived from ``samplers``): our step / the posteriors step, SGLD and SGHMC.

Timing: each repeat times G and every row once, in an order that rotates from repeat to repeat; each row's
time is divided by that repeat's G and the tables give medians over the repeats after warm-up, with the
interquartile range. The machine, threads, versions and the CPU that other processes used while each section
measured are recorded. On a shared machine a measurement (a repeat; in ``entropy`` a (G, outer step) pair) during
which other processes used more than ``--max-other-cores`` (from ``/proc/stat``) is dropped and retaken, within
``--max-seconds`` per section; the tables say how many were dropped. ``--quiet-wait S`` first waits up to S seconds
for a quiet machine. Nothing asserts a timing. On CUDA, every clock read is preceded by a synchronisation.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.functional import cross_entropy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_samplers as bs

from localentropy.entropy import EntropySGD
from localentropy.entropy.estimators import LocalEntropyEstimator
from localentropy.entropy.problems import Quadratic
from localentropy.samplers import SGLD, available_samplers, sampler_class, sampler_hyperparameters

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "run_all.json"
SECTIONS = ("entropy", "samplers", "estimator")
TEMPERATURE = bs.TEMPERATURE
# EntropySGD rows: the inner sampler's settings are bench_samplers' (small steps that keep the weights of their
# initial size); gamma and the outer lr are small for the same reason (the model is not trained, only timed).
ENTROPY_GAMMA, ENTROPY_LR = 0.03, 0.01
CORE_SAMPLERS = ("sgld", "sghmc", "psgld", "msgld")
CHAIN_COUNTS = (1, 8, 64)

TARGETS = {
    "entropy_gaussian": 2.85,  # G per Entropy-SGD inner step, Gaussian noise
    "entropy_rademacher": 2.0,  # G per Entropy-SGD inner step, Rademacher noise
    "step_sgld": 2.3,
    "step_sghmc": 2.5,
    "step_psgld": 2.5,
    "chains_64_over_1": 4.0,
    "ours_over_peer": 0.9,
}


class LoadMeter:
    """Cores' worth of CPU that other processes used while a section measured (bench_samplers' method)."""

    def __enter__(self) -> LoadMeter:
        self.busy0, self.own0, self.start = bs.busy_cpu_seconds(), bs.own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.start
        busy1, own1 = bs.busy_cpu_seconds(), bs.own_cpu_seconds()
        self.other_cores = None
        if self.busy0 is not None and busy1 is not None and self.wall > 0:
            self.other_cores = max(0.0, ((busy1 - self.busy0) - (own1 - self.own0)) / self.wall)


def wait_for_quiet(max_wait: float, threshold: float = 0.3, window: float = 2.0) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until other processes use < ``threshold`` cores over a ``window``-second look."""
    start, other = time.perf_counter(), None
    while max_wait > 0:
        with LoadMeter() as look:
            time.sleep(window)
        other = look.other_cores
        if other is None or other < threshold or time.perf_counter() - start >= max_wait:
            break
    return {"waited_s": time.perf_counter() - start, "other_cores_when_started": other}


# ----------------------------------------------------------------------------------------------------------
# (a) EntropySGD outer step / (L x G)
# ----------------------------------------------------------------------------------------------------------


def entropy_sampler_options(name: str, noise: str) -> dict[str, Any]:
    """sampler_options for EntropySGD: bench_samplers' step sizes, its temperature, the noise kind."""
    accepted = sampler_hyperparameters(name)
    options = dict(bs.SAMPLER_SETTINGS.get(name, bs.DEFAULT_SETTINGS))
    options.update({k: v for k, v in (("temperature", TEMPERATURE), ("noise", noise)) if k in accepted})
    if sampler_class(name).wraps_sampler:
        base = {"name": bs.CYCLICAL_BASE, **bs.SAMPLER_SETTINGS[bs.CYCLICAL_BASE], "temperature": TEMPERATURE}
        options = {"sampler": {**base, "noise": noise}, "n_cycles": 4, "total_steps": 10**6}
    return options


def entropy_row(
    label: str, base: nn.Module, x, y, device: torch.device, seed: int, inner_steps: int, **optimizer: Any
) -> bs.Row:
    """One EntropySGD outer step on a copy of the model; ``times`` will hold the time per inner step."""
    model = copy.deepcopy(base)
    settings = {"inner_steps": inner_steps, "gamma": ENTROPY_GAMMA, "lr": ENTROPY_LR, **optimizer}
    reported = {k: v for k, v in settings.items()}
    generator = torch.Generator(device=device).manual_seed(seed)
    try:
        opt = EntropySGD(model.parameters(), generator=generator, **settings)
    except ValueError as exc:
        return bs.Row(label, "entropy", reported, None, note=f"failed: {exc}")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    def step() -> None:
        opt.step(closure)

    row = bs.Row(label, "entropy", reported, step, sampler=optimizer.get("sampler"))
    row.inner_steps = inner_steps  # type: ignore[attr-defined]
    return row


def build_entropy_rows(
    hidden: int, batch: int, device: torch.device, seed: int, inner: tuple[int, ...], samplers: tuple[str, ...]
) -> tuple[bs.Row, list[bs.Row]]:
    base, x, y = bs_model(hidden, batch, device, seed)
    g_model = copy.deepcopy(base)
    unit = bs.Row("G (zero_grad + forward + backward)", "unit", {}, lambda: bs.gradient_step(g_model, x, y))
    rows: list[bs.Row] = []
    for L in inner:
        for noise in ("gaussian", "rademacher"):
            for name in samplers:
                label = f"L={L} {name}" + ("" if noise == "gaussian" else f", {noise}")
                cls = sampler_class(name)
                if cls.needs_potential:  # U must include the coupling term, which EntropySGD does not hand over
                    note = f"not applicable: {cls.__name__} needs the inner potential U, EntropySGD only gives grad U"
                    row = bs.Row(label, "entropy", {}, None, note=note, sampler=name)
                else:
                    opts = entropy_sampler_options(name, noise)
                    row = entropy_row(label, base, x, y, device, seed + 1, L, sampler=name, sampler_options=opts)
                row.noise, row.inner_steps = noise, L  # type: ignore[attr-defined]
                rows.append(row)
        # The authors' inner loop (Nesterov MomentumSGLD, coupling after the momentum buffer, alpha = 0.25).
        opts = {"step_size": 1e-4, "noise_scale": math.sqrt(TEMPERATURE), "momentum": 0.9}
        row = entropy_row(
            f"L={L} preset authors (msgld)", base, x, y, device, seed + 1, L, preset="authors", sampler_options=opts
        )
        row.noise, row.sampler = "gaussian", "msgld"
        rows.append(row)
    for row in rows:  # one trial step each: a row that cannot run is reported, not fatal
        if row.step is not None:
            try:
                row.step()
            except Exception as exc:
                row.step, row.note = None, f"failed: {type(exc).__name__}: {exc}"
    return unit, rows


def bs_model(hidden: int, batch: int, device: torch.device, seed: int):
    """The model and batch of bench_samplers.build_rows (same seed, same numbers)."""
    torch.manual_seed(seed)
    base = bs.make_mlp(hidden).to(device)
    data_gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, 784, generator=data_gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=data_gen).to(device)
    return base, x, y


def measure_bracketed(
    unit: bs.Row,
    rows: list[bs.Row],
    repeats: int,
    warmup: int,
    device: torch.device,
    max_seconds: float,
    max_other_cores: float | None = None,
) -> tuple[int, int]:
    """bench_samplers.measure with G timed right before every row (an outer step lasts L G or more, so one G per
    repeat would be a noisy unit): row k's ratio in a repeat is its time over the G timed just before it.

    Fills ``row.times`` (per inner step) and ``row.unit_times`` (its own G), and ``unit.times`` with every G. With
    ``max_other_cores``, a (G, row) pair during which other processes used more cores is dropped. Returns the
    number of repeats and of dropped pairs.
    """
    runnable = [r for r in rows if r.step is not None]
    for row in runnable:
        row.unit_times = []  # type: ignore[attr-defined]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.perf_counter

    def timed(fn: Callable[[], None]) -> float:
        sync()
        start = clock()
        fn()
        sync()
        return clock() - start

    measured, started, dropped = 0, None, 0
    for r in range(warmup + repeats):
        if r == warmup:
            started = clock()
        k = r % max(1, len(runnable))
        for row in runnable[k:] + runnable[:k]:
            busy0, own0, t0 = bs.busy_cpu_seconds(), bs.own_cpu_seconds(), clock()
            g = timed(unit.step)  # type: ignore[arg-type]
            t = timed(row.step)  # type: ignore[arg-type]
            if r < warmup:
                continue
            other = bs.other_cores_since(busy0, own0, t0)
            if max_other_cores is not None and other is not None and other > max_other_cores:
                dropped += 1
                continue
            unit.times.append(g)
            row.unit_times.append(g)  # type: ignore[attr-defined]
            row.times.append(t / getattr(row, "inner_steps", 1))
        if r >= warmup:
            measured += 1
            if started is not None and clock() - started > max_seconds:
                break
    return measured, dropped


def summarise_bracketed(unit: bs.Row, rows: list[bs.Row]) -> list[dict[str, Any]]:
    """bench_samplers.summarise's entries, each row's ratios taken against its own bracketing G."""
    g_only = bs.Row(unit.name, unit.kind, unit.settings, None, times=list(unit.times))
    first = bs.summarise(g_only, [])[0]
    first.update(ratio=1.0, ratio_q25=1.0, ratio_q75=1.0, ratio_iqr=0.0)
    out = [first]
    for row in rows:
        unit_times = getattr(row, "unit_times", [])
        (entry,) = bs.summarise(bs.Row(unit.name, "unit", {}, None, times=unit_times), [row])[1:]
        out.append(entry)
    return out


def entropy_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    inner = (5,) if args.quick and not args.full_inner else (5, 20)
    samplers = tuple(n for n in available_samplers())
    unit, rows = build_entropy_rows(args.hidden, args.batch, device, args.seed, inner, samplers)
    with LoadMeter() as load:
        measured, dropped = measure_bracketed(
            unit, rows, args.entropy_repeats, args.warmup, device, args.max_seconds, args.max_other_cores
        )
    results = summarise_bracketed(unit, rows)
    for entry, row in zip(results[1:], rows, strict=True):
        entry["inner_steps"] = getattr(row, "inner_steps", None)
        entry["outer_ms"] = None if entry["median_ms"] is None else entry["median_ms"] * entry["inner_steps"]
    return {
        "benchmark": "EntropySGD outer step / (L x G): G per inner step, gradient included",
        "repeats": measured,
        "G_median_ms": results[0]["median_ms"],
        "measure_wall_s": load.wall,
        "other_processes_cores": load.other_cores,
        "dropped": dropped,
        "dropped_unit": "(G, outer step) pairs during which other processes used more than max_other_cores",
        "max_other_cores": args.max_other_cores,
        "settings": {
            "gamma": ENTROPY_GAMMA,
            "lr": ENTROPY_LR,
            "temperature": TEMPERATURE,
            "sampler_settings": bs.SAMPLER_SETTINGS,
        },
        "rows": results,
    }


# ----------------------------------------------------------------------------------------------------------
# (b) one sampler step / G, and (d) peers: bench_samplers
# ----------------------------------------------------------------------------------------------------------


def samplers_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    unit, rows = bs.build_rows(args.hidden, args.batch, device, args.seed)
    dropped: list[int] = []
    with LoadMeter() as load:
        measured = bs.measure(
            unit, rows, args.sampler_repeats, args.warmup, device, args.max_seconds, args.max_other_cores, dropped
        )
    results = bs.summarise(unit, rows)
    return {
        "benchmark": "sampler step cost in units of G (bench_samplers.py)",
        "repeats": measured,
        "G_median_ms": results[0]["median_ms"],
        "measure_wall_s": load.wall,
        "other_processes_cores": load.other_cores,
        "dropped": dropped[0],
        "dropped_unit": "repeats during which other processes used more than max_other_cores",
        "max_other_cores": args.max_other_cores,
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


# ----------------------------------------------------------------------------------------------------------
# (c) estimator throughput with 1, 8, 64 chains
# ----------------------------------------------------------------------------------------------------------


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
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
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
            busy0, own0, start = bs.busy_cpu_seconds(), bs.own_cpu_seconds(), time.perf_counter()
            times = []
            for e in entries[k:] + entries[:k]:
                est, generator = e["run"]
                sync()
                t0 = time.perf_counter()
                est.estimate(x, e["n_chains"], generator)
                sync()
                times.append((e, (time.perf_counter() - t0) / n_steps))
            other = bs.other_cores_since(busy0, own0, start)
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
                us_per_step_iqr=1e6 * (bs.quantile(e["times"], 0.75) - bs.quantile(e["times"], 0.25)),
                chain_steps_per_s=e["n_chains"] / per_step,
                time_over_one_chain=None if base is None else per_step / base,
            )
        rows.append(row)
    return {
        "benchmark": "LocalEntropyEstimator (SGLD) throughput on a quadratic",
        "problem": f"Quadratic.random({dim}, condition=10), float32, grad = x A - b (addmm)",
        "settings": {"gamma": gamma, "step_size": step_size, "temperature": 0.1, "n_steps": n_steps},
        "repeats": measured,
        "measure_wall_s": load.wall,
        "other_processes_cores": load.other_cores,
        "dropped": dropped,
        "dropped_unit": "repeats during which other processes used more than max_other_cores",
        "max_other_cores": args.max_other_cores,
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------------------
# Targets, tables
# ----------------------------------------------------------------------------------------------------------


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
    smp = report.get("samplers")
    if smp:
        for name in ("sgld", "sghmc", "psgld"):
            add(
                f"step_{name}",
                f"{name} step, gradient included (G)",
                _ratio(smp["rows"], name),
                TARGETS[f"step_{name}"],
            )
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--json", nargs="?", const=str(DEFAULT_JSON), default=None, help=f"write JSON (default path {DEFAULT_JSON})"
    )
    p.add_argument("--quick", action="store_true", help="few repeats and L = 5 only (about a minute)")
    p.add_argument("--full-inner", action="store_true", help="with --quick: still time L = 20")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--hidden", type=int, default=1024, help="width of both hidden layers (default 1024: mnistfc)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=None, help="unmeasured repeats per section (default 3; quick 1)")
    p.add_argument("--entropy-repeats", type=int, default=None, help="default 25 (quick 3)")
    p.add_argument("--sampler-repeats", type=int, default=None, help="default 150 (quick 15)")
    p.add_argument("--estimator-repeats", type=int, default=None, help="default 30 (quick 5)")
    p.add_argument("--estimator-dim", type=int, default=100)
    p.add_argument("--estimator-steps", type=int, default=200, help="steps per estimate() call (default 200)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="per section: stop measuring after the repeat that passes this many seconds (default 240; quick 30)",
    )
    p.add_argument(
        "--max-other-cores",
        type=float,
        default=None,
        help="drop (and retake, within --max-seconds) a measurement during which other processes used more than "
        "this many cores (default: CPUs - threads + 0.3, i.e. 0.3 with 2 threads on 2 CPUs: any competition for our "
        "cores; a negative value keeps everything)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each section, wait up to this many seconds for other processes to use < 0.3 cores (default 0)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "warmup": (3, 1),
        "entropy_repeats": (25, 3),
        "sampler_repeats": (150, 15),
        "estimator_repeats": (30, 5),
        "max_seconds": (240.0, 30.0),
    }
    for key, (full, short) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, short if quick else full)
    if args.max_other_cores is None:
        args.max_other_cores = max(0.3, (os.cpu_count() or 1) - args.threads + 0.3)
    elif args.max_other_cores < 0:
        args.max_other_cores = None
    args.sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    if (
        min(
            args.threads,
            args.hidden,
            args.batch,
            args.entropy_repeats,
            args.sampler_repeats,
            args.estimator_repeats,
            args.estimator_dim,
            args.estimator_steps,
        )
        < 1
        or args.warmup < 0
    ):
        p.error("sizes, threads and repeats must be >= 1 and --warmup >= 0")
    if not args.max_seconds > 0:
        p.error("--max-seconds must be > 0")
    return args


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in bs.make_mlp(args.hidden).parameters())
    report: dict[str, Any] = {
        "command": "python benchmarks/run_all.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": f"MLP 784-{args.hidden}-{args.hidden}-10 (ReLU), {n_params} parameters, batch {args.batch}",
        "machine": {**bs.machine_info(device, args.threads), "loadavg_1min_before": bs.load_average()},
        "versions": versions(),
        "quick": args.quick,
    }
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("samplers", lambda: samplers_section(args, device)),
        ("entropy", lambda: entropy_section(args, device)),
        ("estimator", lambda: estimator_section(args, device)),
    ]
    try:
        for name, fn in steps:
            if name in args.sections:
                quiet = wait_for_quiet(args.quiet_wait)
                report[name] = {**fn(), "quiet_wait": quiet}
    finally:
        torch.set_num_threads(previous)
    if "samplers" in report:
        report["peers"] = peers_section(report["samplers"])
    report["targets"] = targets(report)
    print_report(report, args)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    sys.stdout.flush()
    return report


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    try:
        import importlib.metadata as md

        for pkg in ("localentropy", "posteriors"):
            try:
                out[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                out[pkg] = "not installed"
    except ImportError:  # pragma: no cover
        pass
    return out


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
        print(bs.format_table(s["rows"]))
    if "peers" in report:
        print("\n## (d) peers: our step / posteriors' step\n")
        print(format_peers(report["peers"]))
    if "entropy" in report:
        e = report["entropy"]
        print(f"\n## (a) EntropySGD outer step / (L x G); G = {_ms(e['G_median_ms'])}; {load_line(e)}\n")
        print(bs.format_table(e["rows"]).replace("| median ms |", "| ms per inner step |"))
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


if __name__ == "__main__":
    run()
