"""``localentropy train``: every optimizer learns digits, exact pass counts, bit-identical resume, divergence."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.rundir import RunDirectoryError
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.training.config import load_train_config, parse_train_config
from localentropy.experiments.training.optim import SAMStep, ScheduleConfig, learning_rate
from localentropy.experiments.training.trainer import run_training
from tests.experiments.training.helpers import toml_text as _toml

pytest.importorskip("sklearn")
ROOT = Path(__file__).resolve().parents[3]
N_TRAIN, BATCH = 1294, 64  # digits after the 20 % test and 10 % validation splits
SPE = math.ceil(N_TRAIN / BATCH)  # 21 steps per epoch
ENTROPY = {"gamma": 1.0, "scoping": 1e-3, "inner_steps": 3, "momentum": 0.9, "nesterov": True}
SGLD = {"step_size": 0.1, "temperature": 1e-8}
OPTIMIZERS = {
    "sgd": {"kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
    "adam": {"kind": "adam", "lr": 3e-3},
    "entropy-sgd sgld": {
        "kind": "entropy-sgd",
        "lr": 0.5,
        "options": ENTROPY,
        "sampler": "sgld",
        "sampler_options": SGLD,
    },
    "entropy-sgd sghmc": {
        "kind": "entropy-sgd",
        "lr": 0.5,
        "options": ENTROPY,
        "sampler": "sghmc",
        "sampler_options": {"step_size": 0.05, "friction": 0.5, "temperature": 1e-8},
    },
    "entropy-sgd paper": {
        "kind": "entropy-sgd",
        "lr": 1.0,
        "options": {"gamma": 1.0, "inner_steps": 3},
        "preset": "paper",
        "sampler_options": {"step_size": 0.1, "noise_scale": 1e-4},
    },
    "entropy-adam": {
        "kind": "entropy-adam",
        "lr": 1e-2,
        "options": {"gamma": 1.0, "inner_steps": 3},
        "sampler": "sgld",
        "sampler_options": SGLD,
    },
    "lpf-sgd": {"kind": "lpf-sgd", "lr": 0.1, "options": {"sigma": 1e-3, "n_samples": 2}},
    "sam": {"kind": "sam", "lr": 0.1, "options": {"rho": 0.05, "momentum": 0.9}},
}
PASSES = {
    "sgd": 1,
    "adam": 1,
    "entropy-sgd sgld": 3,
    "entropy-sgd sghmc": 3,
    "entropy-sgd paper": 3,
    "entropy-adam": 3,
    "lpf-sgd": 2,
    "sam": 2,
}


def config(labels, **top) -> dict:
    data = {
        "name": "t",
        "seed": 0,
        "batch_size": BATCH,
        "epochs": 2,
        "eval_batch_size": 2000,
        "data": {"source": "digits"},
        "model": {"name": "mlp", "options": {"hidden": [32]}},
        "flatness": {"measures": []},
        "optimizers": [{"label": k, **copy.deepcopy(OPTIMIZERS[k])} for k in labels],
    }
    if "effective_epochs" in top:
        data.pop("epochs")
    data.update(top)
    return data


def train(cfg: dict, out: Path, **kwargs) -> dict:
    run_training(parse_train_config(cfg), out, progress=io.StringIO(), **kwargs)
    return json.loads((out / "results.json").read_text())


def records(results: dict) -> dict:
    return {r["label"]: r for r in results["records"]}


@pytest.fixture(autouse=True)
def _need_sam():
    pytest.importorskip("pytorch_optimizer")


def test_every_optimizer_learns_digits(tmp_path, single_thread):
    """15 effective epochs each (about 3 s in all): every optimizer reaches at least 90 % test accuracy."""
    cfg = config(
        list(OPTIMIZERS),
        effective_epochs=15,
        model={"name": "mlp", "options": {"hidden": [64]}},
        flatness={"measures": ["top_eigenvalue", "trace"], "examples": 300, "hutchinson_samples": 5},
    )
    start = time.perf_counter()
    results = train(cfg, tmp_path / "run")
    assert time.perf_counter() - start < 60
    for label, rec in records(results).items():
        assert rec["status"] == "ok", rec["message"]
        assert rec["final"]["test_error"] < 0.10, (label, rec["final"]["test_error"])
        # the budget buys floor(15 x 21 / passes) steps: 15 effective epochs, less at most one step's examples
        assert 0 <= 15.0 - rec["final"]["effective_epochs"] < PASSES[label] * BATCH / N_TRAIN
        assert rec["flatness"]["top_eigenvalue"]["value"] > 0 and rec["flatness"]["trace"]["mcse"] > 0


def test_pass_counts_are_exact_under_an_epochs_budget(tmp_path, single_thread):
    results = train(config(list(OPTIMIZERS)), tmp_path / "run")
    for label, rec in records(results).items():
        passes = PASSES[label]
        assert rec["passes_per_step"] == passes and rec["steps"] == 2 * SPE
        for row in rec["rows"]:
            e = row["epoch"]
            assert row["steps"] == e * SPE
            assert row["grad_evals"] == e * SPE * passes  # k outer steps x L inner steps; SAM: 2 per step
            assert row["examples"] == e * passes * N_TRAIN
            assert row["effective_epochs"] == e * passes
        if label not in ("sgd", "adam"):  # the optimizers' own counters agree with the closure's
            assert rec["optimizer_grad_evals"] == 2 * SPE * passes


def test_effective_epoch_budget_gives_fewer_outer_epochs(tmp_path, single_thread):
    results = records(train(config(["sgd", "entropy-sgd sgld", "sam"], effective_epochs=4), tmp_path / "run"))
    assert [results[k]["epochs_planned"] for k in ("sgd", "entropy-sgd sgld", "sam")] == [4, 2, 2]
    esgd = results["entropy-sgd sgld"]  # floor(4 x 21 / 3) = 28 outer steps: a full epoch and a partial one
    assert esgd["steps"] == 28 and esgd["rows"][-1]["grad_evals"] == 84 and esgd["final"]["effective_epochs"] == 4.0
    assert [r["steps"] for r in esgd["rows"]] == [0, 21, 28]
    sam = results["sam"]  # floor(4 x 21 / 2) = 42 steps, 84 passes
    assert sam["steps"] == 42 and sam["final"]["grad_evals"] == 84 and sam["final"]["effective_epochs"] == 4.0


def test_sam_step_counts_two_passes_and_matches_the_formula(single_thread):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    reference = copy.deepcopy(model)
    calls = []

    def closure(reuse: bool = False):
        calls.append(reuse)
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    sam = SAMStep(model.parameters(), lr=0.1, rho=0.05)
    sam.step(closure)
    assert calls == [False, True] and sam.grad_evals == 2 and sam.steps == 1
    params = list(reference.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(reference(x), y), params)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            p.add_(0.05 * g / (norm + 1e-12))
    grads2 = torch.autograd.grad(nn.functional.cross_entropy(reference(x), y), params)
    with torch.no_grad():
        for p, g, g2 in zip(params, grads, grads2, strict=True):
            p.sub_(0.05 * g / (norm + 1e-12) + 0.1 * g2)
    for p, q in zip(model.parameters(), params, strict=True):
        assert torch.allclose(p, q, atol=1e-6)


RESUME = ["sgd", "adam", "entropy-sgd sgld", "lpf-sgd", "sam"]


class StopError(Exception):
    pass


def _final_states(out: Path) -> dict:
    return {p.stem: torch.load(p, weights_only=True) for p in sorted((out / "checkpoints").glob("*.pt"))}


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for key, value in a[name]["model"].items():
            assert torch.equal(value, b[name]["model"][key]), (name, key)
        assert torch.equal(a[name]["torch_rng"], b[name]["torch_rng"])
        assert a[name]["stream"] == b[name]["stream"]


def test_interrupted_run_resumes_bit_identically(tmp_path, single_thread):
    cfg = config(RESUME, epochs=3, model={"name": "mlp", "options": {"hidden": [32], "dropout": 0.2}})
    full = train(cfg, tmp_path / "full")

    def stop(label, epoch):
        if label == "entropy-sgd sgld" and epoch == 2:
            raise StopError

    with pytest.raises(StopError):
        train(cfg, tmp_path / "cut", after_epoch=stop)
    assert not (tmp_path / "cut" / "COMPLETE").exists()
    assert {p.stem for p in (tmp_path / "cut" / "records").glob("*.json")} == {"sgd", "adam"}
    path, state = run_training(parse_train_config(cfg), tmp_path / "cut", progress=io.StringIO())
    assert state == "resume" and (path / "COMPLETE").exists()
    _assert_identical(_final_states(tmp_path / "full"), _final_states(tmp_path / "cut"))
    resumed = records(json.loads((tmp_path / "cut" / "results.json").read_text()))
    for label, rec in records(full).items():
        for r1, r2 in zip(rec["rows"], resumed[label]["rows"], strict=True):
            assert {k: v for k, v in r1.items() if k != "seconds"} == {k: v for k, v in r2.items() if k != "seconds"}


@pytest.mark.slow
def test_killed_process_resumes_bit_identically(tmp_path):
    """SIGKILL a real `localentropy train` after its first checkpoints, resume, compare with a clean run."""
    cfg = config(
        ["entropy-sgd sgld", "sam"], epochs=6, model={"name": "mlp", "options": {"hidden": [256], "dropout": 0.1}}
    )
    path = tmp_path / "c.toml"
    path.write_text(_toml(cfg))
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "localentropy", "train", str(path), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    checkpoint = out / "checkpoints" / "entropy-sgd_sgld.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        state = _load_quiet(checkpoint)
        if state is not None and state["epoch"] >= 2:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed mid-run, not finished
    assert not (out / "COMPLETE").exists() and _load_quiet(checkpoint)["epoch"] < 6
    assert main(["train", str(path), "--out", str(out)]) == 0
    assert main(["train", str(path), "--out", str(tmp_path / "clean")]) == 0
    _assert_identical(_final_states(tmp_path / "clean"), _final_states(out))


def _load_quiet(path: Path):
    try:
        return torch.load(path, weights_only=True) if path.is_file() else None
    except Exception:
        return None


def test_divergence_stops_only_that_optimizer_and_never_reports_nan(tmp_path, single_thread):
    cfg = config(["sgd", "entropy-sgd sgld", "adam"], epochs=2)
    cfg["optimizers"][0]["lr"] = 1e30
    cfg["optimizers"][1]["sampler_options"] = {"step_size": 1e6, "temperature": 1e-8}
    out = tmp_path / "run"
    run_training(parse_train_config(cfg), out, progress=io.StringIO())
    text = (out / "results.json").read_text()
    results = records(json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json")))
    for label in ("sgd", "entropy-sgd sgld"):
        rec = results[label]
        assert rec["status"] == "diverged" and rec["final"] is None and rec["flatness"] is None
        assert f"{label}: diverged at optimizer step" in rec["message"] and "(epoch 1" in rec["message"]
        assert all(v is None or math.isfinite(v) for row in rec["rows"] for v in row.values() if isinstance(v, float))
    assert results["adam"]["status"] == "ok" and results["adam"]["final"]["test_error"] < 0.5
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert "## Diverged" in report and not any("nan" in line.lower() for line in table)
    final = list(csv.DictReader((out / "final.csv").open()))
    assert [r["status"] for r in final] == ["diverged", "diverged", "ok"] and final[0]["test_error"] == ""


def test_outputs_cli_skip_force_and_changed_config(tmp_path, capsys, single_thread):
    cfg = config(
        ["sgd", "entropy-sgd sgld"],
        epochs=1,
        schedule={"kind": "step", "step_size": 1, "gamma": 0.5},
        flatness={
            "examples": 100,
            "power_iterations": 10,
            "hutchinson_samples": 3,
            "lanczos_steps": 8,
            "lanczos_runs": 1,
            "sharpness_iterations": 2,
            "local_entropy": {"steps": 3, "chains": 2, "burn_in": 1},
        },
    )
    path = tmp_path / "c.toml"
    path.write_text(_toml(cfg))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 0
    assert "completed" in capsys.readouterr().out
    for name in (
        "results.json",
        "epochs.csv",
        "final.csv",
        "report.md",
        "curves.png",
        "density.png",
        "COMPLETE",
        "config.json",
    ):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "epochs.csv").open()))
    assert [(r["optimizer"], r["epoch"]) for r in rows] == [
        ("sgd", "0"),
        ("sgd", "1"),
        ("entropy-sgd sgld", "0"),
        ("entropy-sgd sgld", "1"),
    ]
    assert float(rows[1]["lr"]) == 0.1 and float(rows[3]["effective_epochs"]) == 3.0
    results = records(json.loads((out / "results.json").read_text()))
    flat = results["sgd"]["flatness"]
    assert set(flat) >= {"top_eigenvalue", "trace", "density", "sharpness", "local_entropy"}
    assert all("error" not in flat[m] for m in ("top_eigenvalue", "trace", "density", "sharpness", "local_entropy"))
    report = (out / "report.md").read_text()
    assert "| sgd | ok |" in report and "![SLQ density](density.png)" in report
    state = torch.load(out / "checkpoints" / "sgd.pt", weights_only=True)
    assert state["epoch"] == 1 and isinstance(state["optimizer"], dict)
    assert main(["train", str(path), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out
    cfg["seed"] = 1
    path.write_text(_toml(cfg))
    assert main(["train", str(path), "--out", str(out)]) == 2
    assert "different config" in capsys.readouterr().err
    with pytest.raises(RunDirectoryError):
        run_training(parse_train_config(cfg), out, progress=io.StringIO())


def test_config_errors_are_listed_together(tmp_path, capsys):
    bad = {
        "name": "bad",
        "epochs": 2,
        "effective_epochs": 3,
        "colour": "red",
        "batch_size": 0,
        "data": {"source": "digits", "path": "/x"},
        "model": {"name": "lenet"},
        "schedule": {"kind": "multistep", "milestones": [5, 3]},
        "optimizers": [
            {"kind": "sgd", "lr": -1, "options": {"momentun": 0.9}},
            {"kind": "entropy-sgd", "lr": 0.1, "sampler": "nuts"},
            {
                "label": "e2",
                "kind": "entropy-sgd",
                "lr": 0.1,
                "options": {"gamma": 1.0},
                "sampler": "sgld",
                "sampler_options": {"step_size": -0.1},
            },
            {"kind": "adagrad", "lr": 0.1},
            {"label": "s/1", "kind": "sgd", "lr": 0.1},
            {"label": "s_1", "kind": "sgd", "lr": 0.1},
        ],
    }
    with pytest.raises(ConfigError) as info:
        parse_train_config(bad)
    text = "\n".join(info.value.problems)
    for expected in (
        "colour: unknown field",
        "exactly one budget",
        "batch_size: got 0",
        "data.path",
        "model.name: got 'lenet'",
        "schedule.milestones",
        "optimizers[0].lr",
        "optimizers[0].options.momentun",
        "optimizers[1].sampler: got 'nuts'",
        "optimizers[1].options.gamma: missing",
        "optimizers[2].sampler_options.step_size: step_size must be in (0, inf)",
        "optimizers[3].kind: got 'adagrad'",
        "optimizers[5].label: got 's_1' (str), expected a label whose file name (s_1) differs from that of 's/1'",
    ):
        assert expected in text, expected
    path = tmp_path / "bad.toml"
    path.write_text('name = "bad"\nepochs = 0\n')
    assert main(["train", str(path)]) == 2
    assert "problem(s)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train_digits", "train_mnist5k", "train_mnist1d"])
def test_shipped_configs_are_valid(name):
    cfg = load_train_config(shipped_dir() / f"{name}.toml")
    assert cfg.name == name and cfg.optimizers
    if name == "train_digits":
        kinds = [(o.kind, o.sampler, o.preset) for o in cfg.optimizers]
        assert {"sgd", "adam", "lpf-sgd", "sam"} <= {k for k, _, _ in kinds}
        assert {("entropy-sgd", "sgld", None), ("entropy-sgd", "sghmc", None), ("entropy-sgd", None, "paper")} <= set(
            kinds
        )


def test_learning_rate_schedules():
    assert [learning_rate(ScheduleConfig("step", step_size=2, gamma=0.5), 1.0, e, 6) for e in range(5)] == [
        1.0,
        1.0,
        0.5,
        0.5,
        0.25,
    ]
    multistep = ScheduleConfig("multistep", gamma=0.1, milestones=[2, 4])
    assert [learning_rate(multistep, 1.0, e, 6) for e in range(6)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = ScheduleConfig("cosine", min_lr=0.1)
    assert learning_rate(cosine, 1.0, 0, 4) == 1.0 and learning_rate(cosine, 1.0, 2, 4) == pytest.approx(0.55)
    assert learning_rate(ScheduleConfig(), 0.3, 7, 8) == 0.3


def test_missing_data_files_are_a_config_error_before_the_run_directory_exists(tmp_path, capsys):
    cfg = config(
        ["sgd"],
        data={"source": "mnist", "path": str(tmp_path / "nowhere")},
        model={"name": "small-mnistfc", "options": {"hidden": 8}},
    )
    path = tmp_path / "c.toml"
    path.write_text(_toml(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run")]) == 2
    assert "nowhere: not a directory" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
