"""The LLC section of the findings: from a real (tiny) llc_samplers run, every number it prints is in its record,
and its claims are the per-problem verdicts with the per-replicate errors a replication pools."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.comparison.runner import run_comparison
from localentropy.experiments.reproduce.findings.llc import STEP, llc_claims, llc_training_claims, section_llc
from localentropy.experiments.reproduce.findings.render import unsupported_numbers
from tests.experiments.comparison.test_llc import llc_with


@pytest.fixture(scope="module")
def llc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    data = llc_with(name=STEP, tuning={"trials": 2, "replicates": 2, "max_extensions": 0})
    data["estimators"].append(
        {"label": "unstable", "sampler": "sgld", "hyperparameters": {"step_size": 50.0}, "budgets": 1600}
    )
    data["tuning"]["estimators"] = ["sgld", "mala"]
    run_comparison(parse_config(data), out / STEP)
    return out


def test_every_number_of_the_llc_section_is_in_its_record(llc_run: Path, tmp_path: Path) -> None:
    numbers: dict = {}
    lines, summary = section_llc(llc_run, tmp_path, numbers)
    text = "\n".join([*lines, summary])
    assert "## LLC. Which sampler estimates the local learning coefficient best" in text
    assert "### crossing: truth" in text and "### dln: truth 1.5000" in text
    assert "Diverged (a replicate not finite or run away, ranked out): `unstable` on `crossing`" in text
    assert set(numbers["llc"]["problems"]) == {"crossing", "dln"}
    assert unsupported_numbers(text, numbers) == []
    assert unsupported_numbers(text + " and 7.77", numbers) == ["7.77"]


def test_llc_claims_are_the_verdicts_per_problem(llc_run: Path) -> None:
    claims = llc_claims(llc_run / STEP)
    assert [c["id"] for c in claims] == ["llc_samplers/crossing", "llc_samplers/dln"]
    for claim in claims:
        assert claim["kind"] == "verdict" and claim["n"] == 3 and claim["best"]
        assert set(claim["values"]) == {"sgld", "mala"}  # the diverged record has no per-replicate errors
        assert "unstable" not in claim["best"]  # its record diverged: excluded from the verdict


def _training_step(root: Path, llc: dict[str, list[float]], tuning: dict | None = None) -> Path:
    """A finished llc_training sweep directory: one run per seed, each with every optimizer's LLC and test error
    (and the sweep's tuning record, if given)."""
    step = root / "llc_training"
    runs = []
    for seed in range(len(next(iter(llc.values())))):
        run_dir = step / f"seed-{seed}"
        run_dir.mkdir(parents=True)
        records = [
            {
                "label": label,
                "status": "ok",
                "final": {"test_error": 0.02 + 0.001 * seed},
                "flatness": {"llc": {"value": v[seed]}},
            }
            for label, v in llc.items()
        ]
        (run_dir / "results.json").write_text(json.dumps({"records": records}))
        runs.append({"dir": run_dir.name, "status": "ok", "overrides": {"seed": seed}})
    (step / "results.json").write_text(json.dumps({"runs": runs} | ({"tuning": tuning} if tuning else {})))
    return step


def test_the_training_part_states_the_paired_llc_differences_from_its_record(llc_run: Path, tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / STEP).symlink_to(llc_run / STEP)
    llc = {"entropy-sgd": [6.0, 6.2, 5.9, 6.1], "sgd": [5.0, 5.3, 5.1, 5.2], "sam": [6.1, 6.0, 6.2, 5.9]}
    tuning = {
        "trials": 16,
        "tuning_seeds": [1_000_000, 1_000_001],
        "optimizers": {
            "entropy-sgd": {"chosen": {"lr": 6.25, "options.gamma": 0.403}},
            "sgd": {"chosen": {"lr": 0.183}},
            "sam": {"chosen": {"lr": 0.238, "options.rho": 0.485}, "at_edge": [{"name": "options.rho"}]},
        },
    }
    _training_step(root, llc, tuning)
    numbers: dict = {}
    lines, summary = section_llc(root, tmp_path, numbers)
    text = "\n".join([*lines, summary])
    assert "### Along training: the LLC of the minima each optimizer finds" in text
    assert "Every optimizer was first tuned alike (16 trials each on 2 tuning seeds apart from the reported" in text
    assert "never by the LLC); chosen: `entropy-sgd` lr 6.25, options.gamma 0.403; `sgd` lr 0.183" in text
    assert "(at the edge of a range: `sam` options.rho)" in text
    assert "Entropy-SGD's minima have an LLC higher than `sgd` and not told apart from `sam`'s" in text
    assert numbers["llc"]["training"]["paired"]["sgd"]["llc"]["mean"] == pytest.approx(0.9)
    assert unsupported_numbers(text, numbers) == []
    claims = llc_training_claims(root / "llc_training")
    assert [c["id"] for c in claims] == ["llc_training/llc: entropy-sgd - sgd", "llc_training/llc: entropy-sgd - sam"]
    assert claims[0]["mean"] == pytest.approx(0.9) and claims[0]["n"] == 4


def test_a_network_with_a_shipped_reference_is_scored_and_described_against_it(tmp_path: Path, monkeypatch) -> None:
    from localentropy.llc import reference as ref
    from tests.llc.test_reference import _entry

    monkeypatch.setattr(ref, "REFERENCES_FILE", tmp_path / "references.json")
    ref.write_reference(_entry(llc=1.2345, mcse=0.0067))  # widths (2, 1, 2), rank 1, seed 0, nbeta 100, loc. 20
    run_comparison(parse_config(llc_with(name=STEP)), tmp_path / "r" / STEP)
    numbers: dict = {}
    lines, summary = section_llc(tmp_path / "r", tmp_path, numbers)
    text = "\n".join([*lines, summary])
    assert "### dln: truth 1.2345 ± 0.0067 (MCSE) (the value at this nbeta and localization from long MALA" in text
    assert "on `dln` it is the value at the same nbeta and localization from long MALA chains" in text
    assert "Aoyagi" not in text and unsupported_numbers(text, numbers) == []
    rows = json.loads((tmp_path / "r" / STEP / "dln" / "results.json").read_text())["records"]
    assert {r["metrics"]["llc_truth"] for r in rows} == {1.2345}
