"""The chunk-schedule benchmark runs end to end and leaves the library's schedule in place."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from localentropy._threads import torch_threads
from localentropy.entropy.optim import chunks, inner

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "chunk_schedule.py"


def test_the_schedule_script_prints_both_measurements(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("chunk_schedule", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with torch_threads(2):
        module.main(["--repeats", "2", "--inner-steps", "1", "--threads", "2"])
    out = capsys.readouterr().out
    for line in ("passes beside passes", "passes beside a draw", "passes alone", "pipelined", "lockstep"):
        assert line in out
    assert inner.run_pipelined is chunks.run_pipelined
