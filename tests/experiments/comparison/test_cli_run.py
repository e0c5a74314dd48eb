"""``localentropy run`` end to end, in-process, on a tiny config: the run directory, skip / force / resume,
reproducibility, readable errors, the report and samplers commands, and the Python API."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import xarray as xr

from localentropy.cli import main
from localentropy.experiments.comparison.config import load_config
from localentropy.experiments.comparison.runner import SCHEMA, run_comparison
from localentropy.samplers import available_samplers

TINY = """\
name = "tiny"
seed = 3
replicates = 3
chains = 2
gamma = 1.0
temperature = 0.1

[problem]
kind = "quadratic"
dim = 3
condition = 4

[[estimators]]
label = "sgld"
sampler = "sgld"
step_size_fraction = 0.5
budgets = [16, 32]

[[estimators]]
label = "smooth"
kind = "smoothing"
sigma = "matched"
budgets = [16, 32]
"""
KEYS = {("sgld", 16), ("sgld", 32), ("smooth", 16), ("smooth", 32)}
SGLD_32 = "sgld__p0__g1__T0.1__b32"


pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one intra-op thread


def write_config(directory: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def run(config: Path, out: Path, *extra: str) -> int:
    return main(["run", str(config), "--out", str(out), *extra])


def without_timing(results: dict[str, Any]) -> dict[str, Any]:
    """results.json without the wall-clock fields, which legitimately differ between runs."""
    results = copy.deepcopy(results)
    for record in results["records"]:
        record.pop("timing", None)
    for key in [k for k in results.get("meta", {}) if "time" in k or "stamp" in k or k == "created"]:
        results["meta"].pop(key)
    return results


def load_results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> tuple[Path, Path, str]:
    """One complete run of the tiny config, shared read-only: (config path, run directory, stdout)."""
    base = tmp_path_factory.mktemp("fresh")
    config = write_config(base)
    out = base / "out"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
            assert run(config, out) == 0
    finally:
        torch.set_num_threads(previous)
    return config, out, stdout.getvalue()


@pytest.fixture
def copy_of(fresh, tmp_path) -> tuple[Path, Path]:
    """A private copy of the fresh run (mtimes kept), for tests that change it."""
    config, out, _ = fresh
    target = tmp_path / "out"
    shutil.copytree(out, target)
    return config, target


# ----------------------------------------------------------------------------------------------------------------
# A fresh run
# ----------------------------------------------------------------------------------------------------------------


def test_fresh_run_directory(fresh):
    config, out, stdout = fresh
    assert f"completed: {out / 'report.md'}" in stdout
    for name in ("config.json", "results.json", "draws.nc", "report.md", "COMPLETE"):
        assert (out / name).is_file(), name
    assert json.loads((out / "config.json").read_text()) == load_config(config).as_dict()
    pngs = list(out.glob("*.png"))
    assert pngs and all(p.stat().st_size > 1000 for p in pngs)
    assert {p.name for p in (out / "records").glob("*.json")} == {f"{e}__p0__g1__T0.1__b{b}.json" for e, b in KEYS}


def test_results_json(fresh):
    config, out, _ = fresh
    results = load_results(out)
    assert results["schema"] == SCHEMA == 1
    assert results["name"] == "tiny"
    assert results["config"] == load_config(config).as_dict()
    meta = results["meta"]
    assert meta["seed"] == 3
    assert "git_commit" in meta
    assert meta["versions"]["torch"] == torch.__version__
    assert {"python", "numpy", "arviz-stats", "xarray"} <= set(meta["versions"])
    records = results["records"]
    assert len(records) == 4
    keys = {(r["key"]["estimator"], r["key"]["budget"]) for r in records}
    assert keys == KEYS
    for record in records:
        key = record["key"]
        assert set(key) == {"estimator", "point", "gamma", "temperature", "budget"}
        assert (key["point"], key["gamma"], key["temperature"]) == (0, 1.0, 0.1)
        assert record["status"] == "ok" and record["error"] is None
        metrics = record["metrics"]
        assert metrics["replicates"] == 3
        assert metrics["grad_evals"] == key["budget"]  # 2 chains x budget / 2 steps; order-1 smoothing: one each
        assert metrics["mse"] > 0 and 0 < metrics["cosine"] <= 1
        assert set(record["timing"]) == {"seconds_per_replicate", "seconds_total"}
        if key["estimator"] == "sgld":
            assert metrics["efficiency_ratio"] > 0
            assert record["chains"]["n_chains"] == 2
            assert record["chains"]["n_draws"] == {16: 7, 32: 13}[key["budget"]]  # steps minus 20 % burn-in
            assert record["ksd"] > 0
            assert record["estimator"]["settings"]["n_steps"] == key["budget"] // 2
        else:
            assert metrics["efficiency_ratio"] is None and record["chains"] is None and record["ksd"] is None
            assert record["estimator"]["settings"]["sigma"] == pytest.approx(0.1**0.5)  # matched: sqrt(T / gamma)


def test_draws_netcdf(fresh):
    _, out, _ = fresh
    with xr.open_datatree(out / "draws.nc", engine="h5netcdf") as tree:
        assert set(tree.children) == {"sgld__p0__g1__T0.1__b16", SGLD_32}  # smoothing has no chains
        node = tree[SGLD_32]
        assert node.attrs["estimator"] == "sgld" and node.attrs["budget"] == "32"
        x = node["posterior"]["x"]
        assert x.dims == ("chain", "draw", "x_dim_0")
        assert x.shape == (2, 13, 3)


def test_report_md(fresh):
    _, out, _ = fresh
    text = (out / "report.md").read_text()
    assert text.startswith("# Local-entropy gradient report: `tiny`")
    assert "point 0, gamma = 1, T = 0.1" in text
    assert "`sgld`" in text and "`smooth`" in text
    for png in out.glob("*.png"):
        assert f"]({png.name})" in text


def test_run_restores_torch_threads(fresh):
    assert torch.get_num_threads() == 1  # the fixture's setting survived the run (config threads = 1)


# ----------------------------------------------------------------------------------------------------------------
# Skip, force, resume
# ----------------------------------------------------------------------------------------------------------------


def test_rerun_is_skipped(copy_of, capsys):
    config, out = copy_of
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert run(config, out) == 0
    assert "is complete: skipped (use --force to run again)" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_force_reruns(copy_of, capsys):
    config, out = copy_of
    original = load_results(out)
    (out / "results.json").write_text("{}")  # so that the rerun visibly rewrites it
    assert run(config, out, "--force") == 0
    captured = capsys.readouterr()
    assert "completed:" in captured.out and "skipped" not in captured.out
    assert "[4/4]" in captured.err  # every record was run again
    assert without_timing(load_results(out)) == without_timing(original)
    assert (out / "COMPLETE").is_file()


def test_incomplete_directory_resumes_only_missing_record(copy_of, capsys):
    config, out = copy_of
    original = load_results(out)
    (out / "COMPLETE").unlink()
    (out / "results.json").unlink()
    (out / "records" / f"{SGLD_32}.json").unlink()
    others = {p: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    assert len(others) == 3
    assert run(config, out) == 0
    captured = capsys.readouterr()
    assert "resumed and completed" in captured.out
    assert captured.err.count("(resumed)") == 3  # the three saved records were read back, not rerun
    assert {p: p.stat().st_mtime_ns for p in others} == others
    assert (out / "records" / f"{SGLD_32}.json").is_file()
    assert (out / "COMPLETE").is_file()
    assert without_timing(load_results(out)) == without_timing(original)  # the recomputed record is identical


def test_different_config_into_incomplete_directory_is_refused(copy_of, tmp_path, capsys):
    _, out = copy_of
    (out / "COMPLETE").unlink()
    other = write_config(tmp_path / "other", TINY.replace("seed = 3", "seed = 4"))
    assert run(other, out) == 2
    err = capsys.readouterr().err
    assert "holds an incomplete run of a different config" in err and "--force" in err
    assert "Traceback" not in err
    assert not (out / "COMPLETE").exists()
    assert json.loads((out / "config.json").read_text())["seed"] == 3  # untouched


def test_different_config_into_complete_directory_is_refused(copy_of, tmp_path, capsys):
    """A complete run of another config must not be reported as "skipped" for this one."""
    _, out = copy_of
    other = write_config(tmp_path / "other", TINY.replace("replicates = 3", "replicates = 4"))
    assert run(other, out) == 2
    captured = capsys.readouterr()
    assert "skipped" not in captured.out
    assert "holds a complete run of a different config" in captured.err


def test_force_refuses_to_delete_a_directory_that_is_not_a_run(fresh, tmp_path, capsys):
    config, _, _ = fresh
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert run(config, precious, "--force") == 2
    assert "not a run directory" in capsys.readouterr().err
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_out_is_a_file(fresh, tmp_path, capsys):
    config, _, _ = fresh
    target = tmp_path / "file"
    target.write_text("x")
    assert run(config, target) == 2
    assert "is not a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------------------------


def test_two_fresh_runs_are_identical(fresh, tmp_path, capsys):
    config, out, _ = fresh
    second = tmp_path / "second"
    assert run(config, second) == 0
    capsys.readouterr()
    first_results, second_results = load_results(out), load_results(second)
    assert without_timing(first_results) == without_timing(second_results)  # timing is the only difference
    assert first_results["meta"] == second_results["meta"]  # versions, seed, commit: no timestamps in meta
    assert all("timing" in r for r in second_results["records"])


# ----------------------------------------------------------------------------------------------------------------
# Errors: exit 2, one readable message, no traceback, no COMPLETE
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("replicates = 3", "replicates = 1"), "replicates: got 1 (int), expected an integer in [2, "),
        (('sampler = "sgld"', 'sampler = "nuts"'), "estimators[0].sampler: got 'nuts' (str)"),
        (
            ("step_size_fraction = 0.5", "hyperparameters = { step_size = -0.1 }"),
            "estimators[0].hyperparameters.step_size: step_size must be in (0, inf), got -0.1",
        ),
        (("dim = 3", "dim = 3\ncolour = 1"), "problem.colour: unknown field"),
        (("[problem]", "[problem"), "not valid TOML"),
    ],
)
def test_bad_config_exits_2_with_one_readable_message(tmp_path, capsys, change, expected):
    config = write_config(tmp_path, TINY.replace(*change))
    out = tmp_path / "out"
    assert run(config, out) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert captured.err.startswith("localentropy run: error: 1 problem(s) in ")
    assert str(config) in captured.err
    assert expected in captured.err
    assert not (out / "COMPLETE").exists()


def test_missing_config_file(tmp_path, capsys):
    assert run(tmp_path / "nope.toml", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(capsys):
    assert main(["run"]) == 2
    assert main(["frobnicate"]) == 2
    assert "usage:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Other commands
# ----------------------------------------------------------------------------------------------------------------


def test_report_rebuilds(copy_of, capsys):
    _, out = copy_of
    (out / "report.md").unlink()
    for png in out.glob("*.png"):
        png.unlink()
    assert main(["report", str(out)]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    assert (out / "report.md").read_text().startswith("# Local-entropy gradient report")
    assert list(out.glob("*.png"))


def test_report_into_another_directory_and_bad_input(fresh, tmp_path, capsys):
    _, out, _ = fresh
    merged = tmp_path / "merged"
    assert main(["report", str(out), str(out), "--out", str(merged)]) == 0
    assert "tiny#2" in (merged / "report.md").read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "Traceback" not in err


def test_samplers_lists_all(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")}
    assert listed == set(available_samplers())


def test_run_help(capsys):
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--force" in out


def test_python_api(fresh, tmp_path):
    config, out, _ = fresh
    progress = io.StringIO()
    path, state = run_comparison(config, tmp_path / "api", progress=progress)
    assert (path, state) == (tmp_path / "api", "fresh")
    assert (path / "COMPLETE").is_file()
    assert progress.getvalue().count("\n") == 4  # one progress line per record
    assert without_timing(load_results(path))["records"] == without_timing(load_results(out))["records"]
    assert run_comparison(load_config(config), path, progress=progress) == (path, "skip")  # a RunConfig works too
