"""Smoke test of the benchmark script: it runs end to end on a tiny model. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

from localentropy.samplers import available_samplers

BENCH = Path(__file__).resolve().parents[3] / "benchmarks" / "bench_samplers.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_samplers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is created
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_bench_samplers_runs_and_reports_every_row(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "results" / "samplers.json"
    # One thread: on a shared machine, a second thread that gets descheduled stalls every tiny kernel.
    argv = ["--hidden", "16", "--batch", "8", "--repeats", "2", "--warmup", "0", "--threads", "1", "--json", str(out)]
    report = bench.main(argv)

    rows = report["rows"]
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

    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(rows))
    printed = capsys.readouterr().out
    assert "| row | median ms | ratio to G | IQR of ratio |" in printed


RUN_ALL = BENCH.parent / "run_all.py"


def load_run_all():
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_run_all_runs_every_section_on_tiny_sizes(tmp_path, capsys):
    """The one benchmark command end to end at tiny sizes: every table printed, the JSON written. No timing asserted."""
    run_all = load_run_all()
    out = tmp_path / "all.json"
    argv = [
        "--quick", "--full-inner", "--hidden", "8", "--batch", "4", "--threads", "1", "--warmup", "0",
        "--entropy-repeats", "1", "--sampler-repeats", "1", "--estimator-repeats", "1", "--estimator-dim", "3",
        "--estimator-steps", "2", "--max-other-cores", "-1", "--json", str(out),
    ]  # fmt: skip
    report = run_all.run(argv)

    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    for section in ("samplers", "entropy", "estimator", "peers", "targets"):
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
    }
    printed = capsys.readouterr().out
    for title in ("## (a)", "## (b)", "## (c)", "## (d)", "## targets"):
        assert title in printed
