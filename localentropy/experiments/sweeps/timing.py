"""How a sweep's runs were timed: results.json's ``timing`` record, and the wait for a quiet machine before them.

Each run measures, in the process that trains it, its wall seconds and the cores' worth of CPU that other
processes used meanwhile (``other_cores``: the machine's busy CPU from /proc/stat less the run's own,
:mod:`localentropy.experiments.core.cpuload`). A sweep whose runs go one at a time on local processes first waits
(up to ``QUIET_WAIT`` seconds) until other processes are quiet, since what ran just before it (its own tuning
pool, the previous step of ``localentropy reproduce``) may still be ending. The 1-minute load average is kept in
the record too, but it lags by about a minute, so it cannot tell whether the runs themselves ran alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from localentropy.experiments.core.cpuload import wait_for_quiet

# The runs were timed alone when other processes used less than this many cores during every run: the sweep's own
# process waiting on its worker and the operating system's own work use well under it (0.00-0.01 cores on this
# project's 2-core machine when idle), while a second training run at the same time uses 1-2 cores.
OTHER_CORES_ALONE = 0.25
IDLE_LOAD = 0.5  # the older rule, where other_cores is unknown: a 1-minute load average below this at the start
QUIET_WAIT = 60.0  # seconds, at most, to wait for a quiet machine before runs timed one at a time


def wait_until_quiet(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other processes use less than ``OTHER_CORES_ALONE`` cores; the seconds
    waited."""
    return float(wait_for_quiet(max_wait, threshold=OTHER_CORES_ALONE)["waited_s"])


def timing_record(
    runs_at_a_time: int,
    load_start: float | None,
    load_end: float | None,
    other_cores: Iterable[float | None] = (),
    waited_s: float | None = None,
) -> dict[str, Any]:
    """How a sweep's seconds were measured: runs at a time, the machine's 1-minute load average when they started
    and ended, the most and the mean over the runs of the cores other processes used during each
    (``other_cores_max``, ``other_cores_mean``: over the runs that measured it, None when none did) and the seconds
    waited for a quiet machine before them (``waited_s``, None when the sweep did not wait).

    ``alone`` (timed alone): one run at a time, and other processes used less than ``OTHER_CORES_ALONE`` cores
    during every run; where that was not measured (no /proc/stat), the older rule: a load average below
    ``IDLE_LOAD`` when the runs started."""
    measured = [float(c) for c in other_cores if c is not None]
    most = max(measured) if measured else None
    by_load = load_start is not None and load_start < IDLE_LOAD
    quiet = most < OTHER_CORES_ALONE if most is not None else by_load
    return {
        "runs_at_a_time": runs_at_a_time,
        "load_start": load_start,
        "load_end": load_end,
        "idle_load": IDLE_LOAD,
        "other_cores_max": most,
        "other_cores_mean": statistics.fmean(measured) if measured else None,
        "other_cores_alone": OTHER_CORES_ALONE,
        "waited_s": waited_s,
        "alone": runs_at_a_time == 1 and quiet,
    }


def measured_text(timing: dict[str, Any]) -> str:
    """The phrase on what other processes used during the runs, for the sentence that says how they were timed:
    ", other processes using at most 0.03 cores during a run (0.01 on average; alone: under 0.25 in every run)"
    and the wait before them; "" for a record without the measure (older, or no /proc/stat)."""
    most = timing.get("other_cores_max")
    if most is None:
        return ""
    text = (
        f", other processes using at most {most:.2f} cores during a run ({timing['other_cores_mean']:.2f} on "
        f"average; alone: under {timing['other_cores_alone']:g} in every run)"
    )
    waited = timing.get("waited_s")
    return text + (f", after waiting {waited:.0f} s for them to go quiet" if waited is not None else "")
