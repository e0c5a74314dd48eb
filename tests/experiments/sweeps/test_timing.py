"""How a sweep's runs were timed: each run measures the CPU other processes used while it ran, and the runs were
timed alone when one ran at a time and others used less than ``OTHER_CORES_ALONE`` cores during every run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core import cpuload
from localentropy.experiments.reproduce.findings.render import timed_runs_text, timed_text, unsupported_numbers
from localentropy.experiments.sweeps.report import _render
from localentropy.experiments.sweeps.runner import run_one
from localentropy.experiments.sweeps.timing import IDLE_LOAD, OTHER_CORES_ALONE, measured_text, timing_record

OLD = {"runs_at_a_time": 1, "load_start": 0.1, "load_end": 1.0, "idle_load": 0.5, "alone": True}  # before the measure


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


def _timing_sentence(timing: dict) -> str:
    base = {"data": "digits", "model": "mlp", "batch_size": 128, "budget": "2 effective epochs per optimizer"}
    lines = _render(
        "ran.md.j2",
        counts={"runs": 1, "ok": 1, "diverged": 0, "failed": 0},
        axes="`seed` (0)",
        base=base,
        tuned=False,
        optimizers=[],
        timing=timing,
    )
    return next(line for line in lines if line.startswith("Timing:"))


def test_an_old_record_renders_as_before_and_a_new_one_states_the_other_processes() -> None:
    assert _timing_sentence(OLD) == (
        "Timing: 1 run at a time, 1-minute load average 0.1 when the runs started and 1.0 when they ended: timed "
        "alone (one run at a time on a machine otherwise idle: load below 0.5 at the start)."
    )
    assert measured_text(OLD) == "" and timed_text({"timing": OLD}) == "runs timed alone"
    assert timed_runs_text(OLD) == (
        "measured with 1 run at a time, the machine's 1-minute load average 0.1 when they started and 1.0 when they "
        "ended: timed alone"
    )
    new = timing_record(1, 4.1, 1.0, [0.012, 0.031], waited_s=4.2)
    said = (
        ", other processes using at most 0.03 cores during a run (0.02 on average; alone: under 0.25 in every run), "
        "after waiting 4 s for them to go quiet: timed alone"
    )
    assert _timing_sentence(new) == (
        f"Timing: 1 run at a time, 1-minute load average 4.1 when the runs started and 1.0 when they ended{said}."
    )
    long = timed_runs_text(new)
    assert long.endswith(said) and unsupported_numbers(long, new) == []  # every number shown is in the record
    short = timed_text({"timing": new})
    assert short == "runs 1 at a time, other processes using at most 0.03 cores: timed alone"
    shared = timing_record(2, 1.0, 1.0, [1.3, 0.9])
    assert (
        timed_text({"timing": shared}) == "runs 2 at a time, other processes using at most 1.30 cores: not timed alone"
    )
    assert "1.30 cores during a run (1.10 on average" in _timing_sentence(shared)
    assert _timing_sentence(shared).endswith(
        ": not timed alone, so the seconds and their ratios are of a shared machine."
    )


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
    assert f"other processes using at most {run['other_cores']:.2f} cores" in (out / "report.md").read_text()
    capsys.readouterr()
