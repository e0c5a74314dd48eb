"""SGHMC with ``noise_estimate="running"``: beta_hat estimated per coordinate from successive gradient differences.

On U = sum_i lambda_i x_i^2 / 2 with gradient noise N(0, V_i) per coordinate, each coordinate is a linear recursion
whose velocity noise per step has variance q = eta^2 V + 2 (alpha - beta_hat) eta T, so its stationary law is the
Lyapunov law of SGHMC with that q (``sghmc_joint_covariance`` at temperature q / (2 alpha eta)). The estimate
V_hat averages half the squared difference g_t - g_{t-1} = lambda v_t + eps_t - eps_{t-1}; v_t holds -eta
eps_{t-1}, so its stationary mean is V (1 + eta lambda) + lambda^2 E[v^2] / 2, and beta_hat = min(eta V_hat / (2 T),
alpha). The predicted law is the fixed point of these two (q depends on beta_hat, beta_hat on E[v^2]); beta_hat
fluctuates with the running average, but the law is linear in it, so only its mean counts to first order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from localentropy.samplers import SGHMC, make_sampler
from tests.samplers.entropy_sgd_states import kept_sampler_states
from tests.stats import bonferroni_z, sghmc_joint_covariance

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64
LAMBDAS = (1.0, 4.0)
GRAD_NOISE = (50.0, 10.0)  # eta V / 2 = 0.25 and 0.05 at eta = 0.01
ETA = 0.01


def predicted_law(lam: float, grad_noise: float, friction: float, beta_hat: float | None) -> tuple[float, float]:
    """(lambda Var(x) / T, beta_hat) at stationarity, T = 1: with beta_hat given, or the running estimate's fixed
    point (beta_hat = None)."""
    M = np.array([[lam]])
    b = 0.0 if beta_hat is None else beta_hat
    for _ in range(200 if beta_hat is None else 1):
        q = ETA**2 * grad_noise + 2 * (friction - b) * ETA
        joint = sghmc_joint_covariance(M, ETA, friction, temperature=q / (2 * friction * ETA))
        if beta_hat is None:
            v_hat = grad_noise * (1 + ETA * lam) + lam**2 * joint[1, 1] / 2
            b = min(ETA * v_hat / 2, friction)
    return lam * joint[0, 0], b


def run_chains(
    noise_estimate: float | str,
    friction: float,
    n_chains: int = 1000,
    burn_in: int = 600,
    n_kept: int = 2000,
    seed: int = 0,
):
    """Per-chain time averages of lambda x^2 (T = 1), the final state and the sampler."""
    generator, noise_generator = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    lam, sd = torch.tensor(LAMBDAS, dtype=F64), torch.tensor(GRAD_NOISE, dtype=F64).sqrt()
    sampler = SGHMC(ETA, friction=friction, noise_estimate=noise_estimate)
    state = sampler.init(torch.randn(n_chains, 2, dtype=F64, generator=generator) / lam.sqrt())
    total = torch.zeros(n_chains, 2, dtype=F64)
    for k in range(burn_in + n_kept):
        grad = lam * state.position + sd * torch.randn(n_chains, 2, dtype=F64, generator=noise_generator)
        state = sampler.step(state, grad, generator)
        if k >= burn_in:
            total += lam * state.position**2
    return (total / n_kept).numpy(), state, sampler


@pytest.mark.parametrize("friction", [0.5, 0.1], ids=["within-budget", "clipped"])
def test_running_estimate_gives_the_law_of_its_fixed_point_and_cools_the_noisy_chain(friction: float) -> None:
    """friction 0.5: eta V / 2 <= alpha, the estimate takes the gradient noise out (lambda Var(x) near 1, not the
    1.5 and 1.1 without it); friction 0.1: coordinate 0's beta_hat is clipped to alpha, no noise is injected there."""
    z = bonferroni_z(8)
    running, state, sampler = run_chains("running", friction)
    plain, _, _ = run_chains(0.0, friction, seed=1)
    beta_hat = sampler.noise_term(state)[0].mean(0).numpy()
    for i, (lam, noise) in enumerate(zip(LAMBDAS, GRAD_NOISE, strict=True)):
        with_estimate, b = predicted_law(lam, noise, friction, None)
        without, _ = predicted_law(lam, noise, friction, 0.0)
        known, _ = predicted_law(lam, noise, friction, min(ETA * noise / 2, friction))
        for measured, expected in ((running[:, i], with_estimate), (plain[:, i], without)):
            se = measured.std(ddof=1) / math.sqrt(measured.size)
            assert abs(measured.mean() - expected) < z * se, (i, measured.mean(), expected, se)
        # the estimate's own mean (over chains; each averages ~200 differences) is its fixed point
        assert beta_hat[i] == pytest.approx(b, rel=0.02)
        # and the law is within 3 % of that with beta_hat known exactly (or clipped alike): the exact gradient's
        # change, lambda v, counts as noise (most at small friction, where E[v^2] is largest)
        assert with_estimate == pytest.approx(known, rel=0.03)
    if friction == 0.5:  # the estimate pays: within 2 % of T in both coordinates, against 1.5 and 1.1 without
        assert np.all(np.abs(running.mean(0) - 1.0) < 0.02) and plain.mean(0)[0] > 1.45


@settings(max_examples=60, deadline=None)
@given(
    friction=st.floats(1e-3, 1.0),
    step_size=st.floats(1e-6, 10.0),
    temperature=st.sampled_from((1e-12, 1e-8, 1e-3, 1.0, 1e3)),
    scale=st.floats(1e-30, 1e30),
    dtype=st.sampled_from((torch.float32, F64)),
    seed=st.integers(0, 2**31),
)
def test_clip_keeps_the_injected_variance_between_zero_and_the_full_budget(
    friction: float, step_size: float, temperature: float, scale: float, dtype: torch.dtype, seed: int
) -> None:
    """With unit noise the velocity's injected part is sqrt(2 (alpha - beta_hat) eta T): finite, >= 0 and at most
    sqrt(2 alpha eta T), whatever the gradients' spread (beta_hat is clipped to [0, alpha])."""
    sampler = SGHMC(step_size, friction=friction, temperature=temperature, noise_estimate="running")
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(torch.zeros(4, 3, dtype=dtype))
    ones = torch.ones(4, 3, dtype=dtype)
    full = math.sqrt(2 * friction * step_size * temperature)
    for _ in range(4):
        grad = (scale * torch.randn(4, 3, generator=generator, dtype=F64)).to(dtype)
        before = state.velocity[0].clone()
        state = sampler.step(state, grad, noise=ones)
        injected = (state.velocity[0] - ((1 - friction) * before - step_size * grad)).double()
        beta_hat = sampler.noise_term(state)[0]
        assert torch.all((beta_hat >= 0) & (beta_hat <= friction))
        if torch.isfinite(state.velocity[0]).all() and torch.isfinite(grad).all():
            slack = 1e-5 * (full + step_size * grad.abs().double() + before.abs().double())  # rounding of v's terms
            assert torch.all(injected >= -slack) and torch.all(injected <= full + slack)


def test_reset_keeps_the_estimate_and_never_differences_across_a_restart() -> None:
    sampler = SGHMC(0.01, friction=0.3, noise_estimate="running")
    generator = torch.Generator().manual_seed(0)
    state = sampler.init(torch.randn(2, 3, dtype=F64, generator=generator))
    for _ in range(5):
        state = sampler.step(state, torch.randn(2, 3, dtype=F64, generator=generator), generator)
    assert state.variance_updates == 4  # 5 gradients, 4 differences
    variance = state.grad_variance[0].clone()
    state = sampler.reset(state)
    assert state.step == 0 and state.variance_updates == 4 and torch.equal(state.grad_variance[0], variance)
    assert torch.count_nonzero(state.velocity[0]) == 0
    state = sampler.step(state, 1e6 * torch.ones(2, 3, dtype=F64), generator)  # far from the last gradient
    assert state.variance_updates == 4 and torch.equal(state.grad_variance[0], variance)
    state = sampler.step(state, 1e6 * torch.ones(2, 3, dtype=F64), generator)
    assert state.variance_updates == 5


def test_the_state_holds_everything_a_resumed_chain_needs() -> None:
    """A new sampler object continuing from a copy of the state reproduces the original chain exactly."""
    sampler = make_sampler("sghmc", step_size=0.05, friction=0.2, noise_estimate="running")
    generator = torch.Generator().manual_seed(3)
    state = sampler.init(torch.randn(3, 2, dtype=F64, generator=generator))
    for _ in range(7):
        state = sampler.step(state, state.position + torch.randn(3, 2, dtype=F64, generator=generator), generator)
    copy = state._replace(
        **{
            f: [t.clone() for t in getattr(state, f)] if isinstance(getattr(state, f), list) else getattr(state, f)
            for f in state._fields
            if f != "position"
        },
        position=state.position.clone(),
    )
    twin = make_sampler("sghmc", **sampler.hyperparameters)
    fork = torch.Generator().manual_seed(0)
    fork.set_state(generator.get_state())
    for _ in range(5):
        grad = state.position + 1.0
        state = sampler.step(state, grad, generator)
        copy = twin.step(copy, copy.position + 1.0, fork)
        assert torch.equal(state.position, copy.position)
    assert torch.equal(state.grad_variance[0], copy.grad_variance[0]) and state.variance_updates == 11


def test_inside_entropy_sgd_the_estimate_survives_the_restart_between_outer_steps() -> None:
    options = {"step_size": 0.01, "temperature": 1e-4, "noise_estimate": "running"}
    for outer, state in enumerate(kept_sampler_states("sghmc", options, 3), 1):
        assert state.variance_updates == 4 * outer  # 4 differences per run of 5, none across a restart


@pytest.mark.parametrize("bad", ["Running", "ema", ""])
def test_an_unknown_estimate_name_is_refused_naming_the_field_and_the_choices(bad: str) -> None:
    with pytest.raises(ValueError, match=r"noise_estimate must be a number in \[0, friction\] or 'running'"):
        SGHMC(0.1, noise_estimate=bad)
