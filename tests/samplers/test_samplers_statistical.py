"""Statistical tests of the samplers on correlated, ill-conditioned Gaussian targets.

On U(x) = 1/2 (x - m)^T M (x - m) each sampler is a linear recursion (pSGLD only once its preconditioner is
frozen), so its stationary law is known exactly (see ``tests/stats.py``). The tests compare sampled means
and covariance entries with that *exact* law, each within z * MCSE (MCSEs from arviz_stats, a Bonferroni z
at family-wise level 1e-3), never with the target T M^{-1}, which the samplers reach only as the step size
goes to 0. Step sizes are chosen large enough that the discretisation bias is many MCSEs wide, and the
SGLD and SGHMC tests also check that the comparison rejects T M^{-1}: the tests have the power to see a
wrong law.

Seeds are fixed (``torch.Generator().manual_seed``), so every test is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from localentropy.samplers import PSGLD, SGHMC, SGLD, make_sampler, sample
from tests.stats import (
    GaussianTarget,
    assert_moments,
    bonferroni_z,
    gaussian_target,
    moment_check,
    psgld_frozen_covariance,
    relative_error,
    sample_covariance,
    sghmc_covariance,
    sghmc_joint_covariance,
    sgld_covariance,
    sgld_covariance_formula,
    to_numpy,
)

pytestmark = pytest.mark.usefixtures("single_thread")

# Eigenvalues log-spaced in [lambda_max / condition, lambda_max], a random rotation and a nonzero mean.
TARGET_2D = gaussian_target(2, condition=10, seed=1)
TARGET_10D = gaussian_target(10, condition=50, seed=2)
# pSGLD's preconditioner is about 1 / sqrt(T diag M): a larger scale of M keeps h = 0.01 mixing quickly.
PSGLD_TARGET_2D = gaussian_target(2, condition=10, seed=1, lambda_max=10.0)
PSGLD_TARGET_10D = gaussian_target(10, condition=30, seed=2, lambda_max=100.0)


def run_chains(
    sampler,
    target: GaussianTarget,
    *,
    n_chains: int,
    n_steps: int,
    burn_in: int,
    thin: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Draws (n_chains, n_draws, d) in float64 from chains started at random points around the mean."""
    generator = torch.Generator().manual_seed(seed)
    init = target.init(n_chains, generator)
    return sample(sampler, target.grad_fn(), init, n_steps, generator=generator, burn_in=burn_in, thin=thin)


def run_psgld(
    sampler: PSGLD,
    target: GaussianTarget,
    *,
    n_chains: int,
    n_steps: int,
    burn_in: int,
    thin: int,
    seed: int = 0,
) -> tuple[torch.Tensor, np.ndarray]:
    """pSGLD chains run by hand, to keep the final state: the draws and the final preconditioner (n_chains, d).

    Chains start at random points: started exactly at the mode the first gradient is 0, so V = 0 and
    G = 1 / damping (1e5 by default), and the first noise kick throws the chain far away.
    """
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(target.init(n_chains, generator))
    grad_fn = target.grad_fn()
    draws = []
    for k in range(1, n_steps + 1):
        state = sampler.step(state, grad_fn(state.position), generator)
        if k > burn_in and (k - burn_in) % thin == 0:
            draws.append(state.position.clone())
    square_avg = to_numpy(state.square_avg[0])
    if sampler.damping_placement == "outside":
        preconditioner = 1.0 / (np.sqrt(square_avg) + sampler.damping)
    else:
        preconditioner = 1.0 / np.sqrt(square_avg + sampler.damping)
    return torch.stack(draws, dim=1), preconditioner


def frozen_mixture_covariance(sampler: PSGLD, target: GaussianTarget, preconditioner: np.ndarray) -> np.ndarray:
    """The covariance of pSGLD's draws if each chain's preconditioner were frozen at its final value.

    Every chain has its own V, so the pooled draws follow a mixture of zero-mean Gaussians: its covariance
    is the average of the chains' frozen-preconditioner (Lyapunov) covariances.
    """
    covs = [
        psgld_frozen_covariance(target.precision, sampler.step_size, d, sampler.temperature) for d in preconditioner
    ]
    return np.mean(covs, axis=0)


def assert_rejects_target(draws: torch.Tensor, target: GaussianTarget, temperature: float) -> None:
    """The same comparison against T M^{-1} (the law the sampler does not have) must fail."""
    check = moment_check(draws, target.mean, target.covariance(temperature))
    assert not check.passed, "the moment check cannot tell the exact law from T M^-1:\n" + check.report()


# ----------------------------------------------------------------------------------------------------------
# The targets and the exact laws themselves (no sampling)
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [TARGET_2D, TARGET_10D, PSGLD_TARGET_2D, PSGLD_TARGET_10D])
def test_targets_are_correlated_and_ill_conditioned(target: GaussianTarget) -> None:
    eig = target.eigenvalues
    assert 10 - 1e-9 <= eig[-1] / eig[0] <= 50 + 1e-9
    off_diagonal = target.precision - np.diag(np.diag(target.precision))
    assert np.abs(off_diagonal).max() > 0.05 * eig[-1]
    assert np.abs(target.mean).max() > 0.5


@pytest.mark.parametrize("target", [TARGET_2D, TARGET_10D])
@pytest.mark.parametrize("temperature", [1.0, 0.3])
def test_exact_laws_agree_with_closed_forms(target: GaussianTarget, temperature: float) -> None:
    M = target.precision
    lam = target.lambda_max
    for h in (0.05 / lam, 0.5 / lam, 1.5 / lam):
        # SGLD: the Lyapunov solution is docs/background.md's T M^-1 (I - h M / 2)^-1.
        np.testing.assert_allclose(
            sgld_covariance(M, h, temperature), sgld_covariance_formula(M, h, temperature), rtol=1e-9, atol=1e-12
        )
        # pSGLD with the identity preconditioner is SGLD.
        np.testing.assert_allclose(
            psgld_frozen_covariance(M, h, np.ones(target.dim), temperature), sgld_covariance(M, h, temperature)
        )
        # SGHMC with friction 1 forgets its velocity every step: it is SGLD with h = eta.
        np.testing.assert_allclose(sghmc_covariance(M, h, 1.0, temperature), sgld_covariance(M, h, temperature))
        # SGHMC in general (derived from the joint Lyapunov equation, checked here against it):
        # Cov x = T M^-1 (I - eta M / (2 (2 - a)))^-1 with T replaced by T (a - beta_hat) / a.
        for friction, noise_estimate in ((0.05, 0.0), (0.2, 0.0), (0.5, 0.1)):
            effective_t = temperature * (friction - noise_estimate) / friction
            closed = effective_t * np.linalg.inv(M) @ np.linalg.inv(np.eye(target.dim) - h * M / (2 * (2 - friction)))
            np.testing.assert_allclose(
                sghmc_covariance(M, h, friction, temperature, noise_estimate), closed, rtol=1e-8, atol=1e-12
            )
    # The laws tend to T M^-1 as the step size goes to 0.
    np.testing.assert_allclose(sgld_covariance(M, 1e-7 / lam, temperature), target.covariance(temperature), rtol=1e-5)
    with pytest.raises(ValueError, match="unstable"):
        sgld_covariance(M, 2.01 / lam, temperature)


def test_bonferroni_threshold() -> None:
    assert bonferroni_z(1) == pytest.approx(3.2905, abs=1e-3)
    assert bonferroni_z(65) > bonferroni_z(5) > bonferroni_z(1)


# ----------------------------------------------------------------------------------------------------------
# SGLD
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "noise"), [(1.0, "gaussian"), (0.3, "gaussian"), (1.0, "rademacher")], ids=["T1", "T0.3", "rad"]
)
def test_sgld_matches_exact_law_2d(temperature: float, noise: str) -> None:
    """h lambda_max = 1: the top direction's variance is twice T / lambda. Rademacher noise has the same
    mean and covariance, so on a linear recursion it leaves the stationary mean and covariance unchanged."""
    target = TARGET_2D
    h = 1.0 / target.lambda_max
    sampler = SGLD(step_size=h, temperature=temperature, noise=noise)
    seed = 11 + int(100 * temperature) + (noise == "rademacher")  # independent runs, not rescaled copies
    draws = run_chains(sampler, target, n_chains=64, n_steps=3000, burn_in=600, thin=2, seed=seed)
    exact = sgld_covariance(target.precision, h, temperature)
    assert_moments(draws, target.mean, exact, label=f"SGLD 2-D T={temperature} {noise}")
    assert_rejects_target(draws, target, temperature)


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1.0, 0.25, 3.0])
def test_sgld_matches_exact_law_10d(temperature: float) -> None:
    target = TARGET_10D
    h = 1.0 / target.lambda_max  # h lambda_min = 0.02: burn-in 1,000 steps is 20 e-folds of the mean
    sampler = make_sampler("sgld", step_size=h, temperature=temperature)
    draws = run_chains(
        sampler, target, n_chains=256, n_steps=7000, burn_in=1000, thin=10, seed=12 + int(100 * temperature)
    )
    exact = sgld_covariance(target.precision, h, temperature)
    assert_moments(draws, target.mean, exact, label=f"SGLD 10-D T={temperature}")
    assert_rejects_target(draws, target, temperature)


def test_sgld_bias_shrinks_with_step_size_exact_law() -> None:
    """The covariance error of SGLD's exact law against T M^-1 decreases with h, about in proportion."""
    for target in (TARGET_2D, TARGET_10D):
        errors = [
            relative_error(sgld_covariance(target.precision, c / target.lambda_max), target.covariance())
            for c in (0.2, 0.1, 0.05)
        ]
        assert errors[0] > errors[1] > errors[2] > 0
        # First order in h: halving h about halves the error.
        assert errors[0] / errors[1] == pytest.approx(2, rel=0.1)
        assert errors[1] / errors[2] == pytest.approx(2, rel=0.1)


@pytest.mark.slow
def test_sgld_bias_shrinks_with_step_size_sampled() -> None:
    """Sampled: the variance along M's top eigenvector u is T / lambda (1 - h lambda / 2)^-1, 11%, 5.3% and 2.6%
    above T / lambda at h lambda = 0.2, 0.1, 0.05. On a quadratic, u^T (x - m) is an AR(1) chain of its own, so
    only that direction needs burning in."""
    target = TARGET_2D
    lam = target.lambda_max
    u = np.linalg.eigh(target.precision)[1][:, -1]
    sampled_errors = []
    for c in (0.2, 0.1, 0.05):
        h = c / lam
        draws = run_chains(SGLD(step_size=h), target, n_chains=256, n_steps=6000, burn_in=400, seed=13)
        y = (to_numpy(draws) - target.mean) @ u  # (n_chains, n_draws)
        exact_var = u @ sgld_covariance(target.precision, h) @ u
        check = moment_check(y[..., None], np.zeros(1), np.array([[exact_var]]))
        assert check.passed, f"SGLD top-direction variance at h lambda = {c}\n{check.report()}"
        sampled_errors.append(check.estimate[1] * lam - 1.0)  # relative excess over T / lambda
    assert sampled_errors[0] > sampled_errors[1] > sampled_errors[2], sampled_errors


# ----------------------------------------------------------------------------------------------------------
# SGHMC
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "noise_estimate"), [(1.0, 0.0), (2.0, 0.05), (0.5, 0.0)], ids=["T1", "T2-beta0.05", "T0.5"]
)
def test_sghmc_matches_exact_law_2d(temperature: float, noise_estimate: float) -> None:
    """eta lambda_max = 2, friction 0.2: the top direction's variance is 2.25 T / lambda."""
    target = TARGET_2D
    eta, friction = 2.0 / target.lambda_max, 0.2
    sampler = SGHMC(step_size=eta, friction=friction, temperature=temperature, noise_estimate=noise_estimate)
    draws = run_chains(
        sampler, target, n_chains=64, n_steps=3000, burn_in=500, thin=2, seed=21 + int(100 * temperature)
    )
    exact = sghmc_covariance(target.precision, eta, friction, temperature, noise_estimate)
    assert_moments(draws, target.mean, exact, label=f"SGHMC 2-D T={temperature} beta_hat={noise_estimate}")
    assert_rejects_target(draws, target, temperature)


def test_sghmc_joint_position_velocity_law_2d() -> None:
    """The joint law of (x, v), velocity included, from chains run by hand with init/step."""
    target = TARGET_2D
    eta, friction, temperature = 1.0 / target.lambda_max, 0.3, 0.7
    sampler = SGHMC(step_size=eta, friction=friction, temperature=temperature)
    generator = torch.Generator().manual_seed(22)
    state = sampler.init(target.init(64, generator))
    grad_fn = target.grad_fn()
    joint = []
    for k in range(1, 3001):
        state = sampler.step(state, grad_fn(state.position), generator)
        if k > 500 and k % 2 == 0:
            joint.append(torch.cat([state.position, state.velocity[0]], dim=1))
    draws = torch.stack(joint, dim=1)
    exact = sghmc_joint_covariance(target.precision, eta, friction, temperature)
    assert_moments(draws, np.concatenate([target.mean, np.zeros(2)]), exact, label="SGHMC 2-D joint (x, v)")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("temperature", "friction", "noise_estimate"),
    [(1.0, 0.2, 0.0), (0.5, 0.1, 0.05), (2.0, 0.5, 0.0)],
    ids=["T1-a0.2", "T0.5-a0.1-beta0.05", "T2-a0.5"],
)
def test_sghmc_matches_exact_law_10d(temperature: float, friction: float, noise_estimate: float) -> None:
    target = TARGET_10D
    eta = 2.0 / target.lambda_max  # stable below 2 (2 - friction) / lambda_max
    sampler = make_sampler(
        "sghmc", step_size=eta, friction=friction, temperature=temperature, noise_estimate=noise_estimate
    )
    draws = run_chains(
        sampler, target, n_chains=256, n_steps=6000, burn_in=1000, thin=10, seed=23 + int(100 * temperature)
    )
    exact = sghmc_covariance(target.precision, eta, friction, temperature, noise_estimate)
    assert_moments(draws, target.mean, exact, label=f"SGHMC 10-D T={temperature} a={friction}")
    assert_rejects_target(draws, target, temperature)


# ----------------------------------------------------------------------------------------------------------
# pSGLD
#
# With a fluctuating preconditioner and the Gamma term dropped, pSGLD has no closed-form stationary law.
# Its mean is still exact: the dynamics are symmetric under x - m -> -(x - m) (V depends on g * g only).
# Its covariance was measured first: h = 0.01, T = 1, 128 chains, burn-in 2,000 / 10,000 / 40,000 steps
# then 40,000 more (thinned by 10); "trace ratio" is the pooled covariance's trace over that of the mixture
# of the chains' frozen-preconditioner (Lyapunov) laws, the latter within 0.3% (2-D) / 1% (10-D) of T M^-1;
# +- one MCSE:
#     2-D target (PSGLD_TARGET_2D)     beta = 0.99: 1.196 +- 0.012   0.999: 1.033 +- 0.009   0.9999: 1.003 +- 0.009
#     10-D target (PSGLD_TARGET_10D)   beta = 0.99: 1.107 +- 0.004   0.999: 1.014 +- 0.003   0.9999: 1.006 +- 0.003
# (Frobenius errors alike: 20% / 3.5% / 0.4% in 2-D.) At beta = 0.99, V follows the current g * g, so G is
# state-dependent and the dropped Gamma term matters; shorter runs (burn-in 1,000, 5,000 steps kept) scattered
# between 1.14 and 1.26 in 2-D with the seed. So only with beta close to 1 is the frozen-preconditioner
# Lyapunov law a fair reference: the tests use beta = 0.9999 for it and pin the bias at beta = 0.99 and 0.999.
# ----------------------------------------------------------------------------------------------------------


def test_psgld_mean_is_exact_2d() -> None:
    target = PSGLD_TARGET_2D
    sampler = PSGLD(step_size=0.01, beta=0.99)
    draws = run_chains(sampler, target, n_chains=128, n_steps=4000, burn_in=1000, thin=2, seed=31)
    x = to_numpy(draws)
    check = moment_check(x, target.mean, target.covariance())
    d = target.dim
    means_ok = np.abs(check.estimate[:d] - check.truth[:d]) <= bonferroni_z(d) * check.mcse[:d]
    assert means_ok.all(), check.report()


def test_psgld_matches_frozen_preconditioner_law_2d() -> None:
    target = PSGLD_TARGET_2D
    sampler = PSGLD(step_size=0.01, beta=0.9999)
    draws, preconditioner = run_psgld(sampler, target, n_chains=128, n_steps=20000, burn_in=12000, thin=4, seed=32)
    exact = frozen_mixture_covariance(sampler, target, preconditioner)
    assert_moments(draws, target.mean, exact, label="pSGLD 2-D beta=0.9999")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("temperature", "placement"), [(1.0, "outside"), (0.5, "inside")], ids=["T1-outside", "T0.5-inside"]
)
def test_psgld_matches_frozen_preconditioner_law_10d(temperature: float, placement: str) -> None:
    target = PSGLD_TARGET_10D
    sampler = PSGLD(step_size=0.01, beta=0.9999, temperature=temperature, damping_placement=placement)
    draws, preconditioner = run_psgld(sampler, target, n_chains=256, n_steps=30000, burn_in=20000, thin=10, seed=33)
    exact = frozen_mixture_covariance(sampler, target, preconditioner)
    assert_moments(draws, target.mean, exact, label=f"pSGLD 10-D beta=0.9999 T={temperature} {placement}")


@pytest.mark.slow
def test_psgld_covariance_bias_grows_as_beta_drops() -> None:
    """Pins the measured bias of the fluctuating preconditioner (see the block comment above)."""
    target = PSGLD_TARGET_2D
    ratios = {}
    for beta, burn_in, n_steps in ((0.99, 2000, 22000), (0.999, 10000, 30000)):
        sampler = PSGLD(step_size=0.01, beta=beta)
        draws, preconditioner = run_psgld(
            sampler, target, n_chains=128, n_steps=n_steps, burn_in=burn_in, thin=10, seed=34
        )
        frozen = frozen_mixture_covariance(sampler, target, preconditioner)
        ratios[beta] = np.trace(sample_covariance(draws, target.mean)) / np.trace(frozen)
    # Measured 1.196 +- 0.012 and 1.033 +- 0.009 (long runs); this set-up gave 1.17 to 1.20 and 1.030 to 1.037
    # over six other seeds.
    assert 1.12 < ratios[0.99] < 1.28, ratios
    assert 1.01 < ratios[0.999] < 1.06, ratios
    assert ratios[0.99] - ratios[0.999] > 0.08, ratios
