"""The run report: tables, best-estimator line, failed records, merged runs, PNG figures and load_run's errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import arviz_base
import numpy as np
import pytest
import xarray as xr

from localentropy.experiments.comparison.report import _ran_with, load_run, record_ids, write_report
from localentropy.experiments.comparison.results import Results
from localentropy.experiments.core.plots import rank_counts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (estimator, kind, point, budget) -> MSE; a smaller MSE is a better estimator.
MSE = {
    ("sgld", 0, 100): 0.5,
    ("sgld", 0, 1000): 0.05,
    ("sghmc", 0, 100): 0.3,
    ("sghmc", 0, 1000): 0.02,
    ("smooth", 0, 100): 0.2,
    ("smooth", 0, 1000): 0.1,
    ("sgld", 1, 100): 0.7,
    ("sgld", 1, 1000): 0.07,
}


def key(estimator: str, point: int, budget: int, gamma: float = 1.0, temperature: float = 0.1) -> dict:
    return {"estimator": estimator, "point": point, "gamma": gamma, "temperature": temperature, "budget": budget}


def ok_record(estimator: str, point: int, budget: int, mse: float, **key_kw) -> dict:
    smoothing = estimator == "smooth"
    bias = np.sqrt(mse / 4)
    return {
        "key": key(estimator, point, budget, **key_kw),
        "estimator": {
            "kind": "smoothing" if smoothing else "local-entropy",
            "sampler": None if smoothing else estimator,
        },
        "status": "ok",
        "error": None,
        "metrics": {
            "bias_norm": bias,
            "bias_norm_raw": bias * 1.01,
            "bias_norm_mcse": bias * 1.5 if smoothing else bias / 3,  # smoothing: bias within 1 MCSE of 0
            "variance": mse - bias**2,
            "mse": mse,
            "mse_mcse": mse / 10,
            "relative_mse": mse / 4,
            "cosine": 0.987654,
            "truth_norm": 2.0,
            "efficiency_ratio": None if smoothing else mse * 1000 / budget,
            "grad_evals": 2 * budget,
            "replicates": 20,
        },
        "chains": None
        if smoothing
        else {"n_chains": 4, "n_draws": 100, "min_ess_bulk": 123.456, "min_ess_tail": 99.0, "max_rhat": 1.0123},
        "ksd": None if smoothing else 0.0456789,
        "timing": {"seconds_per_replicate": 0.0123456, "seconds_total": 0.25},
    }


def bad_record(estimator: str, point: int, budget: int, status: str, error: str) -> dict:
    return {
        "key": key(estimator, point, budget),
        "estimator": {"kind": "local-entropy", "sampler": estimator, "settings": {}},
        "status": status,
        "error": error,
        "metrics": None,
        "chains": None,
        "ksd": None,
        "timing": {"seconds_per_replicate": float("nan"), "seconds_total": 0.1},
    }


def write_run(path: Path, name: str, records: list[dict], draws: dict[str, np.ndarray] | None = None) -> Path:
    path.mkdir(parents=True)
    meta = {
        "seed": 7,
        "versions": {"localentropy": "0.1.0", "torch": "2.13.0"},
        "device": "cpu",
        "git_commit": "abc123",
    }
    results = {"schema": 1, "name": name, "config": {"name": name}, "meta": meta, "records": records}
    (path / "results.json").write_text(json.dumps(results))
    if draws:
        nodes = {
            rid: arviz_base.from_dict({"posterior": {"x": x}}, dims={"x": ["x_dim_0"]}) for rid, x in draws.items()
        }
        xr.DataTree.from_dict(nodes).to_netcdf(path / "draws.nc", engine="h5netcdf")
    return path


def chain_draws(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 100, 3))
    x[:, :, 2] = np.cumsum(x[:, :, 2], axis=1)  # a random walk: coordinate 2 has the lowest ESS
    return x


@pytest.fixture
def base_run(tmp_path: Path) -> Path:
    records = [ok_record(e, p, b, mse) for (e, p, b), mse in MSE.items()]
    records.append(bad_record("msgld", 0, 1000, "diverged", "the estimate is not finite at replicate 3"))
    records.append(bad_record("sgld", 2, 100, "failed", "ValueError: step size | too large"))
    draws = {
        record_ids(key("sghmc", 0, 1000))[0]: chain_draws(0),  # gamma 1.0, as Python prints it
        record_ids(key("sgld", 0, 1000))[-1]: chain_draws(1),  # gamma 1, in :g form
    }
    return write_run(tmp_path / "base", "base", records, draws)


def table_rows(text: str, heading: str) -> list[list[str]]:
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row.strip("|").split(" | ")] for row in rows]


def images(report: Path) -> list[Path]:
    return [report.parent / name for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())]


def check_pngs(report: Path) -> list[Path]:
    pngs = images(report)
    assert pngs
    for png in pngs:
        data = png.read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), png
    assert sorted(report.parent.glob("*.png")) == sorted(pngs)
    assert not list(report.parent.glob(".*")), "temporary files left behind"
    return pngs


def test_single_run_report(base_run: Path, tmp_path: Path) -> None:
    report = write_report([base_run], tmp_path / "out")
    assert report == tmp_path / "out" / "report.md"
    text = report.read_text()
    assert text.startswith("# Local-entropy gradient report: `base`")
    assert "seed: 7; device: cpu; git commit: abc123" in text and "torch 2.13.0" in text
    assert "## How to read this" in text

    rows = table_rows(text, "point 0, gamma = 1, T = 0.1")
    # Sorted by MSE at the largest budget: sghmc 0.02 < sgld 0.05 < smooth 0.1, budgets ascending within each.
    assert [(r[0], r[1]) for r in rows] == [
        ("`sghmc`", "100"),
        ("`sghmc`", "1000"),
        ("`sgld`", "100"),
        ("`sgld`", "1000"),
        ("`smooth` (smoothing)", "100"),  # a label that is not what the estimator runs: shown beside it
        ("`smooth` (smoothing)", "1000"),
    ]
    expected = "`sghmc` 1000 2000 0.02±0.002 0.005 0.0707±0.0236 0.015 0.988 0.02 123 1.01 0.0457 0.0123"
    assert " ".join(rows[1]).replace(" ± ", "±") == expected
    assert rows[4][8:12] == ["—"] * 4  # smoothing: no efficiency ratio, chains or KSD
    # records without per-replicate squared errors (an older run): no verdict, said so
    assert (
        "- budget 1000: no per-replicate errors in this run (written before they were kept), so no verdict; "
        "lowest MSE `sghmc`" in text
    )

    # Records that did not finish: listed with their error, never in a table.
    assert "- `msgld`, budget 1000: **diverged**: the estimate is not finite at replicate 3" in text
    assert "- `sgld`, budget 100: **failed**: ValueError: step size \\| too large" in text
    assert "No record finished for this combination." in text
    assert not any(r[0] == "`msgld`" for r in rows)
    assert "nan" not in text.lower()

    pngs = {p.name for p in check_pngs(report)}
    assert {"errors_p0_g1.0_T0.1.png", "errors_p1_g1.0_T0.1.png", "efficiency.png"} <= pngs
    assert {"chains_base_sghmc__p0__g1.0__T0.1__b1000.png", "chains_base_sgld__p0__g1__T0.1__b1000.png"} <= pngs


def test_merge_two_runs(base_run: Path, tmp_path: Path) -> None:
    records = [ok_record("sgld", 0, 1000, 0.01), ok_record("baoab", 0, 1000, 0.03)]
    other = write_run(tmp_path / "other", "other", records)
    report = write_report([base_run, other / "results.json"], tmp_path / "merged")
    text = report.read_text()
    assert text.startswith("# Local-entropy gradient report: `base` + `other`")
    assert "### Run `base`" in text and "### Run `other`" in text
    labels = [r[0] for r in table_rows(text, "point 0, gamma = 1, T = 0.1")]
    # sgld is in both runs, so it is prefixed by the run's name; baoab and sghmc are not.
    assert labels.index("`other/sgld`") < labels.index("`sghmc`") < labels.index("`baoab`")
    assert "`base/sgld`" in labels and "`sgld`" not in labels
    assert "lowest MSE `other/sgld`" in text
    assert "Run `other` has no draws.nc" in text
    check_pngs(report)


def test_figures_capped_and_missing_data(tmp_path: Path) -> None:
    records = [ok_record("smooth", p, 100, 0.1) for p in range(7)] + [ok_record("sgld", 9, 100, 0.1)]
    run = write_run(tmp_path / "many", "many", records)
    (run / "draws.nc").write_bytes(b"not netCDF")
    report = write_report([run], run)
    text = report.read_text()
    assert f"Could not read `{run / 'draws.nc'}`" in text
    assert "Figures cover the first 6 of 8 (point, gamma, T) combinations" in text
    assert "## Efficiency ratios" not in text  # empty: the one sgld record is in the 8th combination
    assert len(check_pngs(report)) == 6


def test_rank_counts_partition_the_pooled_draws() -> None:
    values = np.random.default_rng(0).normal(size=(4, 50))
    counts, edges = rank_counts(values, bins=10)
    assert counts.shape == (4, 10) and (counts.sum(axis=1) == 50).all()
    assert edges[0] < 1 and edges[-1] > 200


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"schema": 99, "records": []}', "has schema 99"),
        ('{"schema": 1}', "no 'records' list"),
        ('{"schema": 1, "records": [{"key": {}}]}', r"records\[0\]\.key\.estimator: missing \(required\)"),
        ('{"schema": 1, "records": [{"key": {"estimator": "a", "point": 0, "gamma": true}}]}', r"key\.gamma: got True"),
    ],
)
def test_load_run_errors_name_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_run(tmp_path)
    assert str(tmp_path / "results.json") in str(info.value)
    with pytest.raises(ValueError, match=r"results\.json"):
        write_report([tmp_path], tmp_path / "out")


def test_paired_differences_clipped_bias_and_tuned_values_are_reported(tmp_path: Path) -> None:
    """A verdict's paired differences get a forest plot; a bias corrected to 0 (not drawable on the bias² log axis)
    is named in the text; the estimators as they ran carry their tuned values, marked."""
    rng = np.random.default_rng(3)
    records = []
    for name, scale in (("sgld", 1.0), ("sghmc", 2.0)):
        record = ok_record(name, 0, 100, 0.05 * scale)
        record["metrics"]["squared_errors"] = list(scale * rng.uniform(0.04, 0.06, size=20))
        records.append(record)
    records[1]["metrics"]["bias_norm"] = 0.0  # corrected for replicate noise and clipped at 0
    run = write_run(tmp_path / "r", "r", records)
    results = json.loads((run / "results.json").read_text())
    results["config"]["estimators"] = [
        {"label": "sgld", "kind": "local-entropy", "sampler": "sgld", "hyperparameters": {}, "budgets": [100]},
        {
            "label": "sghmc",
            "kind": "local-entropy",
            "sampler": "sghmc",
            "hyperparameters": {"friction": 0.2},
            "budgets": [100],
        },
    ]
    (run / "results.json").write_text(json.dumps(results))
    text = write_report([run], tmp_path / "out").read_text()
    assert "## Paired differences" in text and (tmp_path / "out" / "forest.png").stat().st_size > 1000
    assert "Not drawn in the figure below" in text and "bias²: `sghmc` at budget 100" in text
    assert "`sghmc` (local-entropy, sampler `sghmc`): friction = 0.2; budgets 100" in text
    results["tuning"] = {"estimators": {"sgld": {"chosen": {"step_size": 0.0023}}, "sghmc": {"chosen": None}}}
    ran = _ran_with(Results.model_validate(results))
    assert ran[0] == "- `sgld` (local-entropy, sampler `sgld`): step_size = 0.0023 (**tuned**); budgets 100"
