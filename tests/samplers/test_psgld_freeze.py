"""pSGLD with ``freeze_after``: the preconditioner adapts for N steps, then the chain is SGLD with a constant diagonal
preconditioner, whose stationary law on a quadratic is known exactly; the frozen preconditioner survives ``reset``
(and so Entropy-SGD's restart between outer steps); ``debias`` starts V at the first squared gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localentropy.samplers import PSGLD, make_sampler, sample
from tests.samplers.entropy_sgd_states import kept_sampler_states
from tests.stats import assert_moments, gaussian_target, psgld_frozen_covariance, to_numpy

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def preconditioner_of(sampler: PSGLD, state) -> torch.Tensor:
    v = state.square_avg[0]
    if sampler.debias:
        v = v / (1 - sampler.beta**state.adapted)
    if sampler.damping_placement == "outside":
        return 1.0 / (v.sqrt() + sampler.damping)
    return (v + sampler.damping).rsqrt()


@pytest.mark.parametrize("placement", ["outside", "inside"])
@pytest.mark.parametrize("debias", [False, True])
def test_after_freezing_a_step_is_sgld_with_the_frozen_preconditioner(placement: str, debias: bool) -> None:
    sampler = PSGLD(0.05, beta=0.9, damping=1e-3, freeze_after=4, debias=debias, damping_placement=placement)
    generator = torch.Generator().manual_seed(0)
    state = sampler.init(torch.randn(3, 5, dtype=F64, generator=generator))
    for _ in range(4):
        state = sampler.step(state, 2.0 * state.position, generator)
    frozen_v = state.square_avg[0].clone()
    assert state.adapted == 4
    for _ in range(3):
        x = state.position.clone()
        g = 2.0 * x
        xi = torch.randn(x.shape, dtype=F64, generator=generator)
        G = preconditioner_of(sampler, state)
        expected = x - 0.05 * G * g + (2 * 0.05 * G).sqrt() * xi
        state = sampler.step(state, g, noise=xi)
        torch.testing.assert_close(state.position, expected, rtol=1e-13, atol=1e-13)
        assert torch.equal(state.square_avg[0], frozen_v) and state.adapted == 4


def test_debias_starts_v_at_the_first_squared_gradient() -> None:
    sampler = PSGLD(0.1, beta=0.99, damping=1e-8, debias=True, temperature=0.0)
    x = torch.tensor([[1.0, -2.0]], dtype=F64)
    state = sampler.init(x.clone())
    g = torch.tensor([[3.0, 0.5]], dtype=F64)
    state = sampler.step(state, g)
    # G = 1 / (damping + |g|): the first step moves every coordinate by h sign(g), as RMSprop's steady state would
    torch.testing.assert_close(state.position, x - 0.1 * g / (1e-8 + g.abs()))
    # without debias the first step is 1 / sqrt(1 - beta) = 10 times longer
    plain = PSGLD(0.1, beta=0.99, damping=1e-8, temperature=0.0)
    moved = plain.step(plain.init(x.clone()), g).position
    torch.testing.assert_close(x - moved, 10 * (x - state.position), rtol=1e-6, atol=0)


def test_reset_keeps_a_frozen_or_still_adapting_preconditioner_and_zeroes_an_unfrozen_one() -> None:
    generator = torch.Generator().manual_seed(1)
    for freeze_after, kept in ((0, False), (3, True), (100, True)):
        sampler = PSGLD(0.01, freeze_after=freeze_after)
        state = sampler.init(torch.randn(2, 3, dtype=F64, generator=generator))
        for _ in range(5):
            state = sampler.step(state, state.position.clone(), generator)
        v = state.square_avg[0].clone()
        state = sampler.reset(state)
        assert state.step == 0
        assert torch.equal(state.square_avg[0], v) is kept
        assert state.adapted == (min(5, freeze_after) if kept else 0)


def test_inside_entropy_sgd_the_preconditioner_adapts_over_the_first_inner_steps_then_is_kept() -> None:
    options = {"step_size": 0.01, "temperature": 1e-4, "freeze_after": 7, "debias": True}
    states = kept_sampler_states("psgld", options, 3)
    assert next(states).adapted == 5  # 5 inner steps so far, still adapting
    state = next(states)
    frozen = state.square_avg[0].clone()
    assert state.adapted == 7  # frozen during the second outer step
    state = next(states)
    assert torch.equal(state.square_avg[0], frozen) and state.adapted == 7


def test_frozen_psgld_samples_the_exact_law_of_its_preconditioner() -> None:
    """Each chain freezes its own G, so the pooled draws follow the mixture of the chains' Lyapunov laws."""
    target = gaussian_target(2, condition=10, seed=1, lambda_max=10.0)
    sampler = make_sampler("psgld", step_size=0.01, beta=0.99, freeze_after=200, debias=True)
    generator = torch.Generator().manual_seed(0)
    init = target.init(128, generator)
    state_holder = {}

    def grad_fn(x: torch.Tensor) -> torch.Tensor:
        return target.grad_fn()(x)

    # the preconditioner each chain froze: rerun the adaptation with the same generator stream
    probe_generator = torch.Generator().manual_seed(0)
    probe_generator.set_state(generator.get_state())
    state = sampler.init(init.clone())
    for _ in range(200):
        state = sampler.step(state, grad_fn(state.position), probe_generator)
    state_holder["G"] = to_numpy(preconditioner_of(sampler, state))
    draws = sample(sampler, grad_fn, init, 6200, burn_in=200, thin=5, generator=generator)
    covariances = [psgld_frozen_covariance(target.precision, 0.01, g) for g in state_holder["G"]]
    assert_moments(draws, target.mean, np.mean(covariances, axis=0), label="frozen psgld")
