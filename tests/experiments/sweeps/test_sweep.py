"""``localentropy sweep``: grid expansion, dotted-path validation, skip / retry on re-run, failures, executors."""

from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.rundir import RunDirectoryError
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.sweeps import runner as sweep_module
from localentropy.experiments.sweeps.runner import (
    STAR,
    load_sweep_config,
    parse_path,
    parse_sweep_config,
    run_one,
    run_sweep,
)

pytest.importorskip("sklearn")

BASE = {
    "seed": 0,
    "threads": 1,
    "batch_size": 128,
    "effective_epochs": 2,
    "eval_batch_size": 2000,
    "data": {"source": "digits", "validation_fraction": 0.1},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "flatness": {"measures": []},
    "optimizers": [
        {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
        {
            "label": "esgd",
            "kind": "entropy-sgd",
            "lr": 0.5,
            "options": {"gamma": 1.0, "inner_steps": 2},
            "sampler": "sgld",
            "sampler_options": {"step_size": 0.1, "temperature": 1e-8},
        },
    ],
}


def sweep(grid=None, runs=None, base=None, **top) -> dict:
    data = {"name": "s", "base": copy.deepcopy(base or BASE), **top}
    if grid is not None:
        data["grid"] = grid
    if runs is not None:
        data["runs"] = runs
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_sweep_config(data)
    return info.value.problems


def finals(results: dict) -> dict[str, float]:
    return {r["id"]: [rec["final"]["test_error"] for rec in r["records"]] for r in results["runs"]}


# ------------------------------------------------------------------------------------------- config and paths


def test_parse_path():
    assert parse_path("seed") == ("seed",)
    assert parse_path("optimizers[0].options.gamma") == ("optimizers", 0, "options", "gamma")
    assert parse_path("optimizers[*].sampler_options.step_size") == ("optimizers", STAR, "sampler_options", "step_size")
    assert parse_path('optimizers["entropy-sgd (sgld)"].lr') == ("optimizers", ("entropy-sgd (sgld)",), "lr")
    assert parse_path("model.options.hidden[1]") == ("model", "options", "hidden", 1)
    for bad in ("", ".seed", "seed.", "optimizers[x].lr", "optimizers[0]lr", "[0]", "a..b", "a b"):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_grid_expansion_order_ids_and_overrides():
    config = parse_sweep_config(sweep({"optimizer": ["sgd", "esgd"], "gamma": [0.1, 1.0], "seed": [0, 1, 2]}))
    ids = [r.id for r in config.runs]
    # gamma does not apply to SGD: its runs are not repeated per gamma (2 x 3 + 3 runs, not 12)
    assert ids == [
        "sgd_seed-0",
        "sgd_seed-1",
        "sgd_seed-2",
        "esgd_gamma-0.1_seed-0",
        "esgd_gamma-0.1_seed-1",
        "esgd_gamma-0.1_seed-2",
        "esgd_gamma-1_seed-0",
        "esgd_gamma-1_seed-1",
        "esgd_gamma-1_seed-2",
    ]
    run = config.runs[4]
    assert run.overrides == {"optimizer": "esgd", "gamma": 0.1, "seed": 1}
    assert run.touched == {"optimizer": ["esgd"], "gamma": ["esgd"], "seed": None}
    assert run.config["seed"] == 1 and run.config["name"] == run.id
    assert [o["label"] for o in run.config["optimizers"]] == ["esgd"]
    assert run.config["optimizers"][0]["options"] == {"gamma": 0.1, "inner_steps": 2}
    assert BASE["optimizers"][1]["options"]["gamma"] == 1.0  # the base is not modified
    assert [a.key for a in config.axes] == ["optimizer", "gamma", "seed"]


def test_explicit_paths_lists_of_runs_and_nested_toml_keys():
    data = sweep(
        grid={"optimizers[1].sampler_options.step_size": [0.05, 0.2], "model": {"options": {"dropout": [0.0, 0.1]}}},
        runs=[{"optimizers[1].options.inner_steps": 2}, {"optimizers[1].options.inner_steps": 4, "seed": 7}],
    )
    config = parse_sweep_config(data)
    assert len(config.runs) == 2 * 2 * 2
    keys = [a.key for a in config.axes]
    assert keys == [
        "optimizers[1].sampler_options.step_size",
        "model.options.dropout",
        "optimizers[1].options.inner_steps",
        "seed",
    ]
    last = config.runs[-1]
    assert last.overrides == {
        "optimizers[1].sampler_options.step_size": 0.2,
        "model.options.dropout": 0.1,
        "optimizers[1].options.inner_steps": 4,
        "seed": 7,
    }
    assert last.config["model"]["options"] == {"hidden": [16], "dropout": 0.1}
    assert last.config["optimizers"][1]["sampler_options"]["step_size"] == 0.2
    assert last.config["optimizers"][0] == BASE["optimizers"][0]  # SGD keeps its settings and stays in the run
    assert last.touched["model.options.dropout"] is None
    assert last.touched["optimizers[1].options.inner_steps"] == ["esgd"]
    assert last.id == "step_size-0.2_dropout-0.1_inner_steps-4_seed-7"


def test_labelled_optimizer_paths_and_set_table():
    config = parse_sweep_config(
        sweep({'optimizers["esgd"].lr': [0.1, 0.2]}, set={"effective_epochs": 3, "optimizers[0].lr": 0.05})
    )
    assert [r.config["optimizers"][1]["lr"] for r in config.runs] == [0.1, 0.2]
    assert all(r.config["effective_epochs"] == 3 and r.config["optimizers"][0]["lr"] == 0.05 for r in config.runs)
    assert config.runs[0].id == "lr-0.1"  # a fixed override is not part of the run id
    assert config.resolved()["set"] == {"effective_epochs": 3, "optimizers[0].lr": 0.05}


def test_long_run_ids_are_cut_and_hashed():
    config = parse_sweep_config(
        sweep(
            {
                "model.options.hidden": [
                    [16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16],
                    [16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 8],
                ]
            }
        )
    )
    ids = [r.id for r in config.runs]
    assert len(set(ids)) == 2 and all(len(i) <= 64 for i in ids)


def test_every_problem_is_listed_at_once():
    data = sweep(
        {
            "optimizers[0].options.gama": [0.1],  # unknown option (from the training config parser)
            "nonexistent.x": [1],  # unknown top-level field
            "optimizers[5].lr": [0.1],  # no such optimizer
            "optimizers[*].options.rho": [0.05],  # a wildcard no optimizer takes (no SAM here)
            'optimizers["adam"].lr': [0.1],  # no such label
            "optimizer": ["sgd", "adam"],  # a label the base does not have
            "gamma": [-1.0, 1.0],  # a bad value: found by parsing every run
            "seed": 3,  # not a list
            "batch_size": [],  # empty
            "name": ["a"],  # not sweepable
            "optimizers[0]..lr": [1],  # not a path
            "data.source.x": [1],  # below a value that is not a table
        },
        unknown_field=1,
    )
    found = problems(data)
    text = "\n".join(found)
    expected = [
        "unknown_field: unknown field",
        "nonexistent.x",
        "no optimizer 5",
        "no optimizer of the base config takes options.rho",
        "no optimizer labelled 'adam'",
        "grid.optimizer[1]",
        "grid.seed",
        "grid.batch_size",
        "'name' cannot be swept",
        "not a dotted path",
        "data.source is 'digits', not a table",
    ]
    for piece in expected:
        assert piece in text, piece
    assert len(found) == len(expected)  # path problems first: the runs are parsed only when every path is good
    found = problems(sweep({"optimizers[0].options.gama": [0.1, 0.2], "gamma": [-1.0, 1.0], "seed": [0, 1]}))
    assert any("optimizers[0].options.gama: unknown for 'sgd'" in p and "and 7 more of 8" in p for p in found)
    assert any("optimizers[1].options.gamma: gamma must be" in p and "-1.0" in p and "3 more of 8" in p for p in found)


def test_base_file_problems_and_runs_conflicts(tmp_path):
    assert any("training config not found" in p for p in problems({"base": "nope.toml", "grid": {"seed": [0]}}))
    assert any("base: missing" in p for p in problems({"grid": {"seed": [0]}}))
    found = problems(sweep({"seed": [0, 1]}, runs=[{"seed": 2}, "x"]))
    assert any("runs[0].seed: also swept in [grid]" in p for p in found)
    assert any("runs[1]" in p and "a table" in p for p in found)
    assert any("give a [grid]" in p for p in problems(sweep()))
    assert any("name" in p for p in problems(sweep({"seed": [0]}, name="../x")))
    (tmp_path / "train.toml").write_text(
        "seed = 0\n[data]\nsource = 'digits'\n[model]\nname = 'mlp'\n[[optimizers]]\nkind = 'sgd'\nlr = 0.1\n"
    )
    (tmp_path / "sw.toml").write_text('base = "train.toml"\n[grid]\nseed = [0, 1]\n')
    with pytest.raises(ConfigError) as info:  # the base lacks a budget: every run says so, once
        load_sweep_config(tmp_path / "sw.toml")
    assert len(info.value.problems) == 1 and "and 1 more of 2" in info.value.problems[0]
    (tmp_path / "train.toml").write_text("epochs = 1\n" + (tmp_path / "train.toml").read_text())
    config = load_sweep_config(tmp_path / "sw.toml")
    assert config.name == "sw" and [r.id for r in config.runs] == ["seed-0", "seed-1"]


def test_shipped_sweep_configs_are_valid():
    for path in sorted(shipped_dir().glob("*.toml")):
        if path.stem.startswith("sweep_") or path.stem in ("mnist_paper", "mnist_paper_full"):
            config = load_sweep_config(path)
            assert config.runs
    from localentropy.experiments.training.config import load_train_config

    train = load_train_config(shipped_dir() / "mnist_paper_train.toml")
    assert train.effective_epochs == 100 and [o.label for o in train.optimizers] == [
        "entropy-sgd",
        "adam",
        "sgd",
        "lpf-sgd",
    ]
    assert len(load_sweep_config(shipped_dir() / "mnist_paper.toml").runs) == 12
    assert len(load_sweep_config(shipped_dir() / "sweep_sensitivity.toml").runs) == 27 * 3 + 3


# ------------------------------------------------------------------------------------------------- running


def test_rerun_skips_completed_runs_and_a_failed_run_does_not_stop_the_others(tmp_path, monkeypatch):
    import localentropy.experiments.training.trainer as train_module

    config = parse_sweep_config(sweep({"optimizer": ["sgd", "esgd"], "seed": [0, 1]}))
    real = train_module.run_training
    fail = {"esgd_seed-1"}

    def flaky(config, out=None, **kwargs):
        if Path(out).name in fail:
            raise RuntimeError("injected failure")
        return real(config, out, **kwargs)

    monkeypatch.setattr(train_module, "run_training", flaky)
    out = tmp_path / "sweep"
    _, state, results = run_sweep(config, out, executor="inline")
    assert state == "fresh" and (out / "COMPLETE").is_file()
    status = {r["id"]: r["status"] for r in results["runs"]}
    assert status == {"sgd_seed-0": "ok", "sgd_seed-1": "ok", "esgd_seed-0": "ok", "esgd_seed-1": "failed"}
    failed = next(r for r in results["runs"] if r["status"] == "failed")
    assert failed["message"] == "RuntimeError: injected failure"
    assert "injected failure" in (out / "logs" / "esgd_seed-1.log").read_text()
    assert results["counts"] == {"ok": 3, "diverged": 0, "failed": 1}
    assert "esgd_seed-1" in (out / "report.md").read_text()
    for name in ("results.json", "report.md", "curves.png", "summary.csv", "runs.csv", "config.json"):
        assert (out / name).is_file(), name

    done = [out / "runs" / r for r in ("sgd_seed-0", "sgd_seed-1", "esgd_seed-0")]
    mtimes = {p: [f.stat().st_mtime_ns for f in sorted(p.rglob("*"))] for p in done}
    time.sleep(0.02)
    fail.clear()  # the cause is gone: the re-run retries the failed run only
    _, state, results = run_sweep(config, out, executor="inline")
    assert state == "retry"
    assert {r["id"]: (r["status"], r["state"]) for r in results["runs"]} == {
        "sgd_seed-0": ("ok", "skip"),
        "sgd_seed-1": ("ok", "skip"),
        "esgd_seed-0": ("ok", "skip"),
        "esgd_seed-1": ("ok", "fresh"),
    }
    assert {p: [f.stat().st_mtime_ns for f in sorted(p.rglob("*"))] for p in done} == mtimes
    marker = (out / "COMPLETE").stat().st_mtime_ns
    _, state, again = run_sweep(config, out, executor="inline")  # all complete: skipped, nothing rewritten
    assert state == "skip" and (out / "COMPLETE").stat().st_mtime_ns == marker
    assert finals(again) == finals(results)

    changed = parse_sweep_config(sweep({"optimizer": ["sgd", "esgd"], "seed": [0, 2]}))
    with pytest.raises(RunDirectoryError, match="different config"):
        run_sweep(changed, out, executor="inline")


def test_runtime_failure_and_divergence_are_recorded(tmp_path):
    # data.path of a missing directory passes validation and fails when the run loads its data
    runs = [{"seed": 0}, {"data.source": "mnist", "data.path": str(tmp_path / "missing"), "data.test_fraction": 0.2}]
    base = copy.deepcopy(BASE)
    base["data"].pop("validation_fraction")
    with pytest.raises(ConfigError, match="test_fraction"):  # a bad value found before anything runs
        parse_sweep_config(sweep(runs=runs, base=base))
    runs[1].pop("data.test_fraction")
    base["data"]["validation_fraction"] = 0.1
    base["optimizers"] = [{"label": "sgd", "kind": "sgd", "lr": 1e12}]  # diverges
    runs.append({"seed": 1, "optimizers[0].lr": 0.1})
    _, _, results = run_sweep(parse_sweep_config(sweep(runs=runs, base=base)), tmp_path / "s", executor="inline")
    by = {r["id"]: r for r in results["runs"]}
    assert by["seed-0"]["status"] == "diverged" and "diverged" in by["seed-0"]["message"]
    assert by["seed-0"]["records"][0]["final"] is None
    failed = by[next(i for i in by if i.startswith("source-mnist"))]
    assert failed["status"] == "failed" and "not a directory" in failed["message"]
    assert by["seed-1_lr-0.1"]["status"] == "ok"
    rows = list(csv.DictReader((tmp_path / "s" / "runs.csv").open()))
    assert sorted(r["status"] for r in rows) == ["diverged", "failed", "ok"]


def test_run_one_never_raises(tmp_path):
    outcome = run_one({"name": "x", "seed": 0}, str(tmp_path / "x"))
    assert outcome["status"] == "failed" and outcome["message"].startswith("ConfigError")
    assert outcome["wall_seconds"] >= 0 and "Traceback" in outcome["traceback"]
    assert outcome["other_cores"] >= 0  # what other processes used meanwhile (/proc/stat: Linux)


def test_local_executor_with_two_workers_matches_inline(tmp_path, capsys):
    config_path = tmp_path / "sw.toml"
    config_path.write_text(
        'name = "two"\n[base]\nseed = 0\nbatch_size = 128\neffective_epochs = 2\n'
        'data = { source = "digits" }\nmodel = { name = "mlp", options = { hidden = [16] } }\n'
        'flatness = { measures = [] }\n[[base.optimizers]]\nkind = "sgd"\nlr = 0.1\n[grid]\nseed = [0, 1]\n'
    )
    out = tmp_path / "local"
    assert main(["sweep", str(config_path), "--out", str(out), "--workers", "2"]) == 0
    assert "completed (2 ok)" in capsys.readouterr().out
    local = json.loads((out / "results.json").read_text())
    _, _, inline = run_sweep(load_sweep_config(config_path), tmp_path / "inline", executor="inline")
    assert finals(local) == finals(inline)  # the same numbers from another process (CPU, one thread)
    assert local["timing"]["runs_at_a_time"] == 2 and not local["timing"]["alone"]
    assert main(["sweep", str(config_path), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    assert main(["sweep", str(tmp_path / "none.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "bad.toml").write_text('base = "x.toml"\n[grid]\nseed = [0]\n')
    assert main(["sweep", str(tmp_path / "bad.toml")]) == 2
    assert main(["sweep", str(tmp_path / "bad.toml"), "--address", "auto"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "bad.toml"), "--workers", "0"]) == 2


def test_report_groups_settings_over_seeds(tmp_path):
    from localentropy.experiments.sweeps.summary import best_groups, entries, groups

    config = parse_sweep_config(sweep({"optimizer": ["sgd", "esgd"], "gamma": [0.3, 1.0], "seed": [0, 1]}))
    _, _, results = run_sweep(config, tmp_path / "s", executor="inline")
    all_groups = groups(entries(results))
    keys = sorted((g["label"], g["settings"]) for g in all_groups)
    assert keys == [("esgd", (("gamma", "0.3"),)), ("esgd", (("gamma", "1"),)), ("sgd", ())]
    sgd = next(g for g in all_groups if g["label"] == "sgd")
    errors = [r["records"][0]["final"]["test_error"] for r in results["runs"] if r["id"].startswith("sgd")]
    assert sgd["n"] == 2 and sgd["test_mean"] == pytest.approx(sum(errors) / 2)
    assert sgd["effective_epochs"] == pytest.approx(2.0, abs=0.1)
    assert set(best_groups(all_groups)) == {"sgd", "esgd"}
    report = (tmp_path / "s" / "report.md").read_text()
    assert "sensitivity.png" in report and "| sgd |" in report and "## esgd" in report
    assert (tmp_path / "s" / "sensitivity.png").stat().st_size > 1000
    summary = list(csv.DictReader((tmp_path / "s" / "summary.csv").open()))
    assert {r["gamma"] for r in summary} == {"", "0.3", "1"}
    # the answer first, with its interval; what ran with its values; the paired differences and their forest plot;
    # the resolved config last
    headings = [line for line in report.split("\n") if line.startswith("## ")]
    assert headings[:3] == ["## Answer", "## What ran", "## Summary: each optimizer at its best setting"]
    assert headings[-1] == "## Resolved config" and report.rstrip().endswith("```")
    answer = report.split("## What ran")[0]
    assert "Lowest mean final test error: `" in answer and "95 % t-interval over 2 seeds" in answer
    assert "- `sgd` (sgd): lr = " in report and "Timing: 1 run at a time" in report
    assert "## Paired differences" in report and "](forest.png)" in report
    assert (tmp_path / "s" / "forest.png").stat().st_size > 1000
    assert results["timing"]["runs_at_a_time"] == 1 and "load_start" in results["timing"]
    assert results["timing"]["other_cores_max"] == max(r["other_cores"] for r in results["runs"])
    assert results["timing"]["waited_s"] is None  # inline runs do not wait for a quiet machine


def test_report_rebuilds_a_sweep_in_place_and_refuses_to_merge_one(tmp_path, capsys):
    """`localentropy report DIR` draws a sweep's report again from its results.json (the same report.md), alone."""
    config = parse_sweep_config(sweep({"optimizer": ["sgd"], "seed": [0, 1]}))
    out = tmp_path / "s"
    run_sweep(config, out, executor="inline")
    written = (out / "report.md").read_text()
    (out / "report.md").unlink()
    (out / "curves.png").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text() == written and (out / "curves.png").is_file()
    assert main(["report", str(out), str(out / "runs" / "sgd_seed-0")]) == 2
    assert "a sweep's report is rebuilt alone" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    results["axes"] = [{}]  # an axis without its key
    (out / "results.json").write_text(json.dumps(results))
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a complete sweep's results" in err and "Traceback" not in err


@pytest.mark.slow  # 10-25 s: Ray starts a raylet, a GCS and two workers that import torch
def test_ray_executor_runs_a_two_run_sweep(tmp_path):
    pytest.importorskip("ray", reason="the Ray executor needs ray (pip install 'localentropy[ray]'); CI installs it")
    config = parse_sweep_config(sweep({"optimizer": ["sgd", "esgd"]}))
    _, state, results = run_sweep(config, tmp_path / "ray", executor="ray", workers=2)
    assert state == "fresh" and results["counts"]["ok"] == 2
    assert all((tmp_path / "ray" / "runs" / r.id / "COMPLETE").is_file() for r in config.runs)
    _, _, inline = run_sweep(config, tmp_path / "inline", executor="inline")
    assert finals(results) == finals(inline)


def test_executor_arguments_are_checked(tmp_path):
    config = parse_sweep_config(sweep({"seed": [0]}))
    with pytest.raises(ValueError, match="executor"):
        run_sweep(config, tmp_path / "x", executor="dask")
    with pytest.raises(ValueError, match="workers"):
        run_sweep(config, tmp_path / "x", workers=0)
    assert sweep_module.EXECUTORS == ("local", "ray")


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_the_same_command_resumes(tmp_path):
    import signal
    import subprocess
    import sys

    config_path = tmp_path / "sw.toml"
    config_path.write_text(
        'name = "long"\n[base]\nseed = 0\nbatch_size = 32\neffective_epochs = 40\n'
        'data = { source = "digits" }\nmodel = { name = "mlp", options = { hidden = [128] } }\n'
        'flatness = { measures = [] }\n[[base.optimizers]]\nkind = "sgd"\nlr = 0.05\n'
        "[grid]\nseed = [0, 1, 2, 3, 4, 5]\n"
    )
    out = tmp_path / "out"
    command = [sys.executable, "-m", "localentropy", "sweep", str(config_path), "--out", str(out), "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any((out / "runs").glob("*/COMPLETE")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    done_before = sorted(p.parent.name for p in (out / "runs").glob("*/COMPLETE"))
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "run the same command again to resume" in err
    assert not (out / "COMPLETE").exists()
    first = out / "runs" / done_before[0]
    mtimes = [f.stat().st_mtime_ns for f in sorted(first.rglob("*"))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resumed and completed (6 ok)" in result.stdout
    assert [f.stat().st_mtime_ns for f in sorted(first.rglob("*"))] == mtimes
    results = json.loads((out / "results.json").read_text())
    assert {r["state"] for r in results["runs"] if r["id"] in done_before} == {"skip"}


def test_what_ran_marks_the_tuned_values():
    from localentropy.experiments.sweeps.report import _values_text

    opt = {"lr": 0.1, "options": {"gamma": 0.3}, "sampler": "sgld", "sampler_options": {"step_size": 0.05}}
    assert _values_text(opt, {"options.gamma": 0.3, "step_size": 0.05}) == [
        "lr = 0.1",
        "gamma = 0.3 (**tuned**)",
        "sampler `sgld` (step_size = 0.05 (**tuned**))",
    ]


def test_points_the_log_axes_cannot_show_are_named():
    from localentropy.experiments.sweeps.figures import clipped_on_log_axes

    def member(errors):
        curve = [{"test_error": e, "effective_epochs": i, "seconds": i} for i, e in enumerate(errors)]
        return {"curve": curve, "status": "ok"}

    members = [member([0.0, 0.10, 0.0]), member([0.0, 0.30, 0.02])]
    group = {"label": "sgd", "settings": (), "ok": members, "members": members, "test_mean": 0.01, "test_sd": 0.014}
    steady = {**group, "label": "adam", "ok": [member([0.5, 0.4])] * 2, "test_mean": 0.4, "test_sd": 0.0}
    steady["members"] = steady["ok"]
    notes = clipped_on_log_axes([group, steady], {"sgd": group, "adam": steady})
    assert notes == [
        "`sgd`: 1 curve point(s) at 0 % not drawn, its sd band cut at 0.001 % at 1 point(s), "
        "its final sd bar reaches 0 and is cut"
    ]
