"""LocalEntropyEstimator and GaussianSmoothingEstimator against the closed forms of a Quadratic (docs/background.md).

Statistical checks and where their tolerances come from:

* Per-chain estimates (``chain_grads``) of independent chains are i.i.d.; their mean is judged with a
  Student-t test on the standard error sd / sqrt(n_chains), Bonferroni-corrected over the coordinates
  (family level ``tests.stats.FAMILY_LEVEL``). For SGLD and SGHMC on a quadratic the chain is a linear
  recursion driven by Gaussian noise, so each per-chain estimate is exactly Gaussian and the t-test is exact.
* By the same linearity, the expectation of an SGLD or SGHMC estimate equals the estimate of the same
  sampler at T = 0 (the noise enters additively with mean zero). That gives the transient bias of a finite
  run exactly; tolerances add it rather than assume it away.
* Draw moments (the stationary law of the chains) are judged with ArviZ MCSEs via ``tests.stats``.
"""

from __future__ import annotations

import math

import arviz_stats
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from localentropy.entropy import EstimateResult, GaussianSmoothingEstimator, LocalEntropyEstimator
from localentropy.entropy.problems import Quadratic
from localentropy.samplers import PSGLD, SGHMC, SGLD, Sampler, available_samplers, make_sampler
from tests.stats import FAMILY_LEVEL, assert_moments, bonferroni_z, sgld_covariance

DTYPE = torch.float64
EPS = torch.finfo(DTYPE).eps
# tiny tensors: one intra-op thread (conftest), else a busy 2-core machine slows each step about tenfold
pytestmark = pytest.mark.usefixtures("single_thread")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def bonferroni_t(n_comparisons: int, df: int, family_level: float = FAMILY_LEVEL) -> float:
    """Two-sided Student-t threshold for ``n_comparisons`` tests at family-wise level ``family_level``."""
    return float(stats.t.ppf(1 - family_level / (2 * n_comparisons), df))


def standard_error(chain_grads: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean over independent chains (the leading dimension), per coordinate."""
    return chain_grads.std(0) / math.sqrt(chain_grads.shape[0])


def coupled_potential(q: Quadratic, gamma: float, x: torch.Tensor):
    """U(x') = f(x') + gamma/2 ||x' - x||^2, one value per chain, and its gradient (for MALA's proposal)."""

    def potential(points: torch.Tensor) -> torch.Tensor:
        values = q.loss(points) + 0.5 * gamma * (points - x).square().sum(-1)
        return values.reshape(points.shape[0], -1).sum(-1)

    return potential, lambda points: q.grad(points) + gamma * (points - x)


def _mala(q: Quadratic, gamma: float, x: torch.Tensor, h_max: float) -> dict:
    potential, grad_fn = coupled_potential(q, gamma, x)
    return {"step_size": 0.5 * h_max, "potential": potential, "grad_fn": grad_fn}


# Sampler settings relative to the stability limit h_max = 2 / lambda_max(M), M = A + gamma I (samplers whose
# learning rate is h^2 use h relative to 1 / sqrt(lambda_max(M)) = sqrt(h_max / 2) instead). Each entry maps
# (problem, gamma, x, h_max) to the hyperparameters; MALA needs the potential U, which depends on x.
SAMPLER_SETTINGS = {
    "sgld": lambda q, gamma, x, h_max: {"step_size": 0.2 * h_max},
    "sghmc": lambda q, gamma, x, h_max: {"step_size": 0.02 * h_max, "friction": 0.1},
    "psgld": lambda q, gamma, x, h_max: {"step_size": 0.02, "beta": 0.999},
    # heavy ball: stable for h lambda < 2 (1 + m)
    "msgld": lambda q, gamma, x, h_max: {"step_size": 0.1 * h_max, "momentum": 0.5},
    # leapfrog-type: stable for h < 2 / sqrt(lambda_max(M)); friction 2 sqrt(lambda_min(M)) (about critical damping)
    "baoab": lambda q, gamma, x, h_max: {
        "step_size": 0.5 * math.sqrt(h_max / 2),
        "friction": 2 * math.sqrt(float(q.eigenvalues[0]) + gamma),
    },
    "sgnht": lambda q, gamma, x, h_max: {
        "step_size": 0.3 * math.sqrt(h_max / 2),
        "diffusion": 2 * math.sqrt(float(q.eigenvalues[0]) + gamma),
    },
    # MALA's transient at 0.2 h_max was measurably slow (0.56 SE of 32 chains at 200 steps); 0.5 h_max mixes faster
    "mala": _mala,
    "cyclical": lambda q, gamma, x, h_max: {
        "sampler": {"name": "sgld", "step_size": 0.4 * h_max},
        "n_cycles": 4,
        "total_steps": 200,
    },
}
REGISTERED = available_samplers()  # at import, before any test could register one of its own
# Linear recursions on a quadratic driven by additive zero-mean noise: E[estimate] is the T = 0 estimate, and the
# deviation of each draw from the noiseless path is sqrt(T) times a T-free term.
LINEAR_SAMPLERS = [name for name in ("sgld", "sghmc", "msgld", "baoab", "cyclical") if name in REGISTERED]
# The samplers this file has settings for (a registered sampler without settings fails
# test_every_registered_sampler_has_settings).
TESTED_SAMPLERS = [name for name in REGISTERED if name in SAMPLER_SETTINGS]


def sampler_for(name: str, q: Quadratic, gamma: float, x: torch.Tensor, temperature: float = 1.0) -> Sampler:
    if name not in SAMPLER_SETTINGS:
        pytest.fail(f"no test settings for the registered sampler {name!r}: add them to SAMPLER_SETTINGS")
    sampler = make_sampler(name, **SAMPLER_SETTINGS[name](q, gamma, x, q.max_stable_step(gamma)))
    return sampler.replace(temperature=temperature)


# 1-D problem for hand computations: f(x') = x'^2 - x', gamma = 1, x = 1, so U(x') = 3/2 x'^2 - 2 x' + const,
# grad U(x') = 3 x' - 2, and gradient descent with h = 0.1 gives x'_{k+1} = x'_k - 0.1 (3 x'_k - 2):
# 1 -> 0.9 -> 0.83 -> 0.781 -> 0.7467 -> 0.72269 -> 0.705883 (towards the proximal point 2/3).
ONE_D = Quadratic(torch.tensor([[2.0]]), torch.tensor([1.0]))
X1 = torch.tensor([1.0], dtype=DTYPE)
GD_TRAJECTORY = [0.9, 0.83, 0.781, 0.7467, 0.72269, 0.705883]


def gradient_descent_estimator(n_steps: int, **options) -> LocalEntropyEstimator:
    return LocalEntropyEstimator(ONE_D.grad, 1.0, SGLD(step_size=0.1, temperature=0.0), n_steps, **options)


@pytest.fixture(scope="module")
def quad3() -> Quadratic:
    return Quadratic.random(3, condition=4.0, seed=21)


@pytest.fixture(scope="module")
def x3(quad3: Quadratic) -> torch.Tensor:
    return torch.randn(3, generator=gen(22), dtype=DTYPE)


# --------------------------------------------------------------------------------------------------------
# Convergence to the closed form, every registered sampler, 20-D
# --------------------------------------------------------------------------------------------------------

GAMMA_20 = 10.0
N_CHAINS_20 = 32


@pytest.fixture(scope="module")
def quad20() -> tuple[Quadratic, torch.Tensor]:
    q = Quadratic.random(20, condition=100.0, seed=11)
    return q, torch.randn(20, generator=gen(12), dtype=DTYPE)


def test_every_registered_sampler_has_settings() -> None:
    q, x = Quadratic.random(2, 2.0, seed=0), torch.zeros(2, dtype=DTYPE)
    for name in REGISTERED:
        assert sampler_for(name, q, 1.0, x, temperature=0.5).temperature == 0.5


@pytest.mark.parametrize("name", TESTED_SAMPLERS)
def test_estimate_converges_to_the_closed_form(quad20: tuple[Quadratic, torch.Tensor], name: str) -> None:
    """200 and 2000 steps (burn-in n/5), 32 chains, uniform averaging, on f with eigenvalues in [1, 100], gamma 10.

    Each coordinate of the estimate lies within a Bonferroni t * SE (from the spread of the 32 independent
    per-chain estimates) of the truth, plus, for the linear samplers, the exact transient bias of a run that
    starts at x (the T = 0 estimate minus the truth). The stationary mean is exact for every sampler here:
    for the linear ones (SGLD, SGHMC, momentum SGLD, BAOAB, cyclical SGLD) their fixed point is the minimiser
    m of U; MALA leaves the target invariant; for pSGLD and SGNHT by the symmetry of U about m (z -> -z,
    p -> -p, xi -> -xi leaves the preconditioner and the thermostat unchanged). The transient bias of those
    three cannot be computed exactly; measured on this problem with 2048 to 4096 chains at 200 steps (256 to
    1024 at 2000), the mean error was at most 0.3 of the 32-chain SE, far inside the threshold (about 4.7).
    The per-chain mean squared error then falls with the budget: a one-sided z-test on the difference of the
    two means over chains.
    """
    q, x = quad20
    truth = q.local_entropy_grad(x, GAMMA_20)
    sampler = sampler_for(name, q, GAMMA_20, x)
    t = bonferroni_t(q.dim, N_CHAINS_20 - 1)
    squared_errors = {}
    biases = {}
    for n_steps, seed in ((200, 1), (2000, 2)):
        estimator = LocalEntropyEstimator(q.grad, GAMMA_20, sampler, n_steps, burn_in=n_steps // 5)
        result = estimator.estimate(x, N_CHAINS_20, gen(seed))
        bias = torch.zeros_like(truth)
        if name in LINEAR_SAMPLERS:
            noiseless = LocalEntropyEstimator(q.grad, GAMMA_20, sampler, n_steps, burn_in=n_steps // 5, temperature=0)
            bias = noiseless.estimate(x, 1).grad - truth
        biases[n_steps] = bias
        se = standard_error(result.chain_grads)
        error = result.grad - truth
        assert (error.abs() <= t * se + bias.abs()).all(), (
            f"{name}, {n_steps} steps: max |error| / SE = {float((error.abs() / se).max()):.2f} "
            f"(threshold {t:.2f}), max |bias| / SE = {float((bias.abs() / se).max()):.3f}"
        )
        squared_errors[n_steps] = (result.chain_grads - truth).square().sum(-1)
    # the transient bias vanishes: after 400 burn-in steps it is far below the noise and the truth
    assert biases[2000].norm() <= 1e-6 * truth.norm()
    short, long = squared_errors[200], squared_errors[2000]
    difference = short.mean() - long.mean()
    se_difference = (short.var() / N_CHAINS_20 + long.var() / N_CHAINS_20).sqrt()
    assert difference > float(stats.norm.ppf(1 - FAMILY_LEVEL)) * se_difference, (
        f"{name}: per-chain MSE {short.mean():.4g} (200 steps) vs {long.mean():.4g} (2000 steps), "
        f"SE of the difference {se_difference:.3g}"
    )


def test_noiseless_sgld_estimate_equals_the_transient_formula(quad20: tuple[Quadratic, torch.Tensor]) -> None:
    """At T = 0, SGLD is gradient descent on U: x'_k - m = (I - h M)^k (x - m), so the uniform average of the
    kept iterates k = b+1..n gives the estimate g - gamma S (x - m), S = mean_k (I - h M)^k (computed in M's
    eigenbasis, independently of the estimator)."""
    q, x = quad20
    gamma, n_steps, burn_in = GAMMA_20, 150, 30
    h = 0.5 * q.max_stable_step(gamma)
    result = LocalEntropyEstimator(q.grad, gamma, SGLD(h, temperature=0.0), n_steps, burn_in=burn_in).estimate(x)
    lam, V = np.linalg.eigh(q.A.numpy() + gamma * np.eye(q.dim))
    powers = (1 - h * lam)[None, :] ** np.arange(burn_in + 1, n_steps + 1)[:, None]
    S = (V * powers.mean(0)) @ V.T
    m = q.gibbs_mean(x, gamma).numpy()
    expected = q.local_entropy_grad(x, gamma).numpy() - gamma * S @ (x.numpy() - m)
    np.testing.assert_allclose(result.grad.numpy(), expected, rtol=1e-9, atol=1e-9)


def test_noiseless_sgld_converges_to_the_proximal_point() -> None:
    """T = 0, h below 2 / (lambda_max + gamma), last iterate: gamma (x - x'_n) -> gamma (x - prox(x)), with
    ||x'_n - prox|| <= rho^n ||x - prox||, rho = max |1 - h lambda(M)|. A is indefinite here."""
    q = Quadratic.random(5, condition=10.0, n_negative=1, seed=5)
    x = torch.randn(5, generator=gen(6), dtype=DTYPE)
    gamma, n_steps = 2.0, 300
    h = 0.9 * q.max_stable_step(gamma)
    estimator = LocalEntropyEstimator(q.grad, gamma, SGLD(h, temperature=0.0), n_steps, averaging=1.0)
    result = estimator.estimate(x, n_chains=3)
    prox = q.proximal_point(x, gamma)
    rho = float((1 - h * (q.eigenvalues + gamma)).abs().max())
    tolerance = gamma * rho**n_steps * float((x - prox).norm()) + 1e-12
    assert rho < 1
    assert float((result.grad - gamma * (x - prox)).norm()) <= tolerance
    torch.testing.assert_close(result.grad, q.local_entropy_grad(x, gamma), rtol=1e-10, atol=1e-10)
    assert torch.equal(result.chain_grads[0], result.chain_grads[1])  # no noise: identical chains


def test_points_with_several_dimensions(quad3: Quadratic) -> None:
    """x of shape (a, b) with a loss that acts on the last dimension: each row is its own 3-D problem."""
    x = torch.randn(4, 3, generator=gen(7), dtype=DTYPE)
    gamma = 2.0
    h = 0.5 * quad3.max_stable_step(gamma)
    estimator = LocalEntropyEstimator(quad3.grad, gamma, SGLD(h, temperature=0.0), 200, averaging=1.0)
    result = estimator.estimate(x, n_chains=2)
    assert result.grad.shape == (4, 3) and result.chain_grads.shape == (2, 4, 3)
    assert result.draws is not None and result.draws.shape == (2, 200, 4, 3)
    torch.testing.assert_close(result.grad, quad3.local_entropy_grad(x, gamma), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------------------
# Temperature rule
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [SGLD(0.01, temperature=1.0), SGHMC(0.001, friction=0.2, temperature=1.0), PSGLD(0.01, beta=0.9, temperature=1.0)],
    ids=["sgld", "sghmc", "psgld"],
)
def test_temperature_replaces_only_the_samplers_temperature(quad3: Quadratic, template: Sampler) -> None:
    before = dict(template.hyperparameters)
    estimator = LocalEntropyEstimator(quad3.grad, 2.0, template, 10, temperature=0.3)
    assert estimator.temperature == 0.3 and estimator.sampler.temperature == 0.3
    assert estimator.sampler is not template and type(estimator.sampler) is type(template)
    assert estimator.sampler.hyperparameters == {**before, "temperature": 0.3}
    assert template.hyperparameters == before  # the template is unchanged
    own = LocalEntropyEstimator(quad3.grad, 2.0, template, 10)
    assert own.sampler == template and own.temperature == 1.0


def test_temperature_zero_overrides_a_noisy_template(quad3: Quadratic, x3: torch.Tensor) -> None:
    estimator = LocalEntropyEstimator(quad3.grad, 2.0, SGLD(0.05, temperature=5.0), 20, temperature=0.0)
    first, second = estimator.estimate(x3, 2, gen(1)), estimator.estimate(x3, 2, gen(2))
    assert torch.equal(first.draws, second.draws)


@pytest.mark.parametrize("name", LINEAR_SAMPLERS)
def test_draws_spread_scales_with_sqrt_temperature(quad3: Quadratic, x3: torch.Tensor, name: str) -> None:
    """Same noise (same seed): for a linear sampler the deviation of each draw from the noiseless trajectory is
    sqrt(T) times a T-free term, so draws(T) - draws(0) = sqrt(T / T') (draws(T') - draws(0)); the mean of the
    estimate is the T = 0 estimate, whatever T."""
    gamma = 2.0
    sampler = sampler_for(name, quad3, gamma, x3)

    def run(temperature: float) -> EstimateResult:
        estimator = LocalEntropyEstimator(quad3.grad, gamma, sampler, 50, temperature=temperature)
        return estimator.estimate(x3, 4, gen(3))

    base, low, high = run(0.0), run(0.25), run(4.0)
    torch.testing.assert_close(high.draws - base.draws, 4.0 * (low.draws - base.draws), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(high.grad - base.grad, 4.0 * (low.grad - base.grad), rtol=1e-9, atol=1e-12)


def test_draws_follow_the_stationary_law_at_each_temperature(quad3: Quadratic, x3: torch.Tensor) -> None:
    """Long SGLD runs: draw means and covariances match N(m, T M^-1 (I - h M / 2)^-1) (SGLD's exact stationary
    law, background.md) within Bonferroni z * MCSE at T = 0.25 and T = 4: the spread scales with T. That law differs
    from gibbs_cov = T M^-1 by the factor (I - h M / 2)^-1, at most (h lambda_max / 2) / (1 - h lambda_max / 2)
    relative. The estimate itself is within t * SE of the truth at both temperatures."""
    gamma, n_steps, burn_in, n_chains = 2.0, 3000, 300, 16
    h = 0.1 * quad3.max_stable_step(gamma)
    M = quad3.A.numpy() + gamma * np.eye(3)
    mean = quad3.gibbs_mean(x3, gamma).numpy()
    truth = quad3.local_entropy_grad(x3, gamma)
    t = bonferroni_t(3, n_chains - 1, FAMILY_LEVEL / 2)
    lam_max = float(np.linalg.eigvalsh(M).max())
    factor = (h * lam_max / 2) / (1 - h * lam_max / 2)
    for temperature, seed in ((0.25, 4), (4.0, 5)):
        estimator = LocalEntropyEstimator(quad3.grad, gamma, SGLD(h), n_steps, burn_in=burn_in, temperature=temperature)
        result = estimator.estimate(x3, n_chains, gen(seed))
        stationary = sgld_covariance(M, h, temperature)
        assert_moments(result.draws, mean, stationary, family_level=FAMILY_LEVEL / 2, label=f"T={temperature}")
        gibbs = quad3.gibbs_cov(gamma, temperature).numpy()
        assert np.linalg.norm(stationary - gibbs, 2) <= factor * np.linalg.norm(gibbs, 2) * (1 + 1e-9)
        assert ((result.grad - truth).abs() <= t * standard_error(result.chain_grads)).all()


# --------------------------------------------------------------------------------------------------------
# Averaging, burn-in and the result's bookkeeping
# --------------------------------------------------------------------------------------------------------


def test_exponential_averaging_by_hand() -> None:
    """alpha = 0.75, mu_0 = x = 1: mu_1 = 0.25 + 0.75 * 0.9 = 0.925, mu_2 = 0.25 * 0.925 + 0.75 * 0.83 = 0.85375,
    mu_3 = 0.25 * 0.85375 + 0.75 * 0.781 = 0.7991875, so g = 1 * (1 - mu_3) = 0.2008125."""
    result = gradient_descent_estimator(3, averaging=0.75).estimate(X1)
    assert result.grad.item() == pytest.approx(0.2008125, rel=1e-12)
    assert result.draws is not None
    assert result.draws[0, :, 0].tolist() == pytest.approx(GD_TRAJECTORY[:3], rel=1e-12)


def test_uniform_averaging_by_hand() -> None:
    """mu = (0.9 + 0.83 + 0.781) / 3 = 0.837, g = 0.163."""
    assert gradient_descent_estimator(3).estimate(X1).grad.item() == pytest.approx(0.163, rel=1e-12)


def test_burn_in_discards_the_first_iterates_by_hand() -> None:
    """burn_in = 1 keeps 0.83 and 0.781: uniform mu = 0.8055 (g = 0.1945); alpha = 0.75 starts at mu = x = 1:
    mu = 0.25 + 0.6225 = 0.8725, then 0.218125 + 0.58575 = 0.803875 (g = 0.196125)."""
    uniform = gradient_descent_estimator(3, burn_in=1).estimate(X1)
    assert uniform.draws is not None and uniform.draws[0, :, 0].tolist() == pytest.approx([0.83, 0.781], rel=1e-12)
    assert uniform.grad.item() == pytest.approx(0.1945, rel=1e-12)
    assert gradient_descent_estimator(3, burn_in=1, averaging=0.75).estimate(X1).grad.item() == pytest.approx(
        0.196125, rel=1e-12
    )
    last = gradient_descent_estimator(6, burn_in=5, averaging=1.0).estimate(X1)
    assert last.grad.item() == pytest.approx(1 - GD_TRAJECTORY[5], rel=1e-12)


@pytest.mark.parametrize("name", TESTED_SAMPLERS)
def test_averages_are_built_from_the_kept_draws(quad3: Quadratic, x3: torch.Tensor, name: str) -> None:
    """With noise: uniform is the mean of the kept draws, alpha = 1 the last one, alpha = 0.3 the exponential
    recursion from mu = x; the same seed gives the same draws whatever the averaging."""
    gamma, n_steps, burn_in = 2.0, 12, 4
    sampler = sampler_for(name, quad3, gamma, x3)
    results = {
        averaging: LocalEntropyEstimator(
            quad3.grad, gamma, sampler, n_steps, burn_in=burn_in, averaging=averaging
        ).estimate(x3, 3, gen(8))
        for averaging in ("uniform", 1.0, 0.3)
    }
    draws = results["uniform"].draws
    assert draws is not None and draws.shape == (3, n_steps - burn_in, 3)
    for result in results.values():
        assert torch.equal(result.draws, draws)
        torch.testing.assert_close(result.grad, result.chain_grads.mean(0))
    torch.testing.assert_close(results["uniform"].chain_grads, gamma * (x3 - draws.mean(1)))
    assert torch.equal(results[1.0].chain_grads, gamma * (x3 - draws[:, -1]))
    mu = x3.expand(3, 3).clone()
    for k in range(draws.shape[1]):
        mu = 0.7 * mu + 0.3 * draws[:, k]
    torch.testing.assert_close(results[0.3].chain_grads, gamma * (x3 - mu))


def test_result_bookkeeping(quad3: Quadratic, x3: torch.Tensor) -> None:
    estimator = LocalEntropyEstimator(quad3.grad, 2.0, SGLD(0.05), 25, burn_in=5)
    result = estimator.estimate(x3, n_chains=4, generator=gen(9))
    assert isinstance(result, EstimateResult)
    assert result.grad.shape == (3,) and result.grad.dtype == DTYPE
    assert result.chain_grads.shape == (4, 3)
    assert result.draws is not None and result.draws.shape == (4, 20, 3)
    assert result.grad_evals == 4 * 25
    assert result.seconds > 0
    quiet = LocalEntropyEstimator(quad3.grad, 2.0, SGLD(0.05), 25, burn_in=5, keep_draws=False)
    lean = quiet.estimate(x3, n_chains=4, generator=gen(9))
    assert lean.draws is None
    assert torch.equal(lean.grad, result.grad)  # keeping draws changes nothing else
    assert lean.grad_evals == 100
    assert "gamma=2.0" in repr(estimator) and "SGLD" in repr(estimator)


def test_x_that_requires_grad_is_detached_and_autograd_grad_fns_work(quad3: Quadratic, x3: torch.Tensor) -> None:
    """A parameter as x: no autograd graph through the chain (it would grow with every step, and across warm
    calls); a grad_fn that differentiates the loss itself gives the same estimate as the closed-form gradient."""

    def autograd_grad(points: torch.Tensor) -> torch.Tensor:
        leaf = points.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(quad3.loss(leaf).sum(), leaf)
        return grad

    parameter = x3.clone().requires_grad_(True)
    estimator = LocalEntropyEstimator(autograd_grad, 2.0, SGLD(0.05, temperature=0.0), 30, warm_start=True)
    for _ in range(2):
        result = estimator.estimate(parameter, 2)
        assert not result.grad.requires_grad and not result.chain_grads.requires_grad
        assert result.draws is not None and not result.draws.requires_grad
    assert parameter.grad is None and torch.equal(parameter.detach(), x3)
    reference = LocalEntropyEstimator(quad3.grad, 2.0, SGLD(0.05, temperature=0.0), 60, averaging=1.0)
    torch.testing.assert_close(result.draws[:, -1], reference.estimate(x3, 2).draws[:, -1])


def test_grad_fn_is_called_with_all_chains_and_x_is_left_alone(quad3: Quadratic, x3: torch.Tensor) -> None:
    shapes = []

    def grad_fn(points: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(points.shape))
        return quad3.grad(points)

    x = x3.clone()
    LocalEntropyEstimator(grad_fn, 2.0, SGLD(0.05), 7).estimate(x, 5, gen(10))
    assert shapes == [(5, 3)] * 7
    assert torch.equal(x, x3)


# --------------------------------------------------------------------------------------------------------
# Warm starts
# --------------------------------------------------------------------------------------------------------


def test_warm_start_continues_by_hand() -> None:
    estimator = gradient_descent_estimator(3, warm_start=True)
    first = estimator.estimate(X1)
    second = estimator.estimate(X1)
    assert first.draws[0, :, 0].tolist() == pytest.approx(GD_TRAJECTORY[:3], rel=1e-12)
    assert second.draws[0, :, 0].tolist() == pytest.approx(GD_TRAJECTORY[3:], rel=1e-12)
    # a new x moves the potential, not the chain: from 0.781, grad U = 2 (0.781) - 1 + (0.781 - 0.5) = 0.843
    estimator.reset()
    estimator.estimate(X1)
    moved = estimator.estimate(torch.tensor([0.5], dtype=DTYPE))
    assert moved.draws[0, 0, 0].item() == pytest.approx(0.781 - 0.0843, rel=1e-12)


def test_cold_start_reset_and_new_chain_count_restart_at_x() -> None:
    cold = gradient_descent_estimator(3)
    assert cold.estimate(X1).draws[0, 0, 0].item() == pytest.approx(0.9)
    assert cold.estimate(X1).draws[0, 0, 0].item() == pytest.approx(0.9)

    warm = gradient_descent_estimator(3, warm_start=True)
    warm.estimate(X1)
    warm.reset()
    assert warm.estimate(X1).draws[0, 0, 0].item() == pytest.approx(0.9)
    # a different number of chains cannot continue: all start at x
    restarted = warm.estimate(X1, n_chains=2)
    assert restarted.draws[:, 0, 0].tolist() == pytest.approx([0.9, 0.9])
    # a different dtype restarts too
    assert warm.estimate(X1.float(), n_chains=2).draws[:, 0, 0].tolist() == pytest.approx([0.9, 0.9])


@pytest.mark.parametrize("name", TESTED_SAMPLERS)
def test_two_warm_calls_equal_one_long_call(quad3: Quadratic, x3: torch.Tensor, name: str) -> None:
    """The sampler's whole state (SGHMC's velocity, pSGLD's square average) carries over: two warm calls of 5
    steps with one generator draw exactly what one call of 10 steps draws."""
    gamma = 2.0
    sampler = sampler_for(name, quad3, gamma, x3)
    generator = gen(11)
    warm = LocalEntropyEstimator(quad3.grad, gamma, sampler, 5, warm_start=True)
    parts = [warm.estimate(x3, 2, generator).draws for _ in range(2)]
    whole = LocalEntropyEstimator(quad3.grad, gamma, sampler, 10).estimate(x3, 2, gen(11)).draws
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "factor", "averaging"), [("paper", 0.5, 0.75), ("authors-sgld", 1.0, 0.25)])
def test_presets(quad3: Quadratic, preset: str, factor: float, averaging: float) -> None:
    eps = 3e-2
    estimator = LocalEntropyEstimator.from_preset(
        preset, quad3.grad, 2.0, step_size=0.1, noise_scale=eps, n_steps=20, burn_in=2, warm_start=True
    )
    assert isinstance(estimator.sampler, SGLD)
    assert estimator.sampler.step_size == 0.1
    assert estimator.temperature == pytest.approx(factor * eps**2, rel=1e-15)
    assert estimator.sampler.temperature == estimator.temperature
    assert estimator.averaging == averaging
    assert estimator.gamma == 2.0 and estimator.n_steps == 20 and estimator.burn_in == 2 and estimator.warm_start


def test_unknown_preset_lists_both_names(quad3: Quadratic) -> None:
    with pytest.raises(ValueError, match=r"'paper'.*'authors-sgld'|'authors-sgld'.*'paper'"):
        LocalEntropyEstimator.from_preset("lua", quad3.grad, 1.0, step_size=0.1, noise_scale=1e-3, n_steps=5)
    # the estimator's former name of "authors-sgld" is refused with its new name, never run as the optimizer's
    with pytest.raises(ValueError, match=r"now called 'authors-sgld'"):
        LocalEntropyEstimator.from_preset("authors", quad3.grad, 1.0, step_size=0.1, noise_scale=1e-3, n_steps=5)
    with pytest.raises(ValueError, match="noise_scale"):
        LocalEntropyEstimator.from_preset("paper", quad3.grad, 1.0, step_size=0.1, noise_scale=-1.0, n_steps=5)


def test_authors_convention_doubles_the_draw_variance(quad3: Quadratic, x3: torch.Tensor) -> None:
    """At the same eps the authors' code samples at T = eps^2, the paper at eps^2 / 2. With the same noise the
    deviations from the noiseless path differ by exactly sqrt(2); with independent noise the mean of
    ||x' - m||^2 (the trace of the stationary covariance, linear in T) has ratio 2 within z * its MCSE
    (delta method on the two ArviZ MCSEs)."""
    gamma, eps, n_steps, burn_in, n_chains = 2.0, 1.0, 3000, 300, 16
    h = 0.1 * quad3.max_stable_step(gamma)

    def run(preset: str, seed: int, noise_scale: float = eps) -> EstimateResult:
        estimator = LocalEntropyEstimator.from_preset(
            preset, quad3.grad, gamma, step_size=h, noise_scale=noise_scale, n_steps=n_steps, burn_in=burn_in
        )
        return estimator.estimate(x3, n_chains, gen(seed))

    noiseless = run("paper", 0, noise_scale=0.0).draws
    paper, authors = run("paper", 12).draws, run("authors-sgld", 12).draws
    torch.testing.assert_close(authors - noiseless, math.sqrt(2) * (paper - noiseless), rtol=1e-9, atol=1e-12)

    m = quad3.gibbs_mean(x3, gamma)
    spread = {}
    for preset, seed in (("paper", 13), ("authors-sgld", 14)):
        squared = (run(preset, seed).draws - m).square().sum(-1).numpy()  # (chains, draws)
        spread[preset] = (squared.mean(), float(arviz_stats.mcse(squared, method="mean")))
    (paper_mean, paper_se), (authors_mean, authors_se) = spread["paper"], spread["authors-sgld"]
    ratio = authors_mean / paper_mean
    ratio_se = ratio * math.hypot(paper_se / paper_mean, authors_se / authors_mean)
    assert abs(ratio - 2.0) <= bonferroni_z(1) * ratio_se, (ratio, ratio_se)


# --------------------------------------------------------------------------------------------------------
# Gaussian smoothing
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quad5() -> tuple[Quadratic, torch.Tensor]:
    q = Quadratic.random(5, condition=10.0, n_negative=2, seed=31)
    return q, torch.randn(5, generator=gen(32), dtype=DTYPE)


@pytest.mark.parametrize(("order", "n_samples"), [(1, 4000), (0, 40_000)])
def test_gaussian_smoothing_estimates_grad_f(quad5: tuple[Quadratic, torch.Tensor], order: int, n_samples: int) -> None:
    """grad f_sigma = grad f on a quadratic; the per-sample terms are i.i.d., so their SE gives a t-test
    (order 1: exactly Gaussian; order 0: a mean of 40000 terms, well inside the CLT)."""
    q, x = quad5
    sigma = 0.5
    fn = {"grad_fn": q.grad} if order == 1 else {"loss_fn": q.loss}
    estimator = GaussianSmoothingEstimator(sigma, n_samples, order=order, **fn)
    result = estimator.estimate(x, generator=gen(33 + order))
    assert result.grad.shape == (5,) and result.chain_grads.shape == (n_samples, 5)
    assert result.draws is not None and result.draws.shape == (n_samples, 1, 5)
    assert result.grad_evals == (n_samples if order == 1 else n_samples + 1)
    assert result.seconds > 0
    se = standard_error(result.chain_grads)
    t = bonferroni_t(5, n_samples - 1)
    assert ((result.grad - q.smoothed_grad(x, sigma)).abs() <= t * se).all(), (result.grad - q.grad(x)) / se
    # the per-sample terms are the documented ones, rebuilt from the perturbed points
    points = result.draws[:, 0]
    if order == 1:
        torch.testing.assert_close(result.chain_grads, q.grad(points))
    else:
        xi = (points - x) / sigma
        torch.testing.assert_close(result.chain_grads, xi * ((q.loss(points) - q.loss(x)) / sigma)[:, None])
    # the spread of the points is sigma
    assert float(((points - x) / sigma).var()) == pytest.approx(1.0, abs=6 * math.sqrt(2 / points.numel()))


def test_gaussian_smoothing_needs_the_right_function(quad5: tuple[Quadratic, torch.Tensor]) -> None:
    q, _ = quad5
    with pytest.raises(ValueError, match="order=0 needs loss_fn"):
        GaussianSmoothingEstimator(0.1, 10, grad_fn=q.grad, order=0)
    with pytest.raises(ValueError, match="order=1 needs grad_fn"):
        GaussianSmoothingEstimator(0.1, 10, loss_fn=q.loss, order=1)
    with pytest.raises(ValueError, match="order=1 needs grad_fn"):
        GaussianSmoothingEstimator(0.1, 10, grad_fn="not callable")  # type: ignore[arg-type]
    for order in (2, -1):
        with pytest.raises(ValueError, match="order must be 0"):
            GaussianSmoothingEstimator(0.1, 10, grad_fn=q.grad, loss_fn=q.loss, order=order)
    with pytest.raises(ValueError, match="order"):
        GaussianSmoothingEstimator(0.1, 10, grad_fn=q.grad, order=1.0)  # type: ignore[arg-type]
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            GaussianSmoothingEstimator(sigma, 10, grad_fn=q.grad)
    for n_samples in (0, -3, 2.5):
        with pytest.raises(ValueError, match="n_samples"):
            GaussianSmoothingEstimator(0.1, n_samples, grad_fn=q.grad)  # type: ignore[arg-type]


def test_gaussian_smoothing_checks_what_the_functions_return(quad5: tuple[Quadratic, torch.Tensor]) -> None:
    q, x = quad5
    bad_grad = GaussianSmoothingEstimator(0.1, 4, grad_fn=lambda p: p[..., :-1])
    with pytest.raises(ValueError, match=r"shaped like its input \(4, 5\), got \(4, 4\)"):
        bad_grad.estimate(x, generator=gen(0))
    bad_loss = GaussianSmoothingEstimator(0.1, 4, loss_fn=lambda p: q.loss(p)[:-1], order=0)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        bad_loss.estimate(x, generator=gen(0))
    with pytest.raises(ValueError, match="floating-point"):
        GaussianSmoothingEstimator(0.1, 4, grad_fn=q.grad).estimate(torch.zeros(5, dtype=torch.int64))


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf"), -float("inf")])
def test_gamma_must_be_positive_and_finite(quad3: Quadratic, gamma: float) -> None:
    with pytest.raises(ValueError, match="gamma"):
        LocalEntropyEstimator(quad3.grad, gamma, SGLD(0.1), 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": -5}, "n_steps"),
        ({"n_steps": 2.0}, "n_steps"),
        ({"n_steps": 10, "burn_in": 10}, "burn_in"),
        ({"n_steps": 10, "burn_in": 11}, "burn_in"),
        ({"n_steps": 10, "burn_in": -1}, "burn_in"),
        ({"averaging": 0.0}, "averaging"),
        ({"averaging": -0.25}, "averaging"),
        ({"averaging": 1.5}, "averaging"),
        ({"averaging": float("nan")}, "averaging"),
        ({"averaging": "exponential"}, "averaging"),
        ({"averaging": "Uniform"}, "averaging"),
        ({"averaging": True}, "averaging"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_estimator_refuses_bad_settings(quad3: Quadratic, kwargs: dict, match: str) -> None:
    arguments = {"n_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        LocalEntropyEstimator(quad3.grad, 1.0, SGLD(0.1), **arguments)


def test_estimator_accepts_the_boundary_settings(quad3: Quadratic) -> None:
    assert LocalEntropyEstimator(quad3.grad, 1.0, SGLD(0.1), 10, averaging=1.0).averaging == 1.0
    assert LocalEntropyEstimator(quad3.grad, 1.0, SGLD(0.1), 10, burn_in=9).burn_in == 9
    assert LocalEntropyEstimator(quad3.grad, 1.0, SGLD(0.1), 1).n_steps == 1


@pytest.mark.parametrize("sampler", [object(), "sgld", SGLD, torch.optim.SGD])
def test_sampler_must_be_a_sampler_instance(quad3: Quadratic, sampler: object) -> None:
    with pytest.raises(TypeError, match="Sampler"):
        LocalEntropyEstimator(quad3.grad, 1.0, sampler, 10)  # type: ignore[arg-type]


def test_grad_fn_must_be_callable_and_shape_preserving(quad3: Quadratic, x3: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="grad_fn"):
        LocalEntropyEstimator("grad", 1.0, SGLD(0.1), 10)  # type: ignore[arg-type]
    wrong_shape = LocalEntropyEstimator(lambda p: p.sum(-1), 1.0, SGLD(0.1), 10)
    with pytest.raises(ValueError, match=r"shaped like its input \(2, 3\), got \(2,\)"):
        wrong_shape.estimate(x3, 2)
    not_a_tensor = LocalEntropyEstimator(lambda p: p.numpy(), 1.0, SGLD(0.1), 10)
    with pytest.raises(ValueError, match="got ndarray"):
        not_a_tensor.estimate(x3, 2)


@pytest.mark.parametrize(
    ("x", "match"),
    [
        ([0.0, 0.0, 0.0], "x must be a tensor"),
        (np.zeros(3), "x must be a tensor"),
        (torch.tensor(1.0, dtype=DTYPE), "at least one dimension"),
        (torch.zeros(3, dtype=torch.int64), "floating-point"),
        (torch.zeros(3, dtype=torch.int32), "floating-point"),
    ],
)
def test_x_must_be_a_floating_point_tensor(quad3: Quadratic, x: object, match: str) -> None:
    estimator = LocalEntropyEstimator(quad3.grad, 1.0, SGLD(0.1), 5)
    with pytest.raises(ValueError, match=match):
        estimator.estimate(x)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_chains", [0, -1, 1.5])
def test_n_chains_must_be_a_positive_integer(quad3: Quadratic, x3: torch.Tensor, n_chains: object) -> None:
    with pytest.raises(ValueError, match="n_chains"):
        LocalEntropyEstimator(quad3.grad, 1.0, SGLD(0.1), 5).estimate(x3, n_chains)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------
# Property-based
# --------------------------------------------------------------------------------------------------------


@settings(deadline=None)
@given(
    dim=st.integers(2, 5),
    condition=st.floats(1.0, 50.0),
    negative_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    log10_gamma=st.floats(4.0, 6.0),
)
def test_large_gamma_estimate_and_closed_form_approach_grad_f(
    dim: int, condition: float, negative_fraction: float, seed: int, log10_gamma: float
) -> None:
    """gamma in [1e4, 1e6]: the closed form is within (||A|| / gamma) / (1 - ||A|| / gamma) of grad f (relative),
    and the noiseless estimator (h = 1 / lambda_max(M), last iterate) reaches the closed form within
    gamma rho^n ||x - prox|| plus rounding (gamma times a few ulps of x per step)."""
    q = Quadratic.random(dim, condition, n_negative=round(negative_fraction * dim), seed=seed)
    gamma = 10.0**log10_gamma
    x = torch.randn(dim, generator=gen(seed), dtype=DTYPE)
    grad_f, closed = q.grad(x), q.local_entropy_grad(x, gamma)
    ratio = condition / gamma  # ||A|| = condition
    assert float((closed - grad_f).norm()) <= ratio / (1 - ratio) * float(grad_f.norm()) * (1 + 1e-9) + 1e-12

    n_steps = 20
    h = 0.5 * q.max_stable_step(gamma)
    result = LocalEntropyEstimator(q.grad, gamma, SGLD(h, temperature=0.0), n_steps, averaging=1.0).estimate(x)
    prox = q.proximal_point(x, gamma)
    rho = float((1 - h * (q.eigenvalues + gamma)).abs().max())
    rounding = 8 * n_steps * EPS * gamma * (float(x.norm()) + float(prox.norm()) + 1)
    assert float((result.grad - closed).norm()) <= gamma * rho**n_steps * float((x - prox).norm()) + rounding


@settings(deadline=None)
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 6)),
        st.tuples(st.integers(1, 4), st.integers(1, 4)),
    ),
    n_chains=st.integers(1, 4),
    n_steps=st.integers(1, 8),
    burn_fraction=st.floats(0.0, 0.99),
    name=st.sampled_from(TESTED_SAMPLERS),
    averaging=st.sampled_from(["uniform", 0.25, 0.75, 1.0]),
    keep_draws=st.booleans(),
)
def test_result_shapes(
    shape: tuple[int, ...],
    n_chains: int,
    n_steps: int,
    burn_fraction: float,
    name: str,
    averaging: str | float,
    keep_draws: bool,
) -> None:
    d = shape[-1]
    q = Quadratic.random(d, 1.0 if d == 1 else 3.0, seed=d)
    burn_in = int(burn_fraction * n_steps)
    x = torch.randn(shape, generator=gen(0), dtype=DTYPE)
    estimator = LocalEntropyEstimator(
        q.grad,
        1.0,
        sampler_for(name, q, 1.0, x, temperature=0.5),
        n_steps,
        burn_in=burn_in,
        averaging=averaging,
        keep_draws=keep_draws,
    )
    result = estimator.estimate(x, n_chains, gen(1))
    assert result.grad.shape == shape and result.grad.dtype == DTYPE
    assert result.chain_grads.shape == (n_chains, *shape)
    assert torch.isfinite(result.chain_grads).all()
    if keep_draws:
        assert result.draws is not None and result.draws.shape == (n_chains, n_steps - burn_in, *shape)
    else:
        assert result.draws is None
    assert result.grad_evals == n_chains * n_steps * getattr(estimator.sampler, "gradients_per_step", 1)
