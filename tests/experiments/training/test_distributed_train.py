"""`localentropy train CONFIG --nproc 2` end to end on 2 gloo processes: the numbers of one process, the traffic
counted, and a killed rank that stops the run cleanly (exit status 1, a clear message, nothing marked complete)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localentropy.experiments.core.rundir import RunDirectory
from localentropy.experiments.training.parallel import FAULT_ENV
from localentropy.experiments.training.trainer import run_training
from tests.experiments.core.orphans import kill_when_ready, launcher_and_ranks
from tests.experiments.training.helpers import toml_text

ROOT = Path(__file__).resolve().parents[3]
HIDDEN = 16
CONFIG = {
    "name": "tiny_parallel",
    "seed": 0,
    "batch_size": 64,
    "epochs": 2,
    "eval_batch_size": 2000,
    "data": {"source": "digits", "validation_fraction": 0.1, "test_fraction": 0.2, "train_limit": 512},
    "model": {"name": "mlp", "options": {"hidden": [HIDDEN]}},
    "flatness": {"measures": []},
    "optimizers": [
        {
            "label": "entropy-sgd",
            "kind": "entropy-sgd",
            "lr": 0.5,
            "sampler": "sgld",
            "options": {"gamma": 1.0, "inner_steps": 3, "momentum": 0.9, "nesterov": True},
            "sampler_options": {"step_size": 0.1, "temperature": 1e-4},
        },
        {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
    ],
}
# Two ranks average the means of 32 examples each; one process takes the mean of 64: float32 rounding only.
TOLERANCE = 1e-5


def _train(tmp_path: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "tiny_parallel.toml"
    config.write_text(toml_text(CONFIG))
    command = [sys.executable, "-m", "localentropy", "train", str(config), "--out", str(out), "--nproc", "2", *extra]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240, cwd=tmp_path)


def test_nproc_2_writes_world_size_and_bytes_and_matches_one_process(tmp_path: Path) -> None:
    out = tmp_path / "parallel"
    done = _train(tmp_path, out, "--drift-check", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "COMPLETE").is_file() and f"completed: {out / 'report.md'}" in done.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2
    single_dir, _ = run_training(tmp_path / "tiny_parallel.toml", tmp_path / "single")
    single = json.loads((single_dir / "results.json").read_text())
    assert single["world_size"] == 1
    grad_bytes = 4 * (64 * HIDDEN + HIDDEN + HIDDEN * 10 + 10)
    for rec, ref in zip(results["records"], single["records"], strict=True):
        assert rec["world_size"] == 2 and ref["bytes_communicated"] == 0 and ref["collective_calls"] == 0
        passes = rec["passes_per_step"] * rec["steps"]
        noise = 5056 if rec["kind"] == "entropy-sgd" else 0  # one CPU generator state, broadcast at the first step
        drift = rec["steps"] * 4 * 6 * 8  # a check after every step: 4 tensors, 6 float64 numbers each
        assert rec["bytes_communicated"] == passes * grad_bytes + noise + drift
        assert rec["rows"][-1]["bytes_communicated"] == rec["bytes_communicated"]
        # effective epochs count the examples of all ranks: the same as one process
        assert rec["final"]["effective_epochs"] == ref["final"]["effective_epochs"]
        for row, ref_row in zip(rec["rows"], ref["rows"], strict=True):
            assert row["train_loss"] == pytest.approx(ref_row["train_loss"], abs=TOLERANCE)
    report = (out / "report.md").read_text()
    assert "2 processes" in report and "bytes" in report


def test_a_killed_rank_stops_the_run_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    done = _train(tmp_path, out, env={FAULT_ENV: "1:3"})
    assert done.returncode == 1
    assert "rank 1: exiting at step 3" in done.stderr
    assert "a rank of the data-parallel run failed" in done.stderr and "is not marked complete" in done.stderr
    assert not (out / "COMPLETE").exists() and not (out / "results.json").exists()
    RunDirectory(out).check_free()  # the launching process let go of the lock


@pytest.mark.slow  # three launches of 2 processes: about 40 s alone on 2 cores
def test_a_killed_data_parallel_run_resumes_bit_identically(tmp_path: Path) -> None:
    """DDP on 2 ranks: a rank killed in epoch 2 leaves the epoch-1 checkpoints; the rerun resumes from them and ends
    with the numbers of the uninterrupted run."""
    reference_dir = tmp_path / "uninterrupted"
    done = _train(tmp_path, reference_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = json.loads((reference_dir / "results.json").read_text())
    out = tmp_path / "killed"
    killed = _train(tmp_path, out, env={FAULT_ENV: "1:12"})  # the 12th step of the first optimizer: epoch 2
    assert killed.returncode == 1 and "rank 1: exiting at step 12" in killed.stderr
    assert not (out / "COMPLETE").exists()
    resumed = _train(tmp_path, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    for rec, ref in zip(results["records"], reference["records"], strict=True):
        assert [r["train_loss"] for r in rec["rows"]] == [r["train_loss"] for r in ref["rows"]]
        assert [r["test_error"] for r in rec["rows"]] == [r["test_error"] for r in ref["rows"]]
        # a resumed Entropy-SGD broadcasts rank 0's generator state once more (5056 bytes): every rank takes it again
        resync = 5056 if rec["kind"] == "entropy-sgd" else 0
        assert rec["bytes_communicated"] == ref["bytes_communicated"] + resync


def test_the_command_line_device_and_precision_reach_every_rank(tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    done = _train(tmp_path, out, "--device", "cpu", "--precision", "bf16-mixed")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert (results["world_size"], results["device"], results["precision"]) == (2, "cpu", "bf16-mixed")
    assert [r["status"] for r in results["records"]] == ["ok", "ok"]
    assert "(torch.distributed, gloo)" in (out / "report.md").read_text()


def test_cuda_ranks_without_gpus_are_refused_before_anything_starts(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "cuda"
    done = _train(tmp_path, out, "--device", "cuda")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "device: 'cuda' with 2 data-parallel processes on this machine needs 2 CUDA devices" in done.stderr
    assert not out.exists()


@pytest.mark.slow  # one launch of 2 processes, killed at its first checkpoint: about 20-40 s on the loaded 2 cores
def test_a_launch_killed_with_sigkill_leaves_no_launcher_and_no_rank(tmp_path: Path) -> None:
    """The launching process is killed outright (as a scheduler or a timeout kills): it cannot stop torch's launcher
    and the ranks itself; they die with it."""
    config, out = tmp_path / "long.toml", tmp_path / "parallel"
    config.write_text(toml_text(CONFIG | {"epochs": 5000}))
    argv = ["train", str(config), "--out", str(out), "--nproc", "2"]
    saved = lambda: any((out / "checkpoints").glob("*.pt"))  # noqa: E731
    commands, survivors = kill_when_ready(argv, tmp_path, saved, "the ranks' first checkpoint")
    assert launcher_and_ranks(commands) == (1, 2), commands
    assert survivors == [], f"alive after the launching process was killed: {survivors}"
