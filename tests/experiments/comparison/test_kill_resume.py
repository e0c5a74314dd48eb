"""Interruption and resume of real processes: SIGKILL, SIGTERM and SIGINT sent to ``python -m localentropy``.

Each test starts the command in a subprocess, waits until some work is saved (records of ``run``; a finished
optimizer and a later epoch checkpoint of ``train``), sends the signal and checks the directory: no ``COMPLETE``
marker, no results.json or report pretending to be complete, every saved record whole (never a torn file; a
temporary file is only ever ``.<name>.<random>.tmp``). Then the same command resumes it in-process: exit 0,
the saved records are not recomputed (same mtime and bytes), no temporary file is left, and the results equal an
uninterrupted run's apart from the timing fields (``train``: the final weights are bit-identical).
``sweep`` (when present) is checked the same way, marked slow: every run of a sweep is a process of its own.
SIGINT takes the path of SIGTERM (both raise KeyboardInterrupt), so its ``run`` and ``train`` cases are marked
slow too: the default selection (SIGKILL and SIGTERM) takes under a minute.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from localentropy.cli import build_parser, main
from localentropy.experiments.comparison.plan import record_id
from localentropy.experiments.core.rundir import HOLDER, LOCK

ROOT = Path(__file__).resolve().parents[3]
SUBCOMMANDS = set(build_parser()._subparsers._group_actions[0].choices)
TIMEOUT = 180  # seconds to wait for a subprocess to reach the point where it is killed (a loaded machine)
# SIGINT takes the same path as SIGTERM (both raise KeyboardInterrupt): slow, to keep the default run under a minute
SIGNALS = [signal.SIGKILL, signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
ALL_SIGNALS = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT]

RUN_CONFIG = """\
name = "kill"
seed = 5
replicates = 4
chains = 2
gamma = 1.0
temperature = 0.1
keep_draws = true
ksd = false

[problem]
kind = "quadratic"
dim = 10
condition = 10

[[estimators]]
label = "sgld"
sampler = "sgld"
step_size_fraction = 0.5
budgets = [2000, 4000, 6000, 8000]

[[estimators]]
label = "mala"
sampler = "mala"
step_size_fraction = 0.3
budgets = [400, 800]

[[estimators]]
label = "smooth"
kind = "smoothing"
budgets = [2000]
"""
RUN_RECORDS = 7

TRAIN_CONFIG = """\
name = "killtrain"
seed = 2
batch_size = 32
epochs = 8
eval_batch_size = 2000

[data]
source = "digits"

[model]
name = "mlp"
options = { hidden = [64], dropout = 0.1 }

[flatness]
measures = ["trace"]
examples = 100
hutchinson_samples = 3

[[optimizers]]
label = "sgd"
kind = "sgd"
lr = 0.05
options = { momentum = 0.9 }

[[optimizers]]
label = "entropy-sgd"
kind = "entropy-sgd"
lr = 0.5
options = { gamma = 1.0, inner_steps = 10, momentum = 0.9 }
sampler = "sgld"
sampler_options = { step_size = 0.05, temperature = 1e-8 }
"""


pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one intra-op thread


TIMING_KEYS = ("timing", "seconds", "wall_seconds", "other_cores")  # measured anew by every run


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def _default_sigint() -> None:
    # a shell may start background jobs with SIGINT ignored; Ctrl-C reaches a foreground command with the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(argv: list[str], cwd: Path, *, group: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "localentropy", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=env,
        preexec_fn=_default_sigint,
        start_new_session=group,
    )


def wait_until(proc: subprocess.Popen, ready, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the process ended (status {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen, signum: int, *, group: bool = False) -> tuple[str, str]:
    """Send the signal; wait for the process; check how it ended; return its output."""
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, err = proc.communicate(timeout=TIMEOUT)
    if signum == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # Ctrl-C and SIGTERM stop like an error would: one line, status 130, never a traceback
        assert proc.returncode == 130, (proc.returncode, err[-3000:])
        assert "interrupted; run the same command again to resume" in err
        assert "Traceback" not in err and "Traceback" not in out, err
    return out, err


def snapshot(paths: list[Path]) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in paths}


def temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def loads_whole(path: Path) -> Any:
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in {path}"))


# ----------------------------------------------------------------------------------------------------------------
# localentropy run
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_reference(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The config and an uninterrupted run's results.json (in-process)."""
    base = tmp_path_factory.mktemp("run_reference")
    config = base / "kill.toml"
    config.write_text(RUN_CONFIG)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", str(config), "--out", str(base / "out")]) == 0
    finally:
        torch.set_num_threads(previous)
    results = loads_whole(base / "out" / "results.json")
    assert len(results["records"]) == RUN_RECORDS
    return config, results


def check_incomplete_run(out: Path) -> list[Path]:
    """The state a killed `run` leaves: plainly incomplete, every saved record whole. Returns the records."""
    assert not (out / "COMPLETE").exists()
    records = sorted((out / "records").glob("*.json"))
    for path in records:
        record = loads_whole(path)  # whole: an atomic write never leaves half a record under its name
        assert record["status"] == "ok" and record["key"]["estimator"] in path.name
    files = [p for p in out.rglob("*") if p.is_file()]
    named = {str(p.relative_to(out)) for p in files if not temporary(p)}
    # a record's draws (.npy) are saved just before the record; results.json only once every record exists
    allowed = (
        {"config.json", LOCK, HOLDER}
        | {f"records/{p.name}" for p in records}
        | {f"records/{p.name}" for p in (out / "records").glob("*.npy")}
    )
    if len(records) < RUN_RECORDS:
        assert named <= allowed, named - allowed
    assert all(p.parent in (out, out / "records") for p in files if temporary(p))
    return records


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_run_killed_resumes_without_redoing_records(run_reference, tmp_path, capsys, signum):
    config, reference = run_reference
    out = tmp_path / "out"
    proc = start(["run", str(config), "--out", str(out)], tmp_path)
    wait_until(proc, lambda: len(list((out / "records").glob("*.json"))) >= 2, "two records were saved")
    interrupt(proc, signum)
    saved = check_incomplete_run(out)
    assert 2 <= len(saved) < RUN_RECORDS, "the run finished before the signal: make the test config slower"
    before = snapshot(saved + [p.with_suffix(".npy") for p in saved if p.with_suffix(".npy").exists()])

    assert main(["run", str(config), "--out", str(out)]) == 0  # the same command resumes
    captured = capsys.readouterr()
    assert "resumed and completed" in captured.out
    assert captured.err.count("(resumed)") == len(saved)  # read back, not recomputed
    assert snapshot(list(before)) == before  # same mtime, same bytes
    assert (out / "COMPLETE").is_file()
    assert not [p for p in out.rglob("*") if temporary(p)]  # the killed run's temporary files are gone
    results = loads_whole(out / "results.json")
    assert without_timing(results) == without_timing(reference)
    saved_ids = {p.stem for p in saved}
    for record in results["records"]:  # the saved records are in the results as saved, timing included
        if record_id(record["key"]) in saved_ids:
            assert record == json.loads(before[out / "records" / f"{record_id(record['key'])}.json"][1])


# ----------------------------------------------------------------------------------------------------------------
# localentropy train
# ----------------------------------------------------------------------------------------------------------------


def _epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"]) if path.is_file() else -1
    except Exception:  # being replaced this instant: not ready yet
        return -1


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: torch.load(p, weights_only=True)["model"] for p in sorted((out / "checkpoints").glob("*.pt"))}


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    base = tmp_path_factory.mktemp("train_reference")
    config = base / "killtrain.toml"
    config.write_text(TRAIN_CONFIG)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(config), "--out", str(base / "out")]) == 0
    finally:
        torch.set_num_threads(previous)
    return config, loads_whole(base / "out" / "results.json"), _weights(base / "out")


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_train_killed_resumes_from_its_checkpoints(train_reference, tmp_path, capsys, signum):
    config, reference, weights = train_reference
    out = tmp_path / "out"
    checkpoint = out / "checkpoints" / "entropy-sgd.pt"
    proc = start(["train", str(config), "--out", str(out)], tmp_path)
    wait_until(
        proc,
        lambda: (out / "records" / "sgd.json").is_file() and _epoch(checkpoint) >= 2,
        "SGD finished and Entropy-SGD saved its second epoch",
    )
    interrupt(proc, signum)

    assert not (out / "COMPLETE").exists()
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    assert sorted(p.name for p in (out / "records").glob("*.json")) == ["sgd.json"]
    assert loads_whole(out / "records" / "sgd.json")["status"] == "ok"
    epoch = _epoch(checkpoint)
    assert 2 <= epoch < 8, "Entropy-SGD finished before the signal: make the test config slower"
    named = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and not temporary(p)}
    assert named - {LOCK, HOLDER} == {
        "config.json",
        "records/sgd.json",
        "checkpoints/sgd.pt",
        "checkpoints/entropy-sgd.pt",
    }, named
    finished = [out / "records" / "sgd.json", out / "checkpoints" / "sgd.pt"]
    before = snapshot(finished)

    assert main(["train", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "resumed and completed" in captured.out
    assert "sgd (sgd)" not in captured.err  # SGD is not trained again
    assert f"entropy-sgd: epoch {epoch + 1}/8" in captured.err and f"entropy-sgd: epoch {epoch}/8" not in captured.err
    assert snapshot(finished) == before
    assert (out / "COMPLETE").is_file() and not [p for p in out.rglob("*") if temporary(p)]
    results = loads_whole(out / "results.json")
    assert without_timing(results) == without_timing(reference)
    resumed = _weights(out)
    assert resumed.keys() == weights.keys()
    for label, state in weights.items():  # bit-identical to the uninterrupted run on CPU
        assert all(torch.equal(state[k], resumed[label][k]) for k in state), label


# ----------------------------------------------------------------------------------------------------------------
# localentropy sweep (when present): every run of the sweep is a process of its own, so this one is slow
# ----------------------------------------------------------------------------------------------------------------

SWEEP_BASE = {
    "seed": 0,
    "batch_size": 64,
    "epochs": 2,
    "eval_batch_size": 2000,
    "data": {"source": "digits"},
    "model": {"name": "mlp", "options": {"hidden": [32]}},
    "flatness": {"measures": []},
    "optimizers": [
        {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
        {
            "label": "esgd",
            "kind": "entropy-sgd",
            "lr": 0.5,
            "options": {"gamma": 1.0, "inner_steps": 5},
            "sampler": "sgld",
            "sampler_options": {"step_size": 0.05, "temperature": 1e-8},
        },
    ],
}


def _sweep_toml() -> str:
    from tests.cli.common import to_toml

    return to_toml({"name": "killsweep", "base": copy.deepcopy(SWEEP_BASE), "grid": {"seed": [0, 1, 2, 3]}})


@pytest.fixture(scope="module")
def sweep_reference(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    if "sweep" not in SUBCOMMANDS:
        pytest.skip("`localentropy sweep` is not in this build")
    base = tmp_path_factory.mktemp("sweep_reference")
    config = base / "killsweep.toml"
    config.write_text(_sweep_toml())
    assert main(["sweep", str(config), "--out", str(base / "out"), "--quiet-wait", "0"]) == 0
    return config, loads_whole(base / "out" / "results.json")


def _complete_runs(out: Path) -> list[Path]:
    return sorted(p.parent for p in (out / "runs").glob("*/COMPLETE"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", ALL_SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_sweep_killed_resumes_without_redoing_runs(sweep_reference, tmp_path, capsys, signum):
    """The signal goes to the sweep's whole process group (its workers too), as Ctrl-C or an out-of-memory kill
    of the job would; the completed runs must not be trained again and the results must equal a clean sweep's."""
    config, reference = sweep_reference
    out = tmp_path / "out"
    proc = start(["sweep", str(config), "--out", str(out), "--quiet-wait", "0"], tmp_path, group=True)
    wait_until(proc, lambda: len(_complete_runs(out)) >= 1, "a first run of the sweep completed")
    interrupt(proc, signum, group=True)
    assert not (out / "COMPLETE").exists()
    done = _complete_runs(out)
    assert 1 <= len(done) < 4, "the sweep finished before the signal"
    finished = [p for run in done for p in run.rglob("*") if p.is_file()]
    before = snapshot(finished)

    assert main(["sweep", str(config), "--out", str(out), "--quiet-wait", "0"]) == 0
    capsys.readouterr()
    assert snapshot(finished) == before  # completed runs are not redone
    assert (out / "COMPLETE").is_file() and not [p for p in out.rglob("*") if temporary(p)]
    results = loads_whole(out / "results.json")
    strip = ("state", "dir")  # a resumed run is "skip" where the clean sweep ran it
    clean = [{k: v for k, v in r.items() if k not in strip} for r in without_timing(reference)["runs"]]
    again = [{k: v for k, v in r.items() if k not in strip} for r in without_timing(results)["runs"]]
    assert again == clean
