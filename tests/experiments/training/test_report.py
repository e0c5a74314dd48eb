"""The training report from results alone (no training): its answer first with the test set's Wilson interval,
what ran with readable values, only the measured flatness columns and density, the resolved config last, and a
diverged optimizer named but never ranked."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from localentropy.cli import main
from localentropy.experiments.training.report import report_markdown, write_train_outputs
from localentropy.experiments.training.summary import wilson_interval

FLATNESS_CONFIG = {
    "measures": [],
    "examples": 1000,
    "batch_size": 1000,
    "power_iterations": 100,
    "power_tol": 0.001,
    "hutchinson_samples": 30,
    "lanczos_steps": 30,
    "lanczos_runs": 2,
    "broadening": 0.01,
    "sharpness_epsilon": 0.001,
    "sharpness_iterations": 10,
    "local_entropy": {"gamma": 1.0, "temperature": 1e-08, "step_size": 0.01, "steps": 20, "chains": 2, "burn_in": 5},
}


def spec(label: str, kind: str, lr: float, **extra: Any) -> dict[str, Any]:
    return {
        "label": label,
        "kind": kind,
        "lr": lr,
        "options": {},
        "sampler": None,
        "sampler_options": {},
        "preset": None,
        "schedule": None,
        **extra,
    }


def record(label: str, kind: str, test_error: float | None, status: str = "ok", **extra: Any) -> dict[str, Any]:
    ok = status == "ok"
    final = {
        "test_error": test_error,
        "test_loss": 0.2,
        "val_error": 0.05,
        "val_loss": 0.2,
        "train_error": 0.01,
        "train_loss": 0.05,
        "effective_epochs": 2.0,
        "seconds": 1.25,
        "grad_evals": 120,
        "steps": 120,
    }
    rows = [
        {"epoch": 0, "test_error": 0.9, "effective_epochs": 0.0, "seconds": 0.0},
        {"epoch": 1, "test_error": 0.3, "effective_epochs": 1.0, "seconds": 0.6},
    ]
    if ok:
        rows.append({"epoch": 2, "test_error": test_error, "effective_epochs": 2.0, "seconds": 1.25})
    return {
        "label": label,
        "kind": kind,
        "status": status,
        "message": None if ok else f"{label}: diverged at optimizer step 61 (epoch 2 of 2)",
        "steps": 120,
        "rows": rows,
        "final": final if ok else None,
        "flatness": {"examples": 1000, "seconds": {}} if ok else None,
        **extra,
    }


def results(specs: list[dict[str, Any]], records: list[dict[str, Any]], test: int = 1000, **top: Any) -> dict:
    config = {
        "name": "t",
        "seed": 0,
        "data": {"source": "digits", "path": None, "options": {}},
        "model": {"name": "mlp", "options": {}},
        "optimizers": specs,
        "batch_size": 64,
        "epochs": 2,
        "effective_epochs": None,
        "schedule": {"kind": "cosine", "step_size": 1, "gamma": 0.1, "milestones": [], "min_lr": 0.0},
        "flatness": copy.deepcopy(FLATNESS_CONFIG),
        "clip_grad_norm": None,
        "bptt": 32,
    }
    return {
        "schema": 2,
        "name": "t",
        "config": config,
        "meta": {"versions": {"torch": "2.x"}, "torch_threads": 1, "git_commit": "abc123", "device": "cpu"},
        "device": "cpu",
        "precision": "32-true",
        "world_size": 1,
        "data": {"source": "digits", "sizes": {"train": 1200, "validation": 100, "test": test}},
        "model": {"name": "mlp", "parameters": 4810},
        "records": records,
        **top,
    }


def two_optimizers() -> dict:
    return results(
        [spec("adam", "adam", 0.011546654996398164, options={"betas": [0.5, 0.999]}), spec("sgd", "sgd", 0.1)],
        [record("adam", "adam", 0.037), record("sgd", "sgd", 0.05)],
    )


def section(report: str, heading: str) -> str:
    return report.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].strip()


def test_wilson_interval_is_the_hand_computed_one() -> None:
    # 37 errors in 1000: p = 0.037, z = 1.959964, centre (p + z^2 / 2n) / (1 + z^2 / n) = 0.038772,
    # half-width z sqrt(p (1 - p) / n + z^2 / 4n^2) / (1 + z^2 / n) = 0.011811
    low, high = wilson_interval(37, 1000)
    assert low == pytest.approx(0.026961, abs=2e-6) and high == pytest.approx(0.050583, abs=2e-6)
    scipy_stats = pytest.importorskip("scipy.stats")
    ci = scipy_stats.binomtest(37, 1000).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert wilson_interval(0, 359)[0] == 0.0 and wilson_interval(359, 359)[1] == 1.0


def test_the_answer_comes_first_with_the_test_sets_interval() -> None:
    report = report_markdown(two_optimizers())
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    assert headings == ["## Answer", "## What ran", "## Final results", "## Learning curves", "## Resolved config"]
    answer = section(report, "Answer")
    assert answer.startswith(
        "Lowest final test error: `adam`, 3.70 % (95 % interval 2.70 to 5.06 %, Wilson score over the 1000 test "
        "examples)."
    )
    # sgd's interval (3.81 to 6.52 %) overlaps adam's: the difference is not resolved, and no seed variation is claimed
    assert "The intervals of `sgd` (5.00 %) overlap its: this test set does not resolve those differences." in answer
    assert "from one seed" in answer and "the variation over seeds is not measured here" in answer
    assert "`localentropy sweep`" in answer
    table = section(report, "Final results")
    assert "| adam | ok | 3.70 % (2.70 to 5.06) | 2.00 | 1.2 | 120 |" in table


def test_intervals_apart_are_said_to_lie_above_and_ties_are_named_together() -> None:
    apart = two_optimizers()
    apart["records"][1] = record("sgd", "sgd", 0.2)
    answer = section(report_markdown(apart), "Answer")
    assert "The intervals of `sgd` (20.00 %) lie wholly above its." in answer and "overlap" not in answer
    tied = two_optimizers()
    tied["records"][1] = record("sgd", "sgd", 0.037)
    answer = section(report_markdown(tied), "Answer")
    assert answer.startswith("Lowest final test error, tied: `adam` and `sgd`, 3.70 % each (95 % interval")
    single = results([spec("adam", "adam", 0.01)], [record("adam", "adam", 0.037)])
    assert section(report_markdown(single), "Answer").startswith("`adam` reached a final test error of 3.70 % (95 %")


def test_a_diverged_optimizer_is_named_and_never_ranked() -> None:
    data = results(
        [spec("sgd", "sgd", 1e30), spec("adam", "adam", 0.01), spec("sam", "sam", 0.1)],
        [record("sgd", "sgd", None, status="diverged"), record("adam", "adam", 0.04), record("sam", "sam", 0.03)],
    )
    report = report_markdown(data)
    answer = section(report, "Answer")
    assert answer.startswith("Lowest final test error: `sam`, 3.00 %")
    assert answer.endswith("`sgd` diverged: not ranked.") and answer.count("`sgd`") == 1
    assert "- sgd: diverged at optimizer step 61 (epoch 2 of 2)" in section(report, "Diverged")
    assert "| sgd | diverged | — |" in report and "dotted: an optimizer that diverged" in report
    assert "dotted" not in report_markdown(two_optimizers())
    for rec in data["records"][1:]:
        rec.update(status="diverged", final=None, message=f"{rec['label']}: diverged")
    answer = section(report_markdown(data), "Answer")
    assert answer == "No optimizer finished: `sgd`, `adam`, `sam` diverged, so there is nothing to compare."


def test_what_ran_names_each_optimizer_its_values_and_the_sampler_that_ran() -> None:
    data = results(
        [
            spec("adam", "adam", 0.011546654996398164, options={"betas": [0.5, 0.999]}),
            spec(
                "entropy-sgd",
                "entropy-sgd",
                6.255034425303708,
                options={"gamma": 0.40281497435624064, "nesterov": True},
                sampler="sgld",
                sampler_options={"step_size": 0.019835148127861107, "temperature": 1e-08},
            ),
            spec(
                "entropy-sgd (paper preset)",
                "entropy-sgd",
                1.5300295373361277,
                options={"gamma": 0.820478110320146},
                preset="paper",
                sampler_options={"step_size": 0.09094, "noise_scale": 1e-4},
            ),
            spec(
                "parle", "parle", 0.1, options={"gamma": 0.1}, schedule={"kind": "step", "step_size": 2, "gamma": 0.5}
            ),
        ],
        [record(label, kind, 0.05) for label, kind in [("adam", "adam"), ("entropy-sgd", "entropy-sgd")]]
        + [record("entropy-sgd (paper preset)", "entropy-sgd", 0.05), record("parle", "parle", 0.06)],
    )
    ran = section(report_markdown(data), "What ran")
    assert "Data `digits` (1200 train / 100 validation / 1000 test examples, split seed 0); model `mlp` (4810 " in ran
    assert "budget 2 epochs per optimizer; cosine decay of lr to 0." in ran
    assert "- `adam` (adam): lr = 0.01155, betas = [0.5, 0.999]\n" in ran
    assert (
        "- `entropy-sgd` (entropy-sgd): lr = 6.255, gamma = 0.4028, nesterov = true; inner sampler `sgld` "
        "(step_size = 0.01984, temperature = 1e-08)\n"
    ) in ran
    assert (
        "- `entropy-sgd (paper preset)` (entropy-sgd): lr = 1.53, gamma = 0.8205; preset `paper`; inner sampler "
        "`sgld` (the preset's; noise_scale = 0.0001, step_size = 0.09094)\n"
    ) in ran
    assert (
        "- `parle` (parle): lr = 0.1, gamma = 0.1; inner sampler `sgld` (the default; step_size = 0.1, "
        "temperature = 1e-08); its own schedule: lr multiplied by 0.5 every 2 epoch(s)\n"
    ) in ran
    assert ran.rstrip().endswith("Device cpu, precision 32-true.")
    assert "0.011546654996398164" not in ran


def test_unmeasured_flatness_has_no_columns_no_sentence_and_no_density(tmp_path: Path) -> None:
    data = two_optimizers()
    write_train_outputs(tmp_path, data)
    report = (tmp_path / "report.md").read_text()
    assert not (tmp_path / "density.png").exists() and (tmp_path / "curves.png").is_file()
    head = next(line for line in report.splitlines() if line.startswith("| optimizer"))
    assert head == "| optimizer | status | test error (95 % interval) | effective epochs | seconds | grad evals |"
    for absent in ("eigenvalue", "trace", "sharpness", "Flatness", "Lanczos", "density", "LLC", "## Diverged"):
        assert absent not in report.split("## Resolved config")[0], absent
    # only the measure that ran has a column: an LLC alone
    llc = {"value": 1.7833668559260847, "mcse": 0.10660261330738911, "nbeta": 180.6}
    for rec in data["records"]:
        rec["flatness"]["llc"] = llc
    report = report_markdown(data)
    head = next(line for line in report.splitlines() if line.startswith("| optimizer"))
    assert head.endswith("| grad evals | LLC ± MCSE |") and "| 1.78 ± 0.11 |" in report
    assert "local learning coefficient ± MCSE" in report and "eigenvalue" not in report.split("## Resolved")[0]


def test_measured_flatness_keeps_its_columns_its_failures_and_the_density(tmp_path: Path) -> None:
    data = two_optimizers()
    grid = [i / 10 for i in range(-5, 40)]
    density = {
        "nodes": [[0.1, 1.0, 3.0], [0.2, 2.0, 3.5]],
        "weights": [[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]],
        "grid": grid,
        "density": [math.exp(-((x - 1) ** 2)) for x in grid],
        "sigma": 0.03,
    }
    data["records"][0]["flatness"].update(
        top_eigenvalue={"value": 3.2, "iterations": 100, "converged": False, "hvps": 100},
        trace={"value": 2.83, "mcse": 0.196, "samples": 30},
        density=density,
    )
    data["records"][1]["flatness"].update(
        top_eigenvalue={"value": 0.47, "iterations": 20, "converged": True, "hvps": 20},
        trace={"error": "RuntimeError: out of memory."},
    )
    data["config"]["flatness"]["measures"] = ["top_eigenvalue", "trace", "density"]
    write_train_outputs(tmp_path, data)
    report = (tmp_path / "report.md").read_text()
    assert (tmp_path / "density.png").stat().st_size > 1000
    head = next(line for line in report.splitlines() if line.startswith("| optimizer"))
    assert head.endswith("| grad evals | top eigenvalue | trace ± MCSE |") and "sharpness" not in head
    assert "| adam | ok | 3.70 % (2.70 to 5.06) | 2.00 | 1.2 | 120 | 3.2 | 2.83 ± 0.2 |" in report
    results_text = section(report, "Final results")
    assert "trace (Hutchinson, 30 Rademacher vectors, ± one MCSE)" in results_text
    assert "`sgd`'s trace failed: RuntimeError: out of memory." in results_text
    assert "`adam`'s power iteration stopped after 100 iterations without a relative change below 0.001." in report
    densities = section(report, "Hessian eigenvalue density (stochastic Lanczos quadrature)")
    assert "2 run(s) of 3 Lanczos steps" in densities and "No density for `sgd`." in densities
    assert "![SLQ density](density.png)" in densities and "`density.png`" in report


def test_the_resolved_config_comes_last(tmp_path: Path) -> None:
    data = two_optimizers()
    report = report_markdown(data)
    assert [line for line in report.splitlines() if line.startswith("## ")][-1] == "## Resolved config"
    block = section(report, "Resolved config").split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(block) == data["config"]
    assert report.endswith("```\n\ntorch 2.x, 1 thread(s), commit abc123.\n")


def test_points_at_zero_are_named_under_the_curves() -> None:
    data = two_optimizers()
    data["records"][0]["rows"][-1]["test_error"] = 0.0
    data["records"][0]["final"]["test_error"] = 0.0
    curves = section(report_markdown(data), "Learning curves")
    assert "Not shown (0 % has no place on a log scale): `adam` at epoch(s) 2." in curves


def test_a_text_run_gives_no_binomial_interval() -> None:
    data = results([spec("adam", "adam", 0.01)], [record("adam", "adam", 0.5861018881510521)])
    data["data"].update(vocabulary_size=12, unit="char")
    report = report_markdown(data)
    assert "no binomial interval: the tokens of one stream are not independent" in section(report, "Answer")
    assert "Wilson" not in report and "| adam | ok | 58.61 % |" in report
    assert "test characters, split seed 0" in report


def test_report_rebuilds_an_old_schema_1_training_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = two_optimizers()
    data["schema"] = 1
    for key in ("device", "precision", "world_size"):
        del data[key]
    del data["meta"]["device"]
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Training comparison: t\n\n## Answer\n\nLowest final test error: `adam`")
    assert "Device cpu, precision 32-true." in report and not (tmp_path / "density.png").exists()
    capsys.readouterr()


def test_a_data_parallel_run_has_its_communication_table() -> None:
    data = two_optimizers()
    data["world_size"] = 2
    for rec in data["records"]:
        rec.update(bytes_communicated=1_234_567, collective_calls=240)
    communication = section(report_markdown(data), "Communication")
    assert communication.startswith("Data-parallel on 2 processes (torch.distributed, gloo)")
    assert "| adam | 1,234,567 | 240 | 10,288 | 1.25 |" in communication
    assert "## Communication" not in report_markdown(two_optimizers())
