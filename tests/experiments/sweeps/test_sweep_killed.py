"""A sweep killed with SIGKILL (as a scheduler or a timeout kills: the sweep process alone, no chance to clean up)
leaves no process behind: its pool workers, busy with runs or with tuning jobs, and the resource tracker die with
it; so do the launcher and the ranks of a sweep whose runs are ``localentropy train --nproc 2``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localentropy.experiments.core.config import toml_text
from tests.experiments.core.orphans import kill_when_ready, launcher_and_ranks
from tests.experiments.sweeps.test_sweep import BASE, sweep

pytest.importorskip("sklearn")

LONG = 5000  # effective epochs: every run and trial is still training when the sweep is killed


def _long_base() -> dict[str, Any]:
    return copy.deepcopy(BASE) | {"effective_epochs": LONG}


def _kill(tmp_path: Path, data: dict[str, Any], ready: Callable[[Path], bool], what: str, **env: str) -> list[str]:
    """Run the sweep with 2 workers, SIGKILL it once ``ready(out)``; its children then (none may survive)."""
    config, out = tmp_path / "sweep.toml", tmp_path / "out"
    config.write_text(toml_text(data))
    argv = ["sweep", str(config), "--workers", "2", "--out", str(out)]
    commands, survivors = kill_when_ready(argv, tmp_path, lambda: ready(out), what, env)
    assert survivors == [], f"alive after the sweep was killed: {survivors}"
    return commands


def _count(commands: list[str], part: str) -> int:
    return sum(part in command for command in commands)


# the next two: 7-12 s, up to 28 s on the 2 cores shared with other work (two workers import torch at once)
def test_a_killed_sweep_leaves_no_worker_and_no_resource_tracker(tmp_path: Path) -> None:
    data = sweep(grid={"seed": [0, 1, 2]}, base=_long_base())
    started = lambda out: len(list((out / "runs").glob("*/config.json"))) >= 2  # noqa: E731 (their directories)
    commands = _kill(tmp_path, data, started, "two runs started")
    assert _count(commands, "multiprocessing.spawn") == 2 and _count(commands, "resource_tracker") == 1, commands


def test_a_sweep_killed_while_tuning_leaves_no_worker(tmp_path: Path) -> None:
    """Each tuned optimizer's search is a job of the same pool; a trial trains in a temporary directory."""
    data = sweep(grid={"seed": [0]}, base=_long_base())
    data["tuning"] = {"trials": 4, "max_extensions": 0, "seeds": 1}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    trials = lambda out: len([p for p in scratch.glob("tmp*") if p.is_dir()]) >= 2  # noqa: E731
    commands = _kill(tmp_path, data, trials, "both searches training a trial", TMPDIR=str(scratch))
    assert _count(commands, "multiprocessing.spawn") == 2, commands


@pytest.mark.slow  # a worker, torch's launcher and 2 ranks on the loaded 2-core machine: about 40 s
def test_a_killed_sweep_of_nproc_runs_leaves_no_launcher_and_no_rank(tmp_path: Path) -> None:
    base = _long_base() | {"data": {"source": "digits", "validation_fraction": 0.1, "train_limit": 256}}
    base["optimizers"] = [BASE["optimizers"][0]]
    saved = lambda out: any((out / "runs").glob("*/checkpoints/*.pt"))  # noqa: E731
    commands = _kill(tmp_path, sweep(grid={"seed": [0]}, base=base, nproc=2), saved, "the ranks' first checkpoint")
    assert _count(commands, "multiprocessing.spawn") == 1 and launcher_and_ranks(commands) == (1, 2), commands
