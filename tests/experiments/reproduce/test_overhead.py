"""localentropy.experiments.overhead: the Entropy-SGD direction's accuracy along trajectories, cut-down inner loops."""

from __future__ import annotations

import json
import math

import pytest
import torch

from localentropy.entropy.problems import Quadratic
from localentropy.experiments.overhead import accuracy_table, trajectory_accuracy

TINY = {"dim": 5, "condition": 10, "outer_steps": 8, "skip": 2, "replicates": 2, "inner_steps": (1, 3)}
ROW_KEYS = {
    "sampler",
    "noise",
    "inner_steps",
    "warm_start",
    "grad_evals_per_step",
    "rel_error_mean",
    "rel_error_sd",
    "rel_error_replicates",
    "final_loss_mean",
    "final_loss_sd",
    "rel_error_by_step",
    "grad_norm_by_step",
}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread


@pytest.fixture(scope="module")
def tiny() -> dict:
    return trajectory_accuracy(**TINY)


def test_tiny_call_structure_and_json_round_trip(tiny):
    rows = tiny["rows"]
    assert len(rows) == 2 * 2 * 2 * 2  # samplers x noises x L x warm
    combos = {(r["sampler"], r["noise"], r["inner_steps"], r["warm_start"]) for r in rows}
    assert len(combos) == len(rows)
    for row in rows:
        assert set(row) == ROW_KEYS
        assert row["grad_evals_per_step"] == row["inner_steps"]
        assert len(row["rel_error_replicates"]) == 2
        assert len(row["rel_error_by_step"]) == len(row["grad_norm_by_step"]) == 8
        values = [row["rel_error_mean"], row["rel_error_sd"], row["final_loss_mean"], *row["rel_error_by_step"]]
        assert all(math.isfinite(v) for v in values)
        assert row["rel_error_mean"] > 0
    settings = tiny["settings"]
    assert settings["sampler_hyperparameters"]["sgld"]["step_size"] == pytest.approx(0.5 * settings["max_stable_step"])
    assert settings["sampler_hyperparameters"]["sghmc"]["friction"] == 0.2
    assert json.loads(json.dumps(tiny)) == tiny


def test_all_combinations_start_from_the_same_point(tiny):
    """Every row's first step is taken at the same x0, so the exact gradient norm there is the same."""
    first = {row["grad_norm_by_step"][0] for row in tiny["rows"]}
    assert len(first) == 1


def test_first_step_error_matches_closed_form_at_zero_temperature():
    """T = 0, L = 1, cold: mu = x - h grad f(x), so the direction is gamma h (A x - b), known exactly."""
    gamma = 1.0
    result = trajectory_accuracy(
        dim=5,
        condition=10,
        temperature=0.0,
        samplers=(("sgld", {"step_size_fraction": 0.5}),),
        inner_steps=(1,),
        warm=(False,),
        noises=("gaussian",),
        outer_steps=3,
        skip=0,
        replicates=1,
        gamma=gamma,
    )
    problem = Quadratic.random(5, 10, 0, 0)
    x0 = torch.tensor(result["settings"]["x0"], dtype=torch.float64)
    h = result["settings"]["sampler_hyperparameters"]["sgld"]["step_size"]
    truth = problem.local_entropy_grad(x0, gamma)
    direction = gamma * h * problem.grad(x0)
    want = float((direction - truth).norm() / truth.norm())
    assert result["rows"][0]["rel_error_by_step"][0] == pytest.approx(want, rel=1e-10)


def test_error_shrinks_with_inner_steps_at_zero_temperature():
    """At T = 0 a cold SGLD chain is gradient descent towards the proximal point, where gamma (x - prox) = g(x)
    exactly; the uniform average of its iterates approaches it as L grows, so the error falls towards 0."""
    result = trajectory_accuracy(
        dim=5,
        condition=10,
        temperature=0.0,
        samplers=(("sgld", {"step_size_fraction": 0.5}),),
        inner_steps=(1, 20, 400),
        warm=(False,),
        noises=("gaussian",),
        outer_steps=6,
        skip=1,
        replicates=1,
    )
    errors = [row["rel_error_mean"] for row in result["rows"]]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_error_shrinks_with_inner_steps_cold_sgld_with_noise():
    result = trajectory_accuracy(
        dim=10,
        condition=30,
        temperature=0.1,
        samplers=(("sgld", {"step_size_fraction": 0.5}),),
        inner_steps=(1, 20),
        warm=(False,),
        noises=("gaussian",),
        outer_steps=15,
        replicates=4,
    )
    short, long = result["rows"]
    # the gap is many replicate standard deviations (measured: 0.75 ± 0.011 against 0.33 ± 0.021)
    spread = max(short["rel_error_sd"], long["rel_error_sd"])
    assert short["rel_error_mean"] - long["rel_error_mean"] > 5 * spread


def test_table_row_count_and_cells(tiny):
    lines = accuracy_table(tiny)
    assert len(lines) == 2 + 2 * 2 * 2  # header, separator, samplers x noises x L
    assert lines[0].startswith("| sampler | noise | L | cold start")
    assert all(line.count("|") == 7 for line in lines)
    assert " ± " in lines[2]
    only_cold = trajectory_accuracy(
        **{**TINY, "warm": (False,), "replicates": 1, "samplers": (("sgld", {"step_size_fraction": 0.5}),)}
    )
    cold_lines = accuracy_table(only_cold)
    assert len(cold_lines) == 2 + 2 * 2
    assert all(line.split("|")[5].strip() == "-" for line in cold_lines[2:])  # no warm run, no sd of one replicate
    assert " ± " not in cold_lines[2]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="skip"):
        trajectory_accuracy(**{**TINY, "skip": 8})
    with pytest.raises(ValueError, match="step_size"):
        trajectory_accuracy(**{**TINY, "samplers": (("sgld", {"friction": 0.1}),)})
