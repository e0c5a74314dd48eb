"""How busy the machine is: a child's CPU counts as this process's own once it has been waited for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localentropy.experiments.core import cpuload

BUSY_CHILD = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end:\n    pass\n"


def test_a_waited_for_childs_cpu_counts_as_own_only_when_asked() -> None:
    alone, with_children = cpuload.own_cpu_seconds(), cpuload.own_cpu_seconds(children=True)
    subprocess.run([sys.executable, "-c", BUSY_CHILD], check=True)
    child = (cpuload.own_cpu_seconds(children=True) - with_children) - (cpuload.own_cpu_seconds() - alone)
    assert child >= 0.25  # the child's 0.3 s of CPU (less the clock's ticks)


def test_other_cores_is_the_machines_busy_cpu_less_the_own_over_the_wall(monkeypatch) -> None:
    busy, own = iter([100.0, 104.0]), iter([10.0, 11.0])
    monkeypatch.setattr(cpuload, "busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(cpuload, "own_cpu_seconds", lambda children=False: next(own))
    clock = iter([50.0, 52.0, 52.0])
    monkeypatch.setattr(cpuload.time, "perf_counter", lambda: next(clock))
    with cpuload.LoadMeter(children=True) as meter:
        pass
    assert meter.wall == 2.0 and meter.other_cores == pytest.approx((4.0 - 1.0) / 2.0)
    monkeypatch.setattr(cpuload, "busy_cpu_seconds", lambda: None)  # no /proc/stat: unknown
    monkeypatch.setattr(cpuload, "own_cpu_seconds", lambda children=False: 0.0)
    monkeypatch.setattr(cpuload.time, "perf_counter", lambda: 60.0)
    with cpuload.LoadMeter() as meter:
        pass
    assert meter.other_cores is None
