"""Parle in one process: the n = 1 identity (with and without a process group), scoping, options, state.

The tests on two gloo processes are in test_parle_replicas.py.
"""

from __future__ import annotations

import io
import math
import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

import localentropy
from localentropy.entropy import PARLE_PRESETS, EntropySGD, Parle
from localentropy.entropy.optim.parle import replica_seed, scoped
from tests.entropy.optim.docs import doc_example
from tests.entropy.optim.replicas import AUTHORS, PAPER, Batches, flat, free_port, make_model, shard

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 4


def run(opt_factory, steps=STEPS, lr_for_step=None):
    """``steps`` steps of the optimizer ``opt_factory(params)`` builds on replica 0's shard; the weights after each."""
    model = make_model()
    opt = opt_factory(model.parameters())
    closure = Batches(model, shard(0))
    trajectory = []
    for k in range(steps):
        if lr_for_step is not None:
            for group in opt.param_groups:
                group["lr"] = lr_for_step(k)
        opt.step(closure)
        trajectory.append(flat(model))
    return trajectory, opt


def entropy_sgd_like(parle: Parle, **overrides):
    """EntropySGD with Parle's settings, drawing from a generator seeded with the replica's seed."""
    options = {key: PAPER[key] for key in ("lr", "gamma", "inner_steps", "sampler_options", "momentum")}
    options.update(overrides)
    return lambda ps: EntropySGD(ps, generator=torch.Generator().manual_seed(parle.replica_seed), **options)


def test_parle_is_exported_at_the_top_level():
    assert localentropy.Parle is Parle
    assert set(PARLE_PRESETS) == {"paper", "authors"}


@pytest.mark.parametrize("nesterov", [False, True])
def test_one_replica_is_entropy_sgd_with_the_same_outer_step(nesterov):
    """n = 1: x_ref = x, the elastic term rho (x - x_ref) vanishes; Parle's steps are Entropy-SGD's."""
    options = {**PAPER, "nesterov": nesterov, "scoping": 0.1}
    parle_traj, parle = run(lambda ps: Parle(ps, generator=torch.Generator().manual_seed(7), **options))
    sgd_traj, _ = run(entropy_sgd_like(parle, nesterov=nesterov, scoping=0.1))
    for a, b in zip(parle_traj, sgd_traj, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    assert parle.communication() == {"bytes_communicated": 0, "collective_calls": 0}
    torch.testing.assert_close(torch.cat([r.reshape(-1) for r in parle.reference()]), parle_traj[-1], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("sampler", "sampler_options"),
    [
        ("msgld", {"step_size": 0.05, "momentum": 0.9, "nesterov": True, "temperature": 1e-3}),
        ("sghmc", {"step_size": 0.05, "friction": 0.2, "temperature": 1e-3}),
    ],
)
def test_any_registered_sampler_runs_the_replicas_inner_loop(sampler, sampler_options):
    options = {**PAPER, "sampler": sampler, "sampler_options": sampler_options}
    parle_traj, parle = run(lambda ps: Parle(ps, generator=torch.Generator().manual_seed(7), **options), steps=2)
    sgd_traj, _ = run(entropy_sgd_like(parle, sampler=sampler, sampler_options=sampler_options), steps=2)
    for a, b in zip(parle_traj, sgd_traj, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_one_replica_in_a_process_group_of_one_is_entropy_sgd_and_communicates_nothing():
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(free_port())
    dist.init_process_group("gloo", rank=0, world_size=1, timeout=timedelta(seconds=15))
    try:
        parle_traj, parle = run(lambda ps: Parle(ps, generator=torch.Generator().manual_seed(7), **PAPER))
        assert (parle.rank, parle.world_size) == (0, 1)
    finally:
        dist.destroy_process_group()
    sgd_traj, _ = run(entropy_sgd_like(parle))
    for a, b in zip(parle_traj, sgd_traj, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)
    assert parle.communication() == {"bytes_communicated": 0, "collective_calls": 0}


def test_one_replica_under_the_authors_reduction_steps_by_one_plus_rho_along_x_minus_mu():
    """reduction="averages_then_weights" at n = 1: x_ref = mu, so x <- x - lr (1 + rho_t)(x - mu) (unit scale)."""
    parle_traj, parle = run(lambda ps: Parle(ps, generator=torch.Generator().manual_seed(7), **AUTHORS))
    rho, lr, nb, steps = AUTHORS["rho"] * AUTHORS["inner_steps"], AUTHORS["lr"], AUTHORS["batches_per_epoch"], 3
    sgd_traj, _ = run(
        lambda ps: EntropySGD(
            ps,
            lr=lr,
            gamma=AUTHORS["gamma"],
            scoping=0.5 / nb,
            inner_steps=AUTHORS["inner_steps"],
            sampler_options=AUTHORS["sampler_options"],
            temperature=0.0,
            averaging=0.25,
            outer_scale="unit",
            generator=torch.Generator().manual_seed(parle.replica_seed),
        ),
        steps=steps,
        lr_for_step=lambda k: lr * (1 + scoped(rho, 0.5 / nb, k, 10.0)),
    )
    for a, b in zip(parle_traj[:steps], sgd_traj, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@given(
    value=st.floats(1e-4, 5.0),
    batches=st.integers(1, 500),
    cap=st.none() | st.floats(1e-3, 10.0),
    t=st.integers(0, 3000),
)
def test_scoping_is_monotone_and_capped(value, batches, cap, t):
    now, later = scoped(value, 0.5 / batches, t, cap), scoped(value, 0.5 / batches, t + 1, cap)
    assert later >= now
    if cap is not None:
        assert later <= cap
        # log-space first: past the cap the power may overflow a float, and the schedule must stay at the cap
        below_cap = t * math.log1p(0.5 / batches) + math.log(value) <= math.log(cap) + 1e-9
        assert now == (min(value * (1 + 0.5 / batches) ** t, cap) if below_cap else cap)


def test_the_authors_schedule_scales_rho_by_steps_and_replicas_and_caps_both():
    model = make_model()
    opt = Parle(model.parameters(), lr=0.1, gamma=0.5, rho=0.2, inner_steps=3, preset="authors", batches_per_epoch=1)
    closure = Batches(model, shard(0))
    seen = []
    for _ in range(8):
        seen.append((opt.current_gammas()[0], opt.current_rhos()[0]))
        opt.step(closure)
    for t, (gamma_t, rho_t) in enumerate(seen):
        assert gamma_t == pytest.approx(min(0.5 * 1.5**t, 1.0))
        assert rho_t == pytest.approx(min(0.2 * 3 * 1 * 1.5**t, 10.0))
    assert seen[-1] == (1.0, 10.0)


def test_ranks_seeded_alike_get_different_noise_seeds_recorded_in_the_state():
    seeds = {replica_seed(12345, rank) for rank in range(64)}
    assert len(seeds) == 64 and all(0 <= s < 2**62 for s in seeds)
    torch.manual_seed(3)
    opt = Parle(make_model().parameters(), **PAPER)
    torch.manual_seed(3)
    again = Parle(make_model().parameters(), **PAPER)
    assert opt.replica_seed == again.replica_seed == replica_seed(opt.base_seed, 0)
    assert opt.state_dict()["parle"]["replica_seed"] == opt.replica_seed


def test_resume_is_bit_identical_in_one_process():
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(7), **PAPER)
    closure = Batches(model, shard(0))
    opt.step(closure)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "i": closure.i}, buffer)
    opt.step(closure)
    opt.step(closure)
    expected = flat(model)

    saved = torch.load(io.BytesIO(buffer.getvalue()))
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(99), **PAPER)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    assert all("reference" in s for s in opt.state.values())
    closure = Batches(model, shard(0), start=saved["i"])
    opt.step(closure)
    opt.step(closure)
    assert torch.equal(flat(model), expected)


def test_a_state_from_another_rank_is_refused_clearly():
    model = make_model()
    opt = Parle(model.parameters(), **PAPER)
    opt.step(Batches(model, shard(0)))
    state = opt.state_dict()
    state["parle"] = {**state["parle"], "rank": 1, "world_size": 2}
    with pytest.raises(ValueError, match="saved by rank 1 of 2"):
        Parle(make_model().parameters(), **PAPER).load_state_dict(state)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"reduction": "twice"}, "reduction must be one of 'weights', 'averages_then_weights'"),
        ({"rho_scale": "L"}, "rho_scale must be one of 'none', 'steps_replicas'"),
        ({"rho": -1.0}, "rho must be in"),
        ({"gamma_max": 0.0}, "gamma_max must be in"),
        ({"inner_noise": "no"}, "inner_noise must be true or false"),
        ({"preset": "code"}, "preset must be one of 'paper', 'authors'"),
        ({"preset": "authors"}, "pass batches_per_epoch=nb"),
        ({"scoping": 0.1, "batches_per_epoch": 10}, "give scoping or batches_per_epoch"),
        ({"batches_per_epoch": 0}, "batches_per_epoch must be an integer >= 1"),
        ({"process_group": object()}, "torch.distributed is not initialised"),
    ],
)
def test_bad_options_are_refused_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        Parle(make_model().parameters(), **{**PAPER, **overrides})


def test_without_noise_the_inner_sampler_runs_at_temperature_zero():
    opt = Parle(make_model().parameters(), **{**PAPER, "inner_noise": False})
    assert opt.sampler.temperature == 0.0
    assert Parle(make_model().parameters(), **PAPER).sampler.temperature == PAPER["sampler_options"]["temperature"]


def test_the_documented_example_runs_as_one_replica(capsys):
    exec(compile(doc_example("## Parle"), "docs/optimizers.md", "exec"), {})
    assert "'collective_calls': 0" in capsys.readouterr().out
