"""How busy the machine is: the CPU that other processes used while something was measured.

The machine's busy CPU-seconds come from ``/proc/stat`` (all cores, all processes); less this process's own CPU
(and, where asked, its children's that ended and were waited for) over the wall time, they are the cores' worth of
CPU that everything else used meanwhile. The speed benchmark drops a repeat that others disturbed; a sweep records
it for every run (``other_cores``), which says whether its seconds were measured alone. Where ``/proc/stat`` is
missing (not Linux), the measure is None and callers fall back to what they had.
"""

from __future__ import annotations

import os
import time
from typing import Any


def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not report one)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def busy_cpu_seconds() -> float | None:
    """CPU-seconds spent busy by the whole machine since boot, from /proc/stat (None where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(children: bool = False) -> float:
    """CPU-seconds this process used; ``children``: with those of its children that ended and were waited for
    (a training run's launcher and its ranks, which count as the run's own once it has waited for them)."""
    times = os.times()
    return times.user + times.system + (times.children_user + times.children_system if children else 0.0)


def other_cores_since(busy0: float | None, own0: float, t0: float, children: bool = False) -> float | None:
    """Cores' worth of CPU that other processes used since (busy0, own0, t0) (None where unknown); ``own0`` is
    :func:`own_cpu_seconds` with the same ``children``."""
    busy1, own1, wall = busy_cpu_seconds(), own_cpu_seconds(children), time.perf_counter() - t0
    if busy0 is None or busy1 is None or wall <= 0:
        return None
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall)


class LoadMeter:
    """Cores' worth of CPU that other processes used while a section measured (``other_cores``; None if unknown)
    and the section's wall seconds (``wall``). ``children``: this process's waited-for children count as its own."""

    def __init__(self, children: bool = False) -> None:
        self.children = children

    def __enter__(self) -> LoadMeter:
        self.busy0, self.own0 = busy_cpu_seconds(), own_cpu_seconds(self.children)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.perf_counter() - self.start
        self.other_cores = other_cores_since(self.busy0, self.own0, self.start, self.children)


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
