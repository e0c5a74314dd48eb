"""Verdicts with uncertainty: common random numbers, ``verdicts`` in results.json, ties called ties, labels that
cannot lie (exit 2), and what the report shows (MSE ± MCSE, no relative MSE at a near-zero truth, legends)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from localentropy._threads import torch_threads
from localentropy.cli import main
from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.comparison.results import Results
from localentropy.experiments.comparison.verdicts import comparison_verdicts
from localentropy.experiments.core.config import ConfigError

TWINS = """\
name = "twins"
seed = 5
replicates = 6
chains = 2
gamma = 1.0
temperature = 0.1

[problem]
kind = "quadratic"
dim = 3
condition = 4

[points]
kind = "random"
count = 2

[[estimators]]
label = "first copy"
sampler = "sgld"
step_size_fraction = 0.5
budgets = [16, 32]

[[estimators]]
label = "second copy"
sampler = "sgld"
step_size_fraction = 0.5
budgets = [16, 32]

[[estimators]]
sampler = "sghmc"
step_size_fraction = 0.5
hyperparameters = { friction = 0.5 }
budgets = [16, 32]

[[estimators]]
kind = "smoothing"
budgets = [16, 32]
"""


pytestmark = pytest.mark.usefixtures("single_thread")  # tests/conftest.py: small tensors, one thread


@pytest.fixture(scope="module")
def twins_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("twins")
    config = directory / "twins.toml"
    config.write_text(TWINS, encoding="utf-8")
    with torch_threads(1):
        assert main(["run", str(config), "--out", str(directory / "out")]) == 0
    return directory / "out"


def test_identical_estimators_under_two_labels_give_identical_numbers(twins_run: Path):
    results = json.loads((twins_run / "results.json").read_text())
    records = {(r["key"]["estimator"], r["key"]["point"], r["key"]["budget"]): r for r in results["records"]}
    for point in (0, 1):
        for budget in (16, 32):
            first, second = records[("first copy", point, budget)], records[("second copy", point, budget)]
            assert first["metrics"] == second["metrics"]  # every replicate, bit for bit
            assert len(first["metrics"]["squared_errors"]) == 6
            assert sum(first["metrics"]["squared_errors"]) / 6 == pytest.approx(first["metrics"]["mse"])


def test_verdicts_never_separate_identical_estimators(twins_run: Path):
    results = json.loads((twins_run / "results.json").read_text())
    verdicts = results["verdicts"]
    assert {(v["point"], v["budget"]) for v in verdicts} == {(p, b) for p in (0, 1) for b in (16, 32)}
    for v in verdicts:
        assert v["metric"].startswith("squared error per replicate") and v["level"] == 0.95 and v["n"] == 6
        assert "Holm" in v["method"] and v["unit"] == "replicate"
        assert ("first copy" in v["best"]) == ("second copy" in v["best"])
        assert v["best"][0] == v["lowest"]
    records = Results.model_validate(results).records
    assert verdicts == [v.model_dump() for v in comparison_verdicts(records)]  # computed once, as stored


def test_report_shows_ties_mcse_and_samplers_beside_labels(twins_run: Path):
    text = (twins_run / "report.md").read_text()
    assert "**Verdicts** (lowest MSE at each budget" in text
    assert "- budget 16: tied: " in text or "- budget 16: lowest: " in text
    assert "`first copy` (sgld)" in text and "`sghmc` |" in text  # the sampler beside a label that is not it
    assert "| MSE ± MCSE |" in text
    header = next(line for line in text.splitlines() if line.startswith("| estimator"))
    mse_column = header.strip("|").split(" | ").index("MSE ± MCSE")
    row = next(line for line in text.splitlines() if line.startswith("| `sghmc`"))
    assert " ± " in row.strip("|").split(" | ")[mse_column]


def test_report_legend_names_every_estimator(twins_run: Path):
    text = (twins_run / "report.md").read_text()
    assert "No efficiency ratio (no Gibbs measure to compare with): `smoothing order 1`." in text
    assert "One figure per local-entropy estimator, at its record with the highest R-hat" in text
    chains = [line for line in text.splitlines() if line.startswith("![trace and rank plots")]
    assert len(chains) == 3  # every local-entropy estimator: two copies and sghmc


BARRIER = """\
seed = 1
replicates = 5
chains = 2
temperature = 0.5

[problem]
kind = "double-well"
dim = 1

[points]
kind = "explicit"
values = [[0.0]]   # the top of the symmetric barrier: every gradient there is 0

[[estimators]]
sampler = "sghmc"
hyperparameters = { step_size = 0.01, friction = 0.5 }
budgets = [40]

[[estimators]]
sampler = "sgld"
hyperparameters = { step_size = 0.01 }
budgets = [40]
"""


def test_near_zero_truth_has_no_relative_mse(tmp_path: Path):
    config = tmp_path / "barrier.toml"
    config.write_text(BARRIER, encoding="utf-8")
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert all(r["metrics"]["truth_near_zero"] for r in results["records"])
    text = (tmp_path / "out" / "report.md").read_text()
    assert "The truth is near zero here" in text
    row = next(line for line in text.splitlines() if line.startswith("| `sghmc`"))
    assert row.strip("|").split(" | ")[4].strip() == "—"


def test_a_label_naming_another_sampler_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    config = tmp_path / "swapped.toml"
    config.write_text(TWINS.replace('label = "first copy"\nsampler = "sgld"', 'label = "sgld"\nsampler = "sghmc"'))
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "estimators[0].label: got 'sgld', which names 'sgld' but this entry runs sampler 'sghmc'" in err
    assert "Traceback" not in err


def test_default_labels_from_the_sampler_and_what_sets_them_apart():
    data = {
        "problem": {"kind": "quadratic", "dim": 2},
        "estimators": [
            {"sampler": "sgld", "step_size_fraction": 0.5, "budgets": [16]},
            {"sampler": "sgld", "step_size_fraction": 0.1, "budgets": [16]},
            {"kind": "smoothing", "order": 0, "budgets": [16]},
            {"preset": "paper", "noise_scale": 0.1, "hyperparameters": {"step_size": 0.1}, "budgets": [16]},
        ],
    }
    labels = [e.label for e in parse_config(data).estimators]
    assert labels == [
        "sgld (step_size_fraction=0.5)",
        "sgld (step_size_fraction=0.1)",
        "smoothing order 0",
        "preset paper",
    ]
    data["estimators"][2]["label"] = "sghmc-like"  # names no sampler as a word: honest
    parse_config(data)
    data["estimators"][2]["label"] = "mala check"
    with pytest.raises(ConfigError, match="names 'mala' but this entry runs a smoothing estimator"):
        parse_config(data)


def test_shipped_configs_swap_a_sampler_in_one_line():
    from localentropy.experiments.comparison.config import load_config
    from localentropy.experiments.core.shipped import shipped_dir

    root = shipped_dir()
    text = (root / "shootout.toml").read_text()
    assert 'label = "sgld"' not in text  # a label equal to its default is left out
    swapped = text.replace('sampler = "sgld"\n', 'sampler = "sghmc"\nhyperparameters = { friction = 0.2 }\n', 1)
    assert swapped != text
    labels = [e.label for e in parse_config(tomllib.loads(swapped)).estimators]
    assert labels[0] != "sgld" and labels[0].startswith("sghmc")  # the report cannot call it SGLD
    assert load_config(root / "shootout.toml").estimators[0].label == "sgld"
