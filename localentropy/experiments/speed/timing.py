"""Interleaved timing against a unit G, and how much CPU other processes used meanwhile.

Each repeat times the unit and every row once, in an order that rotates from repeat to repeat, so machine noise
(other processes, frequency changes) falls on all rows alike; each row's time is divided by the same repeat's G.
On a shared machine a repeat during which other processes used more than ``max_other_cores`` (from
``/proc/stat``) is dropped and retaken. Nothing here asserts a timing: the numbers describe one machine.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import localentropy
from localentropy.diagnostics.compare import median_interval
from localentropy.experiments.core.cpuload import LoadMeter, busy_cpu_seconds, other_cores_since, own_cpu_seconds

NOT_MEASURED = "not measured (every repeat dropped for contention)"


@dataclass
class Row:
    """One timed thing: ``step`` runs it once (None when it cannot run; ``note`` says why)."""

    name: str
    kind: str  # "unit", "localentropy", "reference", "peer", "entropy" or "floor"
    settings: dict[str, Any]
    step: Callable[[], None] | None
    note: str = ""
    sampler: str | None = None  # the registered name, for localentropy rows
    noise: str | None = None
    times: list[float] = field(default_factory=list)  # seconds, one per measured repeat (per inner step)
    inner_steps: int = 1  # an Entropy-SGD outer step's time is divided by this
    unit_times: list[float] = field(default_factory=list)  # the G timed right before each of ``times``


# ------------------------------------------------------------------------------------------------ the machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device, threads: int) -> dict[str, Any]:
    info = {
        "torch": torch.__version__,
        "threads": threads,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "localentropy": localentropy.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


# ------------------------------------------------------------------------------------------------ measuring


def synchroniser(device: torch.device) -> Callable[[], None]:
    """What runs before every clock read: a CUDA synchronisation on a GPU, nothing on a CPU."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def measure(
    unit: Row,
    rows: list[Row],
    repeats: int,
    warmup: int,
    device: torch.device,
    max_seconds: float = math.inf,
    max_other_cores: float | None = None,
    dropped: list[int] | None = None,
) -> int:
    """Time every runnable row once per repeat, in a rotating order; keep the repeats after warm-up.

    Stops early, after a whole repeat, once ``max_seconds`` have passed since the first measured repeat.
    With ``max_other_cores``, a repeat during which other processes used more cores than that (``/proc/stat``)
    is dropped and another one taken (until ``max_seconds``); their number is appended to ``dropped``.
    Returns the number of measured (kept) repeats.
    """
    entries = [unit, *(r for r in rows if r.step is not None)]
    sync = synchroniser(device)
    clock = time.perf_counter
    measured, started, n_dropped, r = 0, None, 0, 0
    while measured < repeats:
        if r == warmup:
            started = clock()
        k = r % len(entries)
        busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), clock()
        times = []
        for entry in entries[k:] + entries[:k]:
            sync()
            start = clock()
            entry.step()  # type: ignore[misc]
            sync()
            times.append((entry, clock() - start))
        other = other_cores_since(busy0, own0, t0)
        r += 1
        if r <= warmup:
            continue
        if max_other_cores is not None and other is not None and other > max_other_cores:
            n_dropped += 1
        else:
            for entry, elapsed in times:
                entry.times.append(elapsed)
            measured += 1
        if (started is not None and clock() - started > max_seconds) or n_dropped >= 20 * repeats:
            break
    if dropped is not None:
        dropped.append(n_dropped)
    return measured


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(unit: Row, rows: list[Row]) -> list[dict[str, Any]]:
    """One entry per row (the unit first): median time, median ratio to the same repeat's G, its IQR and its 95 %
    distribution-free interval over the repeats (``ratio_ci95``, None below 6 repeats), and the per-repeat ratios."""
    out = []
    for row in [unit, *rows]:
        entry: dict[str, Any] = {
            "row": row.name,
            "kind": row.kind,
            "sampler": row.sampler,
            "noise": row.noise,
            "settings": row.settings,
            "note": row.note,
        }
        if row.times:
            ratios = [t / g for t, g in zip(row.times, unit.times, strict=True)]
            q25, q75 = quantile(ratios, 0.25), quantile(ratios, 0.75)
            ci = median_interval(ratios)
            entry.update(
                median_ms=1e3 * statistics.median(row.times),
                ratio=statistics.median(ratios),
                ratio_q25=q25,
                ratio_q75=q75,
                ratio_iqr=q75 - q25,
                ratio_ci95=None if ci is None else list(ci),
                ratios=ratios,
                n=len(ratios),
            )
        else:
            entry.update(
                median_ms=None,
                ratio=None,
                ratio_q25=None,
                ratio_q75=None,
                ratio_iqr=None,
                ratio_ci95=None,
                ratios=[],
                n=0,
            )
        out.append(entry)
    return out


def format_table(results: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`summarise`'s entries; a row without timings says why (its note, or that every
    repeat was dropped)."""
    lines = ["| row | median ms | ratio to G | IQR of ratio |", "|---|---:|---:|---:|"]
    for r in results:
        if r["ratio"] is None or r["median_ms"] is None:
            note = " ".join((r["note"] or NOT_MEASURED).replace("|", "/").split())
            lines.append(f"| {r['row']} | - | - | {note[:100] + ('...' if len(note) > 100 else '')} |")
        else:
            iqr = f"{r['ratio_iqr']:.3f} ({r['ratio_q25']:.2f}-{r['ratio_q75']:.2f})"
            lines.append(f"| {r['row']} | {r['median_ms']:.2f} | {r['ratio']:.2f} | {iqr} |")
    return "\n".join(lines)


def section_record(
    benchmark: str, repeats: int, load: LoadMeter, dropped: int, dropped_unit: str, max_other_cores: float | None
) -> dict[str, Any]:
    """The fields every measured section records: what it measured, how many repeats, the contention."""
    return {
        "benchmark": benchmark,
        "repeats": repeats,
        "measure_wall_s": load.wall,
        "other_processes_cores": load.other_cores,
        "dropped": dropped,
        "dropped_unit": f"{dropped_unit} during which other processes used more than max_other_cores",
        "max_other_cores": max_other_cores,
    }


def finish_report(report: dict[str, Any], json_path: str | None) -> dict[str, Any]:
    """Write the report as JSON where ``--json`` says (if it does), say so, flush stdout; returns the report."""
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    sys.stdout.flush()
    return report
