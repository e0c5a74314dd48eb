"""Smoke tests of the speed benchmark (``localentropy.experiments.speed``) and its thin wrappers in benchmarks/:
each runs end to end on a tiny model. No timing is asserted."""

from __future__ import annotations

import io
import json
import math
import runpy
import sys
from pathlib import Path

import pytest

from localentropy.entropy.optim.chunks import chunk_plan
from localentropy.experiments.reproduce import run as reproduce
from localentropy.experiments.speed import run_all, samplers
from localentropy.experiments.speed.entropy import PARALLEL_FLOOR, SERIAL_FLOOR, summarise_bracketed
from localentropy.experiments.speed.timing import Row, format_table, summarise
from localentropy.samplers import available_samplers

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"
# Every section at tiny sizes, every repeat kept (the test must not depend on a quiet machine).
TINY_RUN_ALL = [
    "--quick",
    "--full-inner",
    "--hidden",
    "8",
    "--batch",
    "4",
    "--threads",
    "1",
    "--warmup",
    "0",
    "--entropy-repeats",
    "1",
    "--sampler-repeats",
    "1",
    "--estimator-repeats",
    "1",
    "--estimator-dim",
    "3",
    "--estimator-steps",
    "2",
    "--max-other-cores",
    "-1",
]


def test_bench_samplers_wrapper_runs_and_reports_every_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results" / "samplers.json"
    # One thread: on a shared machine, a second thread that gets descheduled stalls every tiny kernel.
    argv = ["--hidden", "16", "--batch", "8", "--repeats", "2", "--warmup", "0", "--threads", "1", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", [str(BENCHMARKS / "bench_samplers.py"), *argv])
    runpy.run_path(str(BENCHMARKS / "bench_samplers.py"), run_name="__main__")

    rows = json.loads(out.read_text())["rows"]
    covered = {(r["sampler"], r["noise"]) for r in rows if r["kind"] == "localentropy"}
    for name in available_samplers():
        assert (name, "gaussian") in covered
        assert (name, "rademacher") in covered
    for row in rows:
        # Allowed to have no timing: a peer that is not installed, a sampler that refuses Rademacher noise.
        if (row["kind"] == "peer" and row["note"].startswith("not installed")) or (
            row["kind"] == "localentropy" and row["note"].startswith("not applicable") and "rademacher" in row["row"]
        ):
            assert row["ratio"] is None
            continue
        assert row["n"] == 2
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row
        assert math.isfinite(row["median_ms"]) and row["median_ms"] > 0, row
    printed = capsys.readouterr().out
    assert "| row | median ms | ratio to G | IQR of ratio |" in printed


def test_samplers_main_returns_what_it_writes(tmp_path: Path) -> None:
    out = tmp_path / "samplers.json"
    report = samplers.main(
        ["--hidden", "8", "--batch", "4", "--repeats", "1", "--warmup", "0", "--threads", "1", "--json", str(out)]
    )
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(report["rows"]))


def test_run_all_runs_every_section_on_tiny_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The one benchmark command end to end at tiny sizes: every table printed, the JSON written. No timing asserted."""
    out = tmp_path / "all.json"
    report = run_all.run([*TINY_RUN_ALL, "--json", str(out)])

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    for section in ("samplers", "entropy", "estimator", "peers", "floor", "targets"):
        assert section in report
    entropy = {
        (r["sampler"], r["noise"], r["inner_steps"]) for r in report["entropy"]["rows"] if r["kind"] == "entropy"
    }
    for name in ("sgld", "sghmc", "psgld", "msgld"):
        for noise in ("gaussian", "rademacher"):
            for L in (5, 20):
                assert (name, noise, L) in entropy
    for row in report["entropy"]["rows"]:
        if row["kind"] == "entropy" and not row["note"]:
            assert row["n"] == 1 and math.isfinite(row["ratio"]) and row["ratio"] > 0, row
    assert [r["n_chains"] for r in report["estimator"]["rows"]] == [1, 8, 64, 1, 8, 64]
    assert all(r["chain_steps_per_s"] > 0 for r in report["estimator"]["rows"])
    assert {t["target"] for t in report["targets"]} >= {
        "entropy_gaussian",
        "entropy_rademacher",
        "step_sgld",
        "chains_64_over_1",
        "entropy_gaussian_over_parallel_floor",
        "entropy_gaussian_over_parallel_floor_goal",
        "entropy_rademacher_sgld",
        "entropy_before",
        "step_sgld_before",
        "step_sgld_rademacher_before",
    }
    printed = capsys.readouterr().out
    for title in ("## (a)", "## (b)", "## (c)", "## (d)", "## (e)", "## targets"):
        assert title in printed


def test_the_floor_rows_are_measured_interleaved_and_give_the_distance_to_the_floor() -> None:
    report = run_all.run([*TINY_RUN_ALL, "--sections", "entropy"])
    rows = {r["row"]: r for r in report["entropy"]["rows"]}
    for name in (SERIAL_FLOOR, PARALLEL_FLOOR):
        assert rows[name]["kind"] == "floor" and rows[name]["n"] == 1 and rows[name]["inner_steps"] == 1
        assert math.isfinite(rows[name]["ratio"]) and rows[name]["ratio"] > 0
    numels = [784 * 8 + 8, 8 * 8 + 8, 8 * 10 + 10]
    assert rows[SERIAL_FLOOR]["settings"]["entries"] == sum(numels)
    assert rows[PARALLEL_FLOOR]["settings"]["chunks"] == len(chunk_plan(numels))  # the optimizer's plan
    by_L = {r["row"]: r for r in report["floor"]["rows"]}
    for L in (5, 20):
        entry = by_L[f"L={L} sgld"]
        inner = rows[f"L={L} sgld"]["ratio"]
        assert entry["over_serial_floor"] == pytest.approx(inner / rows[SERIAL_FLOOR]["ratio"])
        assert entry["above_parallel_floor_G"] == pytest.approx(inner - rows[PARALLEL_FLOOR]["ratio"])
        assert entry["over_parallel_floor"] == pytest.approx(inner / rows[PARALLEL_FLOOR]["ratio"])
        for name, limit in (
            ("entropy_gaussian_over_parallel_floor", 1.15),
            ("entropy_gaussian_over_parallel_floor_goal", 1.05),
        ):
            target = [t for t in report["targets"] if t["target"] == name and f"L={L}" in t["what"]]
            assert len(target) == 1 and target[0]["value"] == pytest.approx(entry["over_parallel_floor"])
            assert target[0]["limit"] == limit
    assert [t["limit"] for t in report["targets"] if t["target"] == "entropy_rademacher_sgld"] == [1.35, 1.35]


def test_a_row_whose_every_repeat_was_dropped_prints_not_measured() -> None:
    """On a busy machine every (G, row) pair can be dropped: the tables say "not measured" instead of crashing."""
    unit = Row("G (zero_grad + forward + backward)", "unit", {}, None)
    dropped = Row("L=5 sgld", "entropy", {}, None, inner_steps=5)
    table = format_table(summarise_bracketed(unit, [dropped]))
    assert table.count("not measured") == 2
    assert format_table(summarise(unit, [dropped])).count("not measured") == 2
    refused = Row("mala, rademacher", "localentropy", {}, None, note="not applicable: noise must be 'gaussian'")
    assert "not applicable" in format_table(summarise(unit, [refused]))


def test_the_wrappers_are_thin() -> None:
    for script, function in (("run_all.py", run_all.run), ("bench_samplers.py", samplers.main)):
        namespace = runpy.run_path(str(BENCHMARKS / script))  # not as __main__: nothing runs
        assert function in namespace.values()
        assert len((BENCHMARKS / script).read_text().splitlines()) < 30


def test_reproduce_runs_the_package_benchmark_not_the_script(tmp_path: Path) -> None:
    """The speed step runs ``python -m localentropy.experiments.speed`` from the step's directory: an installed
    wheel, without benchmarks/, runs it too."""
    progress = io.StringIO()
    reproduce._run_speed(tmp_path, [*TINY_RUN_ALL, "--sections", "entropy"], progress)
    assert "-m localentropy.experiments.speed" in progress.getvalue()
    assert "benchmarks" not in progress.getvalue()
    speed = json.loads((tmp_path / "speed.json").read_text())
    assert {r["row"] for r in speed["entropy"]["rows"]} >= {SERIAL_FLOOR, PARALLEL_FLOOR}
