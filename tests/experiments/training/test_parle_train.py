"""`kind = "parle"` in a training config: validation, the n = 1 identity in one process, and `--nproc 2` end to
end (one replica per process, no DDP, Parle's own traffic, the reference evaluated, resume after a killed rank)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.rundir import RunDirectory
from localentropy.experiments.training.config import parse_train_config
from localentropy.experiments.training.parallel import FAULT_ENV
from localentropy.experiments.training.trainer import run_training
from tests.experiments.training.helpers import toml_text

ROOT = Path(__file__).resolve().parents[3]
HIDDEN = 16
PARAM_BYTES = 4 * (64 * HIDDEN + HIDDEN + HIDDEN * 10 + 10)  # the 64-16-10 MLP in float32
INNER = 4
PARLE = {
    "label": "parle",
    "kind": "parle",
    "lr": 0.5,
    "options": {"gamma": 0.03, "rho": 0.01, "inner_steps": INNER, "momentum": 0.9, "nesterov": True},
    "sampler_options": {"step_size": 0.1, "temperature": 1e-4},
}
SGD = {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}}
CONFIG = {
    "name": "tiny_parle",
    "seed": 0,
    "batch_size": 64,
    "effective_epochs": 8,
    "eval_batch_size": 2000,
    "data": {"source": "digits", "validation_fraction": 0.1, "test_fraction": 0.2, "train_limit": 512},
    "model": {"name": "mlp", "options": {"hidden": [HIDDEN]}},
    "flatness": {"measures": []},
    "optimizers": [PARLE, SGD],  # Parle first: the fault below stops a rank in Parle's second epoch
}


def _train(config_dir: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    config = config_dir / "tiny_parle.toml"
    config.write_text(toml_text(CONFIG))
    command = [sys.executable, "-m", "localentropy", "train", str(config), "--out", str(out), "--nproc", "2"]
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=240, cwd=config_dir)


@pytest.fixture(scope="module")
def parallel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    where = tmp_path_factory.mktemp("parle_nproc2")
    done = _train(where, where / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    return where, json.loads((where / "run" / "results.json").read_text())


def test_nproc_2_runs_one_replica_per_process_and_counts_parle_bytes(parallel: tuple[Path, dict]) -> None:
    _, results = parallel
    assert results["world_size"] == 2
    parle, sgd = results["records"]
    assert parle["status"] == sgd["status"] == "ok" and parle["world_size"] == sgd["world_size"] == 2
    # equal effective epochs: the examples of both ranks over the training set
    assert parle["final"]["effective_epochs"] == pytest.approx(sgd["final"]["effective_epochs"], rel=0.05)
    # SGD-DDP all-reduces the gradient after every pass; Parle the weights once per outer step (and once more to
    # set the reference at the first step): about 1 / L of SGD's bytes for the same model and data
    assert sgd["bytes_communicated"] == sgd["steps"] * PARAM_BYTES
    assert parle["bytes_communicated"] == (parle["steps"] + 1) * PARAM_BYTES
    assert parle["collective_calls"] == parle["steps"] + 1
    ratio = parle["bytes_communicated"] / sgd["bytes_communicated"]
    assert 1 / INNER <= ratio <= 1 / INNER + 2 / sgd["steps"]
    assert parle["rows"][-1]["bytes_communicated"] == parle["bytes_communicated"]
    assert parle["final"]["test_error"] < 0.9  # the reference (the replicas' mean) was evaluated and learned


@pytest.mark.slow  # three launches of 2 processes: about 80 s on the loaded 2-core machine
def test_a_killed_replica_stops_the_run_and_the_rerun_resumes_bit_identically(
    parallel: tuple[Path, dict], tmp_path: Path
) -> None:
    _, reference = parallel
    out = tmp_path / "killed"
    done = _train(tmp_path, out, env={FAULT_ENV: "1:12"})  # Parle's epoch 2 (8 outer steps per epoch)
    assert done.returncode == 1
    assert "rank 1: exiting at step 12" in done.stderr
    assert "a rank of the data-parallel run failed" in done.stderr and "is not marked complete" in done.stderr
    assert not (out / "COMPLETE").exists()
    RunDirectory(out).check_free()
    resumed = _train(tmp_path, out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout
    results = json.loads((out / "results.json").read_text())
    for rec, ref in zip(results["records"], reference["records"], strict=True):
        assert [r["train_loss"] for r in rec["rows"]] == [r["train_loss"] for r in ref["rows"]]
        assert rec["bytes_communicated"] == ref["bytes_communicated"]
        assert rec["collective_calls"] == ref["collective_calls"]


def test_one_process_parle_is_entropy_sgd_without_noise(tmp_path: Path) -> None:
    """The n = 1 identity from the CLI: x_ref = x, the elastic term vanishes, Parle steps as Entropy-SGD."""
    shared = {
        "gamma": 0.03,
        "inner_steps": INNER,
        "momentum": 0.9,
        "nesterov": True,
        "averaging": 0.75,
        "outer_scale": "gamma",
    }
    cfg = copy.deepcopy(CONFIG) | {"epochs": 2}
    del cfg["effective_epochs"]
    cfg["optimizers"] = [
        {"label": "parle", "kind": "parle", "lr": 0.5, "options": {**shared, "rho": 0.5, "inner_noise": False}},
        {
            "label": "entropy-sgd",
            "kind": "entropy-sgd",
            "lr": 0.5,
            "options": shared,
            "sampler": "sgld",
            "sampler_options": {"step_size": 0.1, "temperature": 0.0},
        },
    ]
    with open(os.devnull, "w") as quiet:
        path, _ = run_training(parse_train_config(cfg), tmp_path / "run", progress=quiet)
    parle, entropy = json.loads((path / "results.json").read_text())["records"]
    assert parle["world_size"] == 1 and parle["bytes_communicated"] == 0
    for a, b in zip(parle["rows"], entropy["rows"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["test_error"] == b["test_error"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"options": {"gamma": 0.03, "rhoo": 1.0}}, "optimizers[0].options.rhoo: unknown for 'parle'; allowed: "),
        (
            {"options": {"gamma": 0.03, "reduction": "both"}},
            "optimizers[0].options.reduction: reduction must be one of 'weights', 'averages_then_weights'",
        ),
        ({"preset": "author"}, "optimizers[0].preset: got 'author' (str), expected one of 'paper', 'authors'"),
        ({"options": {"inner_steps": 5}}, "optimizers[0].options.gamma: missing"),
        ({"sampler": "nope"}, "optimizers[0].sampler: got 'nope'"),
    ],
)
def test_bad_parle_options_name_the_field_and_the_allowed_values(change: dict, expected: str) -> None:
    cfg = copy.deepcopy(CONFIG)
    cfg["optimizers"] = [{**PARLE, **change}]
    with pytest.raises(ConfigError) as caught:
        parse_train_config(cfg)
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_a_bad_parle_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = copy.deepcopy(CONFIG)
    cfg["optimizers"] = [{**PARLE, "options": {"gamma": 0.03, "rho_scale": "all"}}]
    path = tmp_path / "bad.toml"
    path.write_text(toml_text(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "optimizers[0].options.rho_scale" in err and "'none', 'steps_replicas'" in err
    assert not (tmp_path / "run").exists()


def test_the_authors_preset_gets_the_replicas_batches_per_epoch() -> None:
    cfg = copy.deepcopy(CONFIG)
    cfg["optimizers"] = [{**PARLE, "preset": "authors", "options": {"gamma": 0.03, "inner_steps": INNER}}]
    spec = parse_train_config(cfg).optimizers[0]
    assert spec.preset == "authors" and spec.sampler is None
    cfg["optimizers"][0]["options"]["scoping"] = 0.01  # the preset scopes by 0.5 / nb itself
    with pytest.raises(ConfigError, match="give scoping or batches_per_epoch"):
        parse_train_config(cfg)
