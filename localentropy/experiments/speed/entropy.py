"""Section (a) of the speed benchmark: one Entropy-SGD outer step divided by L x G, and the floor under it.

Every sampler that takes only a gradient, both noise kinds, L = 5 and 20, and the ``preset="authors"`` inner loop
(Nesterov MomentumSGLD, coupling after the momentum). G is timed right before every outer step (an outer step lasts
L G or more, so one G per repeat would be a noisy unit). The floor rows bound the Gaussian inner step from below:

* ``G + serial draw``: G, then one ``normal_`` over all the parameters from one generator (D, the draw of the serial
  noise stream and of torch's own path);
* ``G + parallel draw``: G, then the chunked draw the optimizer makes on a CPU (noise stream ``chunked-v1``): the
  parameters' chunk plan, one generator per chunk, the chunks drawn on the pool's threads.

An inner step can do no better than its floor plus its update arithmetic; the targets compare it with G + D.
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.functional import cross_entropy

from localentropy.entropy import EntropySGD
from localentropy.entropy.optim.chunks import CHUNK_SIZE, chunk_generators, chunk_plan, run_pipelined
from localentropy.entropy.optim.inner import ChunkedLoop
from localentropy.experiments.core.cpuload import LoadMeter, busy_cpu_seconds, other_cores_since, own_cpu_seconds
from localentropy.experiments.speed.samplers import (
    CYCLICAL_BASE,
    DEFAULT_SETTINGS,
    SAMPLER_SETTINGS,
    TEMPERATURE,
    gradient_step,
    model_and_batch,
    try_once,
)
from localentropy.experiments.speed.timing import Row, section_record, summarise, synchroniser
from localentropy.samplers import SGLD, available_samplers, sampler_class, sampler_hyperparameters

# The inner sampler's settings are the sampler section's (small steps that keep the weights of their initial size);
# gamma and the outer lr are small for the same reason (the model is not trained, only timed).
ENTROPY_GAMMA, ENTROPY_LR = 0.03, 0.01
UNIT_NAME = "G (zero_grad + forward + backward)"
SERIAL_FLOOR = "G + serial draw"
PARALLEL_FLOOR = "G + parallel draw"


def entropy_sampler_options(name: str, noise: str) -> dict[str, Any]:
    """sampler_options for EntropySGD: the sampler section's step sizes, its temperature, the noise kind."""
    accepted = sampler_hyperparameters(name)
    options = dict(SAMPLER_SETTINGS.get(name, DEFAULT_SETTINGS))
    options.update({k: v for k, v in (("temperature", TEMPERATURE), ("noise", noise)) if k in accepted})
    if sampler_class(name).wraps_sampler:
        base = {"name": CYCLICAL_BASE, **SAMPLER_SETTINGS[CYCLICAL_BASE], "temperature": TEMPERATURE}
        options = {"sampler": {**base, "noise": noise}, "n_cycles": 4, "total_steps": 10**6}
    return options


def entropy_row(
    label: str, base: nn.Module, x, y, device: torch.device, seed: int, inner_steps: int, **optimizer: Any
) -> Row:
    """One EntropySGD outer step on a copy of the model; ``times`` will hold the time per inner step."""
    model = copy.deepcopy(base)
    settings = {"inner_steps": inner_steps, "gamma": ENTROPY_GAMMA, "lr": ENTROPY_LR, **optimizer}
    reported = dict(settings)
    generator = torch.Generator(device=device).manual_seed(seed)
    try:
        opt = EntropySGD(model.parameters(), generator=generator, **settings)
    except ValueError as exc:
        return Row(label, "entropy", reported, None, note=f"failed: {exc}", inner_steps=inner_steps)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss

    def step() -> None:
        opt.step(closure)

    return Row(label, "entropy", reported, step, sampler=optimizer.get("sampler"), inner_steps=inner_steps)


def floor_rows(base: nn.Module, x, y, device: torch.device, seed: int) -> list[Row]:
    """``G + serial draw`` and ``G + parallel draw`` (module docstring), each on its own copy of the model."""
    serial_model = copy.deepcopy(base)
    numels = [p.numel() for p in serial_model.parameters()]
    buffer = torch.empty(sum(numels), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)

    def serial() -> None:
        gradient_step(serial_model, x, y)
        buffer.normal_(generator=generator)

    settings = {"draw": "one normal_ over all parameters, one generator", "entries": sum(numels)}
    rows = [Row(SERIAL_FLOOR, "floor", settings, serial, noise="gaussian")]
    if device.type != "cpu":
        note = "not applicable: on CUDA the optimizer draws with torch's own Philox generator (the serial stream)"
        return [*rows, Row(PARALLEL_FLOOR, "floor", {}, None, note=note, noise="gaussian")]
    model = copy.deepcopy(base)
    params = list(model.parameters())
    plan = chunk_plan(numels)
    with torch.no_grad():  # the optimizer builds its chunk views of the parameters outside autograd too
        loop = ChunkedLoop(
            SGLD(step_size=SAMPLER_SETTINGS["sgld"]["step_size"], temperature=TEMPERATURE),
            params,
            [p.detach().clone() for p in params],
            False,
            chunk_generators(torch.Generator().manual_seed(seed), len(plan)),
            plan,
        )

    def parallel() -> None:  # the optimizer's draws, scheduled as it schedules them, without the update passes
        gradient_step(model, x, y)
        run_pipelined(loop.draw, lambda k, noise: None, len(plan))

    settings = {
        "draw": "chunked-v1: one normal_ per chunk, one generator per chunk, on the pool's threads (run_pipelined)",
        "chunks": len(plan),
        "chunk_size": CHUNK_SIZE,
        "threads": torch.get_num_threads(),
    }
    return [*rows, Row(PARALLEL_FLOOR, "floor", settings, parallel, noise="gaussian")]


def build_entropy_rows(
    hidden: int, batch: int, device: torch.device, seed: int, inner: tuple[int, ...], samplers: tuple[str, ...]
) -> tuple[Row, list[Row]]:
    base, x, y = model_and_batch(hidden, batch, device, seed)
    g_model = copy.deepcopy(base)
    unit = Row(UNIT_NAME, "unit", {}, lambda: gradient_step(g_model, x, y))
    rows: list[Row] = floor_rows(base, x, y, device, seed + 1)
    for L in inner:
        for noise in ("gaussian", "rademacher"):
            for name in samplers:
                label = f"L={L} {name}" + ("" if noise == "gaussian" else f", {noise}")
                cls = sampler_class(name)
                if cls.needs_potential:  # U must include the coupling term, which EntropySGD does not hand over
                    note = f"not applicable: {cls.__name__} needs the inner potential U, EntropySGD only gives grad U"
                    row = Row(label, "entropy", {}, None, note=note, sampler=name, inner_steps=L)
                else:
                    opts = entropy_sampler_options(name, noise)
                    row = entropy_row(label, base, x, y, device, seed + 1, L, sampler=name, sampler_options=opts)
                row.noise = noise
                rows.append(row)
        # The authors' inner loop (Nesterov MomentumSGLD, coupling after the momentum buffer, alpha = 0.25).
        opts = {"step_size": 1e-4, "noise_scale": math.sqrt(TEMPERATURE), "momentum": 0.9}
        row = entropy_row(
            f"L={L} preset authors (msgld)", base, x, y, device, seed + 1, L, preset="authors", sampler_options=opts
        )
        row.noise, row.sampler = "gaussian", "msgld"
        rows.append(row)
    try_once(rows)
    return unit, rows


def measure_bracketed(
    unit: Row,
    rows: list[Row],
    repeats: int,
    warmup: int,
    device: torch.device,
    max_seconds: float,
    max_other_cores: float | None = None,
) -> tuple[int, int]:
    """timing.measure with G timed right before every row (an outer step lasts L G or more, so one G per repeat
    would be a noisy unit): row k's ratio in a repeat is its time over the G timed just before it.

    Fills ``row.times`` (per inner step) and ``row.unit_times`` (its own G), and ``unit.times`` with every G. With
    ``max_other_cores``, a (G, row) pair during which other processes used more cores is dropped. Returns the
    number of repeats and of dropped pairs.
    """
    runnable = [r for r in rows if r.step is not None]
    sync = synchroniser(device)
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
            busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), clock()
            g = timed(unit.step)  # type: ignore[arg-type]
            t = timed(row.step)  # type: ignore[arg-type]
            if r < warmup:
                continue
            other = other_cores_since(busy0, own0, t0)
            if max_other_cores is not None and other is not None and other > max_other_cores:
                dropped += 1
                continue
            unit.times.append(g)
            row.unit_times.append(g)
            row.times.append(t / row.inner_steps)
        if r >= warmup:
            measured += 1
            if started is not None and clock() - started > max_seconds:
                break
    return measured, dropped


def summarise_bracketed(unit: Row, rows: list[Row]) -> list[dict[str, Any]]:
    """timing.summarise's entries, each row's ratios taken against its own bracketing G."""
    first = summarise(Row(unit.name, unit.kind, unit.settings, None, times=list(unit.times)), [])[0]
    if unit.times:  # G over itself; left None (not measured) when every pair was dropped
        first.update(ratio=1.0, ratio_q25=1.0, ratio_q75=1.0, ratio_iqr=0.0, ratio_ci95=[1.0, 1.0])
    out = [first]
    for row in rows:
        (entry,) = summarise(Row(unit.name, "unit", {}, None, times=row.unit_times), [row])[1:]
        out.append(entry)
    return out


def entropy_section(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    samplers = tuple(available_samplers())
    inner = (5,) if args.quick and not args.full_inner else (5, 20)
    unit, rows = build_entropy_rows(args.hidden, args.batch, device, args.seed, inner, samplers)
    with LoadMeter() as load:
        measured, dropped = measure_bracketed(
            unit, rows, args.entropy_repeats, args.warmup, device, args.max_seconds, args.max_other_cores
        )
    results = summarise_bracketed(unit, rows)
    for entry, row in zip(results[1:], rows, strict=True):
        entry["inner_steps"] = row.inner_steps
        entry["outer_ms"] = None if entry["median_ms"] is None else entry["median_ms"] * entry["inner_steps"]
    benchmark = "EntropySGD outer step / (L x G): G per inner step, gradient included"
    return {
        **section_record(benchmark, measured, load, dropped, "(G, outer step) pairs", args.max_other_cores),
        "G_median_ms": results[0]["median_ms"],
        "settings": {
            "gamma": ENTROPY_GAMMA,
            "lr": ENTROPY_LR,
            "temperature": TEMPERATURE,
            "sampler_settings": SAMPLER_SETTINGS,
        },
        "rows": results,
    }
