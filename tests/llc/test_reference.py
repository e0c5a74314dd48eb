"""The finite-nbeta references of the deep linear networks: looked up by network and measure, used as the truth
at w* only, and (slow) reproduced by an independent MALA run within the Monte Carlo error of both."""

from __future__ import annotations

import math

import pytest
import torch

from localentropy.llc import reference as ref
from localentropy.llc.dln import scalar_network_exact
from localentropy.llc.problems import TRUTHS, DeepLinearProblem, llc_truth, truth_kind


def _entry(**changes) -> ref.Reference:
    fields = {
        "widths": [2, 1, 2],
        "rank": 1,
        "seed": 0,
        "nbeta": 100.0,
        "localization": 20.0,
        "llc": 1.23,
        "mcse": 0.01,
        "rhat": 1.0,
        "ess_bulk": 1000.0,
        "sampler": "mala",
        "step_size": 1e-3,
        "chains": 2,
        "steps": 100,
        "burn_in": 25,
        "command": "test",
        "seconds": 1.0,
        "torch": torch.__version__,
        "date": "2026-12-07",
    }
    return ref.Reference(**(fields | changes))


def test_a_reference_is_found_by_network_and_measure_and_replaced_by_a_new_one(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ref, "REFERENCES_FILE", tmp_path / "references.json")
    assert ref.find_reference([2, 1, 2], 1, 0, 100.0, 20.0) is None
    ref.write_reference(_entry())
    ref.write_reference(_entry(nbeta=1000.0, llc=1.4))
    assert ref.find_reference([2, 1, 2], 1, 0, 100.0, 20.0).llc == 1.23
    for other in (([2, 1, 2], 1, 1, 100.0, 20.0), ([2, 1, 2], 0, 0, 100.0, 20.0), ([2, 1, 2], 1, 0, 100.0, 2.0)):
        assert ref.find_reference(*other) is None
    ref.write_reference(_entry(llc=1.25))
    assert [r.llc for r in ref.load_references()] == [1.4, 1.25]


def test_the_truth_is_the_reference_at_w_star_and_the_limit_elsewhere(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(ref, "REFERENCES_FILE", tmp_path / "references.json")
    problem = DeepLinearProblem([2, 1, 2], 1)
    gamma, temperature = 0.2, 0.01  # nbeta 100, localization 20
    assert llc_truth(problem, problem.w_star, gamma, temperature) == 1.5  # Aoyagi's limit: no reference yet
    assert truth_kind(problem, problem.w_star, gamma, temperature) == "limit"
    ref.write_reference(_entry())
    assert llc_truth(problem, problem.w_star, gamma, temperature) == 1.23
    assert truth_kind(problem, problem.w_star, gamma, temperature) == "reference" and "MALA" in TRUTHS["reference"]
    moved = problem.w_star + 0.1
    assert llc_truth(problem, moved, gamma, temperature) == 1.5
    assert truth_kind(problem, moved, gamma, temperature) == "limit"


def test_a_scalar_network_is_scored_against_its_exact_value_at_w_star() -> None:
    problem = DeepLinearProblem([1, 1, 1, 1], 0)
    gamma, temperature = 0.01, 0.001  # nbeta 1000, localization 10
    assert torch.equal(problem.w_star, torch.zeros(3, dtype=torch.float64))
    assert truth_kind(problem, problem.w_star, gamma, temperature) == "exact"
    assert llc_truth(problem, problem.w_star, gamma, temperature) == scalar_network_exact(3, 1000.0, 10.0).llc
    moved = problem.w_star + 0.1
    assert truth_kind(problem, moved, gamma, temperature) == "limit"
    assert llc_truth(problem, moved, gamma, temperature) == 0.5


@pytest.mark.slow  # about 2 minutes (100000 MALA steps of 8 chains; the reference took 456 s for 400000, loaded)
def test_every_shipped_reference_is_reproduced_by_an_independent_mala_run() -> None:
    """Other chains (another generator seed) and a quarter of the steps: the two agree within 4 combined MCSE."""
    references = ref.load_references()
    assert references, "no reference is shipped"
    for shipped in references:
        again = ref.compute_reference(
            shipped.widths,
            shipped.rank,
            shipped.seed,
            shipped.nbeta,
            shipped.localization,
            chains=shipped.chains,
            steps=shipped.steps // 4,
            generator_seed=shipped.seed + 1,
        )
        assert abs(again.llc - shipped.llc) < 4 * math.hypot(again.mcse, shipped.mcse), (again, shipped)
        assert shipped.rhat < 1.01 and shipped.mcse < 0.02 * shipped.llc
