"""How a sweep's runs were timed: each run measures the CPU other processes used while it ran, and the runs were
timed alone when one ran at a time and others used less than ``OTHER_CORES_ALONE`` cores during every run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core import cpuload
from localentropy.experiments.sweeps.runner import run_one
from localentropy.experiments.sweeps.timing import IDLE_LOAD, OTHER_CORES_ALONE, timing_record


def test_one_run_at_a_time_is_alone_when_the_others_stayed_under_the_threshold() -> None:
    quiet = timing_record(1, 4.1, 1.0, [0.01, 0.03, None], waited_s=4.0)
    assert quiet["alone"]  # the load average of the minute before does not decide it
    assert quiet["other_cores_max"] == 0.03 and quiet["other_cores_mean"] == pytest.approx(0.02)
    assert quiet["other_cores_alone"] == OTHER_CORES_ALONE and quiet["waited_s"] == 4.0
    assert {"runs_at_a_time", "load_start", "load_end", "idle_load"} <= set(quiet)
    assert not timing_record(1, 0.1, 0.1, [0.01, OTHER_CORES_ALONE + 0.01])["alone"]  # one run shared the machine
    assert not timing_record(2, 0.1, 0.1, [0.01, 0.01])["alone"]  # two at a time is never alone


def test_without_the_measure_the_load_average_decides() -> None:
    unknown = timing_record(1, IDLE_LOAD / 2, 1.0, [None, None])
    assert unknown["alone"] and unknown["other_cores_max"] is None and unknown["other_cores_mean"] is None
    assert not timing_record(1, IDLE_LOAD * 2, 1.0)["alone"]
    assert not timing_record(1, None, None)["alone"] and timing_record(1, None, None)["waited_s"] is None


def test_run_one_records_the_cores_that_other_processes_used(tmp_path: Path, monkeypatch) -> None:
    """The machine's busy CPU less the run's own (its waited-for children included), over the run's wall time."""
    busy = iter([100.0, 103.0])
    asked = []

    def own(children: bool = False) -> float:
        asked.append(children)
        return 10.0 + len(asked)  # 1 s of the run's own CPU between the two reads

    monkeypatch.setattr(cpuload, "busy_cpu_seconds", lambda: next(busy))
    monkeypatch.setattr(cpuload, "own_cpu_seconds", own)
    outcome = run_one({"name": "x", "seed": 0}, str(tmp_path / "x"))  # a config error: fails at once
    assert outcome["status"] == "failed" and asked == [True, True]
    assert outcome["other_cores"] == pytest.approx(2.0 / outcome["wall_seconds"], rel=0.05)
    monkeypatch.setattr(cpuload, "busy_cpu_seconds", lambda: None)  # no /proc/stat
    assert run_one({"name": "x", "seed": 0}, str(tmp_path / "y"))["other_cores"] is None


def test_a_sweep_run_one_at_a_time_records_what_other_processes_used(tmp_path: Path, capsys) -> None:
    """A real sweep on local processes, one run at a time: it waits for a quiet machine, then each run measures."""
    config = tmp_path / "one.toml"
    config.write_text(
        'name = "one"\n[base]\nseed = 0\nbatch_size = 128\neffective_epochs = 1\n'
        'data = { source = "digits" }\nmodel = { name = "mlp", options = { hidden = [16] } }\n'
        'flatness = { measures = [] }\n[[base.optimizers]]\nkind = "sgd"\nlr = 0.1\n[grid]\nseed = [0]\n'
    )
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--quiet-wait", "3"]) == 0
    results = json.loads((out / "results.json").read_text())
    timing, (run,) = results["timing"], results["runs"]
    assert run["status"] == "ok" and run["other_cores"] >= 0  # /proc/stat: this project runs its tests on Linux
    assert timing["runs_at_a_time"] == 1 and timing["other_cores_max"] == run["other_cores"]
    assert timing["other_cores_mean"] == run["other_cores"] and 0 < timing["waited_s"] < 3 + 2.5  # one more look
    assert timing["alone"] == (run["other_cores"] < OTHER_CORES_ALONE)
    capsys.readouterr()
