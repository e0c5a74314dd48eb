"""Parle on two gloo processes (torch.multiprocessing spawn, one replica per process, each on its own shard).

Each test spawns the two ranks once (a few seconds for the imports); the workers are in replicas.py.
"""

from __future__ import annotations

import pytest
import torch

from tests.entropy.optim.replicas import (
    AUTHORS,
    PAPER,
    TIMEOUT_S,
    elastic_worker,
    killed_worker,
    resume_worker,
    run_replicas,
    trajectory_worker,
)

STEPS = 4
N_WEIGHTS = 4 * 6 + 6 + 6 * 3 + 3  # make_model()'s parameters
BYTES = 8 * N_WEIGHTS  # float64: the payload of one all-reduce of the weights


def exact(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_reference_is_the_mean_of_the_replicas_after_every_synchronisation(tmp_path):
    ranks = run_replicas(trajectory_worker, 2, tmp_path, options=PAPER, steps=STEPS)
    r0, r1 = ranks
    assert r0["replica_seed"] != r1["replica_seed"]
    for k in range(STEPS):
        exact(r0["ref"][k], r1["ref"][k])
        exact(r0["ref"][k], (r0["x"][k] + r1["x"][k]) / 2)
        assert not torch.equal(r0["x"][k], r1["x"][k])  # the replicas differ (their own data and noise)
        # one all-reduce of the weights per outer step, and one more at the first to set x_ref
        assert r0["comm"][k] == r1["comm"][k] == {"bytes_communicated": (k + 2) * BYTES, "collective_calls": k + 2}
    for (inputs0, means0), (inputs1, means1) in zip(r0["reductions"], r1["reductions"], strict=True):
        exact(means0, (inputs0 + inputs1) / 2)
        exact(means0, means1)


def test_elastic_step_pulls_each_replica_toward_the_reference(tmp_path):
    """x^a_{k+1} - x^a_k, minus the same step at rho = 0 (same state, same noise), is -lr rho_t (x^a_k - x_ref)."""
    for rank in run_replicas(elastic_worker, 2, tmp_path, options=PAPER, steps=2):
        expected = -PAPER["lr"] * rank["rho"] * (rank["before"] - rank["reference"])
        assert expected.abs().max() > 1e-4  # the replicas are apart: the term is not trivially zero
        torch.testing.assert_close(rank["with_rho"] - rank["without_rho"], expected, rtol=1e-9, atol=1e-12)


def test_the_authors_double_reduction_uses_the_mean_inner_average_then_the_mean_weights(tmp_path):
    ranks = run_replicas(trajectory_worker, 2, tmp_path, options=AUTHORS, steps=STEPS)
    lr, nb, n, L = AUTHORS["lr"], AUTHORS["batches_per_epoch"], 2, AUTHORS["inner_steps"]
    for r in ranks:
        assert len(r["reductions"]) == 2 * STEPS
        assert r["comm"][-1] == {"bytes_communicated": 2 * STEPS * BYTES, "collective_calls": 2 * STEPS}
    for k in range(STEPS):
        for rank, other in (ranks, ranks[::-1]):
            mu, ref_of_mu = rank["reductions"][2 * k]
            exact(ref_of_mu, (mu + other["reductions"][2 * k][0]) / 2)
            x = rank["x0"] if k == 0 else rank["x"][k - 1]
            rho = min(AUTHORS["rho"] * L * n * (1 + 0.5 / nb) ** k, 10.0)
            # the code's outer step: no gamma on (x - mu), no momentum
            torch.testing.assert_close(
                rank["x"][k], x - lr * ((x - mu) + rho * (x - ref_of_mu)), rtol=1e-12, atol=1e-12
            )
            weights, ref_of_weights = rank["reductions"][2 * k + 1]
            exact(weights, rank["x"][k])
            exact(ref_of_weights, (rank["x"][k] + other["x"][k]) / 2)
            exact(rank["ref"][k], ref_of_weights)


def test_each_replica_draws_its_own_noise(tmp_path):
    """Same data on both ranks: with the inner Langevin noise the replicas part; without it they stay equal."""
    noisy = run_replicas(trajectory_worker, 2, tmp_path, options=PAPER, steps=1, same_data=True)
    assert not torch.equal(noisy[0]["x"][0], noisy[1]["x"][0])
    quiet = run_replicas(
        trajectory_worker, 2, tmp_path, options={**PAPER, "inner_noise": False}, steps=1, same_data=True
    )
    exact(quiet[0]["x"][0], quiet[1]["x"][0])


@pytest.mark.parametrize("options", [PAPER, AUTHORS], ids=["paper", "authors"])
def test_resume_is_bit_identical_on_every_rank(tmp_path, options):
    for rank in run_replicas(resume_worker, 2, tmp_path, options=options, steps=4, save_at=2):
        (x, ref, comm), (x_resumed, ref_resumed, comm_resumed) = rank["uninterrupted"], rank["resumed"]
        assert torch.equal(x, x_resumed) and torch.equal(ref, ref_resumed)
        assert comm == comm_resumed


def test_a_killed_replica_ends_the_run_with_a_clear_error_within_the_timeout(tmp_path):
    survivor, lost = run_replicas(killed_worker, 2, tmp_path, options=PAPER, die_after=2, steps=6)
    assert lost is None  # rank 1 exited without a word
    assert survivor["error"] is not None, "rank 0 finished every step although its peer was gone"
    assert "all-reduce of outer step 2 failed on rank 0 of 2" in survivor["error"]
    assert survivor["step"] == 2
    assert survivor["seconds"] < TIMEOUT_S + 5
