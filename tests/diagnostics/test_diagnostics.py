"""Diagnostics: estimator quality against hand-computed values, ArviZ chain diagnostics on series with a known
ESS, the DataTree export, and the IMQ kernel Stein discrepancy against its closed-form expectation and autograd.

Statistical tolerances are stated next to each assertion, with the Monte Carlo standard error they come from.
"""

from __future__ import annotations

import itertools
import math

import arviz_stats
import numpy as np
import pytest
import torch
import xarray as xr

from localentropy.diagnostics import (
    ChainSummary,
    chain_summary,
    estimator_quality,
    exact_draws_mse,
    imq_ksd,
    per_coordinate,
    to_datatree,
)

pytestmark = pytest.mark.usefixtures("single_thread")  # small tensors: one intra-op thread


# ----------------------------------------------------------------------------------------------------------------
# estimator_quality: hand-computed values
# ----------------------------------------------------------------------------------------------------------------

# R = 3 replicates of a 2-D estimate, truth g = (1, 1):
#   mean = (2, 3), bias = (1, 2), ||bias||^2 (raw) = 5
#   centred rows (-1, -1), (1, -1), (0, 2): sum of squares 8, unbiased variance 8 / (R - 1) = 4
#   corrected ||bias||^2 = 5 - 4 / 3 = 11 / 3
#   squared errors ||g_r - g||^2 = 1, 5, 17: MSE = 23 / 3 = 11 / 3 + 4 (corrected bias^2 + variance)
#   covariance of the mean: centred^T centred / (R - 1) / R = diag(2, 6) / 6 = diag(1/3, 1)
#   MCSE of ||bias|| (delta method): sqrt(b^T C b / ||b||^2) = sqrt((1/3 + 4) / 5) = sqrt(13 / 15)
ESTIMATES = np.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
TRUTH = np.array([1.0, 1.0])


def test_quality_hand_computed_values():
    q = estimator_quality(ESTIMATES, TRUTH, grad_evals=8, seconds=0.5)
    assert q.replicates == 3
    assert q.bias == pytest.approx([1.0, 2.0])
    assert q.bias_norm_raw == pytest.approx(math.sqrt(5.0))
    assert q.bias_norm == pytest.approx(math.sqrt(11.0 / 3.0))
    assert q.variance == pytest.approx(4.0)
    assert q.mse == pytest.approx(23.0 / 3.0)
    assert q.relative_mse == pytest.approx(23.0 / 3.0 / 2.0)
    assert q.truth_norm == pytest.approx(math.sqrt(2.0))
    assert q.cosine == pytest.approx(5.0 / math.sqrt(13.0 * 2.0))
    assert q.bias_norm_mcse == pytest.approx(math.sqrt(13.0 / 15.0))
    assert q.mse_mcse == pytest.approx(np.std([1.0, 5.0, 17.0], ddof=1) / math.sqrt(3.0))
    assert q.efficiency_ratio is None  # no gamma / Gibbs covariance given
    assert q.grad_evals == 8.0
    assert q.seconds == 0.5
    assert set(q.as_dict()) >= {"bias", "bias_norm", "mse", "efficiency_ratio", "cosine"}


def test_quality_mse_identity_corrected_bias_plus_variance():
    """mean ||g_r - g||^2 = ||bias||^2 - variance / R + variance exactly, for any replicates."""
    rng = np.random.default_rng(0)
    for n_rep, d in [(2, 1), (5, 3), (40, 7)]:
        estimates = rng.normal(0.3, 2.0, size=(n_rep, d))
        truth = rng.normal(size=d)
        q = estimator_quality(estimates, truth, grad_evals=10)
        corrected_sq = q.bias_norm_raw**2 - q.variance / n_rep
        assert q.mse == pytest.approx(corrected_sq + q.variance, rel=1e-12)
        assert q.mse == pytest.approx(np.mean(((estimates - truth) ** 2).sum(axis=1)), rel=1e-12)
        if corrected_sq > 0:
            assert q.bias_norm == pytest.approx(math.sqrt(corrected_sq), rel=1e-12)
            assert q.mse == pytest.approx(q.bias_norm**2 + q.variance, rel=1e-12)


def test_quality_bias_correction_clips_at_zero():
    # mean 0.25, raw bias^2 0.0625 < variance / R = 1.125 / 2: the corrected bias is clipped to 0
    q = estimator_quality(np.array([[1.0, 0.0], [-0.5, 0.0]]), np.zeros(2), grad_evals=1)
    assert q.bias_norm_raw == pytest.approx(0.25)
    assert q.variance == pytest.approx(1.125)
    assert q.bias_norm == 0.0


def test_quality_efficiency_ratio_and_exact_draws_mse():
    gibbs_cov = np.diag([0.5, 1.5])  # trace 2
    assert exact_draws_mse(2.0, gibbs_cov, 8) == pytest.approx(4.0 * 2.0 / 8.0)
    q = estimator_quality(ESTIMATES, TRUTH, grad_evals=8, gamma=2.0, gibbs_cov=gibbs_cov)
    assert q.efficiency_ratio == pytest.approx((23.0 / 3.0) / 1.0)
    # tensors are accepted as well, and (R, ...) estimates are flattened per replicate
    qt = estimator_quality(
        torch.tensor(ESTIMATES).reshape(3, 1, 2),
        torch.tensor(TRUTH).reshape(1, 2),
        grad_evals=8,
        gamma=2.0,
        gibbs_cov=torch.tensor(gibbs_cov),
    )
    assert qt.mse == pytest.approx(q.mse) and qt.efficiency_ratio == pytest.approx(q.efficiency_ratio)


def test_quality_zero_truth_and_degenerate_reference():
    q = estimator_quality(ESTIMATES, np.zeros(2), grad_evals=8, gamma=1.0, gibbs_cov=np.zeros((2, 2)))
    assert q.relative_mse == math.inf
    assert math.isnan(q.cosine)
    assert math.isnan(q.efficiency_ratio)  # a zero-variance Gibbs measure has no exact-draws reference


@pytest.mark.parametrize(
    ("estimates", "truth", "match"),
    [
        (np.ones((1, 3)), np.ones(3), "at least 2 replicates"),
        (np.ones((4, 3)), np.ones(2), "coordinates"),
        (np.ones((4, 2, 2)), np.ones(3), "coordinates"),
        (np.float64(1.0), np.ones(1), "at least one dimension"),
        (np.ones((4, 1)), np.float64(1.0), "at least one dimension"),
    ],
)
def test_quality_errors(estimates, truth, match):
    with pytest.raises(ValueError, match=match):
        estimator_quality(estimates, truth, grad_evals=1)


def test_efficiency_ratio_of_exact_iid_draws_is_one():
    """R replicates of gamma (x - mean of n exact draws from N(m, Sigma)): E[MSE] = gamma^2 tr(Sigma) / n exactly.

    The ratio is MSE / reference, so its Monte Carlo standard error is mse_mcse / reference (here about 2 %);
    we allow 4 of them.
    """
    rng = np.random.default_rng(1)
    d, n, n_rep, gamma = 3, 50, 2000, 2.0
    root = rng.normal(size=(d, d))
    sigma = root @ root.T / d + 0.1 * np.eye(d)
    chol = np.linalg.cholesky(sigma)
    x, m = rng.normal(size=d), rng.normal(size=d)
    draws = m + rng.standard_normal((n_rep, n, d)) @ chol.T
    estimates = gamma * (x - draws.mean(axis=1))
    q = estimator_quality(estimates, gamma * (x - m), grad_evals=n, gamma=gamma, gibbs_cov=sigma)
    reference = exact_draws_mse(gamma, sigma, n)
    assert abs(q.efficiency_ratio - 1.0) < 4 * q.mse_mcse / reference
    assert q.mse_mcse / reference < 0.05  # the check above is informative
    # unbiased: the raw bias norm is noise of size sqrt(tr Cov(mean)); the corrected one is ~0
    assert q.bias_norm_raw < 4 * math.sqrt(q.variance / n_rep)


# ----------------------------------------------------------------------------------------------------------------
# Chains: ESS, R-hat, MCSE (arviz-stats)
# ----------------------------------------------------------------------------------------------------------------


def ar1(rng: np.random.Generator, rho: float, n_chains: int, n_draws: int, d: int) -> np.ndarray:
    """Stationary Gaussian AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) e_t, unit marginal variance."""
    x = np.empty((n_chains, n_draws, d))
    x[:, 0] = rng.standard_normal((n_chains, d))
    noise = np.sqrt(1.0 - rho**2) * rng.standard_normal((n_chains, n_draws, d))
    for t in range(1, n_draws):
        x[:, t] = rho * x[:, t - 1] + noise[:, t]
    return x


# Tail ESS (5 % / 95 % quantiles) of a Gaussian AR(1) relative to its bulk ESS, tau_mean / tau_indicator, with
# tau_indicator = 1 + 2 sum_k corr(1{x_0 <= q}, 1{x_k <= q}) from bivariate normal orthant probabilities at
# correlation rho^k (computed with scipy.stats.multivariate_normal; q = Phi^-1(0.05)).
TAIL_OVER_BULK = {0.5: 1.779, 0.9: 2.217}


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_of_ar1_chains(rho):
    """4 chains x 4000 draws of AR(1): ESS of the mean = N (1 - rho) / (1 + rho) (5333 at 0.5, 842 at 0.9).

    Tolerance from a calibration over 50 seeds (8 independent coordinates each): the ESS of one coordinate
    scatters by 4 % (rho = 0.5) and 9 % (rho = 0.9) around the truth, the average over 8 coordinates by 1.7 %
    and 3.4 %; 15 % on the average is > 4 standard deviations. Tail ESS (min over the two tails, so biased ~3-5 %
    low) scattered by 1.6 % / 3.4 % on the average: 20 % allowed. The minimum over 8 coordinates is allowed 40 %.
    """
    n_chains, n_draws, d = 4, 4000, 8
    draws = ar1(np.random.default_rng(12345), rho, n_chains, n_draws, d)
    expected = n_chains * n_draws * (1 - rho) / (1 + rho)
    values = per_coordinate(draws)
    assert {k: v.shape for k, v in values.items()} == {k: (d,) for k in ("ess_bulk", "ess_tail", "rhat", "mcse_mean")}
    assert values["ess_bulk"].mean() == pytest.approx(expected, rel=0.15)
    assert values["ess_tail"].mean() == pytest.approx(expected * TAIL_OVER_BULK[rho], rel=0.20)
    # MCSE of the mean = sd / sqrt(ESS), sd = 1
    assert values["mcse_mean"].mean() == pytest.approx(1.0 / math.sqrt(expected), rel=0.15)
    summary = chain_summary(torch.from_numpy(draws))  # tensors as well as arrays
    assert isinstance(summary, ChainSummary)
    assert (summary.n_chains, summary.n_draws) == (n_chains, n_draws)
    assert summary.min_ess_bulk == pytest.approx(values["ess_bulk"].min())
    assert 0.6 * expected < summary.min_ess_bulk <= values["ess_bulk"].mean()
    assert summary.min_ess_tail == pytest.approx(values["ess_tail"].min())
    assert summary.max_mcse_mean == pytest.approx(values["mcse_mean"].max())
    assert summary.max_rhat < 1.01
    assert summary.tail_prob == (0.05, 0.95)
    q = summary.ess_bulk_quantiles
    assert q["q05"] <= q["q50"] <= q["q95"]
    assert summary.as_dict()["min_ess_bulk"] == summary.min_ess_bulk


def test_rhat_mixed_and_shifted_chains():
    rng = np.random.default_rng(7)
    mixed = rng.standard_normal((4, 1000, 3))
    # i.i.d. chains: R-hat - 1 is O(1 / n_draws)
    assert chain_summary(mixed).max_rhat < 1.01
    shifted = mixed + np.arange(4.0)[:, None, None]  # chain means 0, 1, 2, 3 with unit within-chain sd
    rhat = per_coordinate(shifted)["rhat"]
    assert (rhat > 1.1).all()
    assert chain_summary(shifted).max_rhat > 1.1


def test_chain_summary_single_chain_and_errors():
    draws = np.random.default_rng(0).standard_normal((1, 200, 2))
    summary = chain_summary(draws)
    assert math.isnan(summary.max_rhat)  # R-hat needs two chains
    assert summary.min_ess_bulk > 0
    with pytest.raises(ValueError, match="n_chains, n_draws"):
        chain_summary(np.zeros(10))
    with pytest.raises(ValueError, match="at least 4 draws"):
        chain_summary(np.zeros((2, 3, 1)))


def test_chain_summary_flattens_trailing_dimensions():
    draws = np.random.default_rng(3).standard_normal((2, 100, 2, 3))
    assert per_coordinate(draws)["ess_bulk"].shape == (6,)


def test_to_datatree_accepted_by_arviz():
    draws = np.random.default_rng(0).standard_normal((2, 50, 3))
    tree = to_datatree(torch.from_numpy(draws), attrs={"estimator": "sgld"})
    assert isinstance(tree, xr.DataTree)
    assert "posterior" in tree.children
    x = tree["posterior"]["x"]
    assert x.dims == ("chain", "draw", "x_dim_0")
    assert x.shape == (2, 50, 3)
    np.testing.assert_allclose(x.values, draws)
    assert tree.attrs["estimator"] == "sgld"
    summary = arviz_stats.summary(tree)
    assert len(summary) == 3
    assert {"ess_bulk", "r_hat"} <= set(summary.columns)
    np.testing.assert_allclose(np.asarray(arviz_stats.ess(tree)["x"]), per_coordinate(draws)["ess_bulk"])


def test_to_datatree_dict_and_errors():
    rng = np.random.default_rng(0)
    tree = to_datatree({"a": rng.standard_normal((2, 10)), "b": rng.standard_normal((2, 10, 2, 2))})
    post = tree["posterior"]
    assert post["a"].dims == ("chain", "draw")
    assert post["b"].dims == ("chain", "draw", "b_dim_0", "b_dim_1")
    with pytest.raises(ValueError, match="n_chains, n_draws"):
        to_datatree(np.zeros(5))


# ----------------------------------------------------------------------------------------------------------------
# Kernel Stein discrepancy
# ----------------------------------------------------------------------------------------------------------------


def _normal_draws(seed: int, n: int, d: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_ksd_exact_draws_scale_like_one_over_sqrt_n():
    """For x_i ~ N(0, I_d), s(x) = -x, c = 1, beta = -1/2: E[KSD^2] = E[k0(x, x)] / n = 2 d / n exactly.

    The V-statistic is (1/n^2) [sum_i k0(x_i, x_i) + sum_{i != j} k0(x_i, x_j)]; off-diagonal terms have mean 0
    under the target, and k0(x, x) = ||x||^2 + d (r = 0: k = 1, the gradient terms vanish, the trace term is
    -2 beta d = d). So n KSD^2 averages to 2d whatever n: KSD falls like 1/sqrt(n). n KSD^2 has a standard
    deviation of ~2 (n = 250) and ~1.5 (n = 2000) over seeds: 4 standard errors of the mean are allowed.
    """
    d = 2
    scaled = {}
    for n, reps in [(250, 16), (2000, 4)]:
        values = np.array([n * imq_ksd(x, -x) ** 2 for x in (_normal_draws(s, n, d) for s in range(reps))])
        se = values.std(ddof=1) / math.sqrt(reps)
        assert abs(values.mean() - 2 * d) < 4 * se, (n, values.mean(), se)
        scaled[n] = values.mean()
    ksd_250 = math.sqrt(scaled[250] / 250)
    ksd_2000 = math.sqrt(scaled[2000] / 2000)
    assert ksd_2000 < ksd_250
    assert ksd_250 / ksd_2000 == pytest.approx(math.sqrt(8.0), rel=0.35)


def test_ksd_grows_with_mean_shift_and_scale_bias():
    z = _normal_draws(0, 500, 2)
    shifts = [0.0, 0.25, 0.5, 1.0, 2.0]
    by_shift = [imq_ksd(z + s, -(z + s)) for s in shifts]
    assert all(a < b for a, b in itertools.pairwise(by_shift)), by_shift
    assert by_shift[0] < 0.15 < by_shift[2]  # exact draws: ~sqrt(2 d / n) = 0.09
    exact = imq_ksd(z, -z)
    too_wide = [imq_ksd(z * s, -(z * s)) for s in (1.5, 2.0)]
    assert exact < too_wide[0] < too_wide[1]
    assert imq_ksd(z * 0.5, -(z * 0.5)) > exact  # too narrow as well


def test_ksd_invariances_and_score_callable():
    x = _normal_draws(1, 300, 3) * 1.2 + 0.1
    score = -x
    base = imq_ksd(x, score)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    assert imq_ksd(x[perm], score[perm]) == pytest.approx(base, rel=1e-10)
    assert imq_ksd(x, score, block_size=7) == pytest.approx(base, rel=1e-10)
    assert imq_ksd(x, lambda y: -y) == pytest.approx(base, rel=1e-12)
    # (n_chains, n_draws, d) draws are pooled
    assert imq_ksd(x.reshape(3, 100, 3), score.reshape(3, 100, 3)) == pytest.approx(base, rel=1e-12)
    assert imq_ksd(x.float(), score.float()) == pytest.approx(base, rel=1e-5)


@pytest.mark.parametrize("beta", [0.0, -1.0, 0.5, -1.5, float("nan")])
def test_ksd_beta_outside_open_interval(beta):
    x = _normal_draws(0, 10, 1)
    with pytest.raises(ValueError, match="beta"):
        imq_ksd(x, -x, beta=beta)


@pytest.mark.parametrize("c", [0.0, -1.0, float("inf")])
def test_ksd_c_must_be_positive(c):
    x = _normal_draws(0, 10, 1)
    with pytest.raises(ValueError, match="c must"):
        imq_ksd(x, -x, c=c)


def _stein_kernel_autograd(x, y, sx, sy, c, beta):
    """k0(x, y) = s(x).s(y) k + s(x).grad_y k + s(y).grad_x k + sum_i d2k / dx_i dy_i, by autograd."""
    x = x.clone().requires_grad_(True)
    y = y.clone().requires_grad_(True)
    k = (c**2 + ((x - y) ** 2).sum()) ** beta
    dk_dx, dk_dy = torch.autograd.grad(k, (x, y), create_graph=True)
    trace = sum(torch.autograd.grad(dk_dx[i], y, retain_graph=True)[0][i] for i in range(x.numel()))
    return float((sx @ sy * k + sx @ dk_dy + sy @ dk_dx + trace).detach())


@pytest.mark.parametrize("d", [1, 2])
def test_stein_kernel_matches_autograd(d):
    """KSD^2 of two points = (k0(x1, x1) + 2 k0(x1, x2) + k0(x2, x2)) / 4, with a non-Gaussian score s = -x^3."""
    c, beta = 1.3, -0.3
    x = torch.tensor([[0.4, -1.1], [-0.7, 0.25]], dtype=torch.float64)[:, :d]
    s = -(x**3)
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    expected = sum(_stein_kernel_autograd(x[i], x[j], s[i], s[j], c, beta) for i, j in pairs) / 4
    assert expected > 0
    assert imq_ksd(x, s, c=c, beta=beta) ** 2 == pytest.approx(expected, rel=1e-12)
    # a single point: k0(x, x) = ||s||^2 c^(2 beta) - 2 beta d c^(2 beta - 2)
    one = x[:1]
    diag = float((s[0] ** 2).sum()) * c ** (2 * beta) - 2 * beta * d * c ** (2 * beta - 2)
    assert imq_ksd(one, s[:1], c=c, beta=beta) ** 2 == pytest.approx(diag, rel=1e-12)
