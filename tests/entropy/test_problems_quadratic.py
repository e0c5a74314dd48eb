"""The Quadratic test problem: its closed forms (docs/background.md) against independent computations and Monte Carlo.

Monte Carlo checks use exact draws (the Gibbs measure and the smoothing noise are Gaussian), so their standard
errors are known in closed form, not estimated: each check is a z-test, Bonferroni-corrected over the
comparisons in one test (family level ``tests.stats.FAMILY_LEVEL``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from localentropy.entropy.problems import Problem, Quadratic
from tests.stats import bonferroni_z

DTYPE = torch.float64
EPS = torch.finfo(DTYPE).eps
GAMMA = 3.0  # above the largest negative magnitude (about 1.97) of the indefinite fixture below


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def quad() -> Quadratic:
    """Indefinite: eigenvalue magnitudes log-spaced over [1, 30], the two smallest negative."""
    return Quadratic.random(6, condition=30.0, n_negative=2, seed=7)


@pytest.fixture(scope="module")
def point(quad: Quadratic) -> torch.Tensor:
    return torch.randn(quad.dim, generator=gen(1), dtype=DTYPE)


def numpy_coupled(q: Quadratic, gamma: float) -> np.ndarray:
    return q.A.numpy() + gamma * np.eye(q.dim)


# --------------------------------------------------------------------------------------------------------
# Loss and gradient
# --------------------------------------------------------------------------------------------------------


def test_is_a_problem_with_symmetric_matrix(quad: Quadratic) -> None:
    assert isinstance(quad, Problem)
    assert quad.dim == 6
    assert torch.equal(quad.A, quad.A.T)
    assert quad.A.dtype == DTYPE and quad.b.shape == (6,)


def test_loss_and_grad_are_batched(quad: Quadratic) -> None:
    x = torch.randn(4, 3, quad.dim, generator=gen(2), dtype=DTYPE)
    loss, grad = quad.loss(x), quad.grad(x)
    assert loss.shape == (4, 3) and grad.shape == (4, 3, quad.dim)
    A, b = quad.A.numpy(), quad.b.numpy()
    for i in range(4):
        for j in range(3):
            xi = x[i, j].numpy()
            assert loss[i, j].item() == pytest.approx(0.5 * xi @ A @ xi - b @ xi, rel=1e-12, abs=1e-12)
            np.testing.assert_allclose(grad[i, j].numpy(), A @ xi - b, rtol=1e-12, atol=1e-12)
    assert quad.loss(x[0, 0]).shape == ()
    assert quad.grad(x[0, 0]).shape == (quad.dim,)


def test_grad_equals_autograd_of_loss(quad: Quadratic) -> None:
    x = torch.randn(5, quad.dim, generator=gen(3), dtype=DTYPE, requires_grad=True)
    (autograd,) = torch.autograd.grad(quad.loss(x).sum(), x)
    torch.testing.assert_close(quad.grad(x.detach()), autograd, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------------
# Local entropy in closed form
# --------------------------------------------------------------------------------------------------------


def test_local_entropy_grad_closed_forms(quad: Quadratic) -> None:
    x = torch.randn(7, quad.dim, generator=gen(4), dtype=DTYPE)
    g = quad.local_entropy_grad(x, GAMMA, 0.5)
    assert g.shape == x.shape
    # g = gamma (x - <x'>)
    torch.testing.assert_close(g, GAMMA * (x - quad.gibbs_mean(x, GAMMA, 0.5)), rtol=1e-10, atol=1e-10)
    # g = gamma (A + gamma I)^{-1} (A x - b), solved independently in numpy
    M = numpy_coupled(quad, GAMMA)
    residual = x.numpy() @ quad.A.numpy() - quad.b.numpy()
    np.testing.assert_allclose(g.numpy(), GAMMA * np.linalg.solve(M, residual.T).T, rtol=1e-10, atol=1e-12)
    # <x'> = (A + gamma I)^{-1} (b + gamma x)
    mean = np.linalg.solve(M, (quad.b.numpy() + GAMMA * x.numpy()).T).T
    np.testing.assert_allclose(quad.gibbs_mean(x, GAMMA, 0.5).numpy(), mean, rtol=1e-10, atol=1e-12)


def test_local_entropy_grad_and_mean_do_not_depend_on_temperature(quad: Quadratic, point: torch.Tensor) -> None:
    reference_grad = quad.local_entropy_grad(point, GAMMA)
    reference_mean = quad.gibbs_mean(point, GAMMA)
    for temperature in (0.0, 1e-6, 0.3, 1.0, 250.0):
        assert torch.equal(quad.local_entropy_grad(point, GAMMA, temperature), reference_grad)
        assert torch.equal(quad.gibbs_mean(point, GAMMA, temperature), reference_mean)


def test_gibbs_cov_is_temperature_times_inverse(quad: Quadratic) -> None:
    inverse = np.linalg.inv(numpy_coupled(quad, GAMMA))
    for temperature in (0.0, 0.1, 1.0, 7.5):
        cov = quad.gibbs_cov(GAMMA, temperature)
        assert cov.shape == (quad.dim, quad.dim)
        np.testing.assert_allclose(cov.numpy(), temperature * inverse, rtol=1e-10, atol=1e-14)
    cov = quad.gibbs_cov(GAMMA, 1.0, x=torch.zeros(quad.dim, dtype=DTYPE))  # the same at every x
    torch.testing.assert_close(cov, quad.gibbs_cov(GAMMA, 1.0))
    assert torch.linalg.eigvalsh(cov).min() > 0


def test_proximal_point_minimises_the_coupled_potential(quad: Quadratic, point: torch.Tensor) -> None:
    prox = quad.proximal_point(point, GAMMA)
    torch.testing.assert_close(prox, quad.gibbs_mean(point, GAMMA))
    # grad U(prox) = grad f(prox) + gamma (prox - x) = 0, and M is positive definite, so prox is the minimiser
    grad_u = quad.grad(prox) + GAMMA * (prox - point)
    assert grad_u.norm() <= 1e-10 * (1 + quad.grad(point).norm())


def test_exact_gibbs_draws_match_mean_and_covariance(quad: Quadratic, point: torch.Tensor) -> None:
    """Exact draws from rho(. | x) = N(m, T M^-1): the sample mean and covariance about m agree with the
    closed form within z standard errors, the errors known exactly for Gaussian draws:
    Var(mean_i) = Sigma_ii / n and Var(S_ij) = (Sigma_ij^2 + Sigma_ii Sigma_jj) / n (S about the known mean)."""
    temperature, n = 0.7, 20_000
    mean, cov = quad.gibbs_mean(point, GAMMA, temperature), quad.gibbs_cov(GAMMA, temperature)
    rho = torch.distributions.MultivariateNormal(loc=mean, covariance_matrix=cov)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        draws = rho.sample((n,))
    d = quad.dim
    iu, ju = np.triu_indices(d)
    z = bonferroni_z(d + len(iu) + d)

    sample_mean = draws.mean(0)
    mean_se = (torch.diagonal(cov) / n).sqrt()
    assert ((sample_mean - mean).abs() <= z * mean_se).all(), (sample_mean - mean) / mean_se

    centred = (draws - mean).numpy()
    sample_cov = centred.T @ centred / n
    c = cov.numpy()
    cov_se = np.sqrt((c[iu, ju] ** 2 + c[iu, iu] * c[ju, ju]) / n)
    assert np.all(np.abs(sample_cov[iu, ju] - c[iu, ju]) <= z * cov_se)

    # the local-entropy gradient from the exact draws: gamma (x - mean of draws), with standard error gamma * mean_se
    g = quad.local_entropy_grad(point, GAMMA, temperature)
    assert ((GAMMA * (point - sample_mean) - g).abs() <= z * GAMMA * mean_se).all()


def _large_gamma_bounds(q: Quadratic, gamma: float) -> tuple[float, float]:
    """g - grad f = -(A / gamma)(I + A / gamma)^{-1} grad f: in A's eigenbasis each component of grad f is scaled
    by (lambda / gamma) / (1 + lambda / gamma), so the relative error lies between
    (min |lambda| / gamma) / (1 + ||A|| / gamma) and (||A|| / gamma) / (1 - ||A|| / gamma) (for gamma > ||A||)."""
    eig = q.eigenvalues.abs()
    norm_a, min_a = float(eig.max()), float(eig.min())
    return (min_a / gamma) / (1 + norm_a / gamma), (norm_a / gamma) / (1 - norm_a / gamma)


@settings(deadline=None)
@given(
    dim=st.integers(2, 6),
    condition=st.floats(1.0, 100.0),
    negative_fraction=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
    log10_gamma=st.floats(3.0, 8.0),
)
def test_local_entropy_grad_tends_to_grad_f_at_rate_one_over_gamma(
    dim: int, condition: float, negative_fraction: float, seed: int, log10_gamma: float
) -> None:
    q = Quadratic.random(dim, condition, n_negative=round(negative_fraction * dim), seed=seed)
    gamma = 10.0**log10_gamma  # ||A|| = condition <= 100 < gamma
    x = torch.randn(dim, generator=gen(seed), dtype=DTYPE)
    grad_f = q.grad(x)
    relative = float((q.local_entropy_grad(x, gamma) - grad_f).norm() / grad_f.norm())
    low, high = _large_gamma_bounds(q, gamma)
    rounding = 64 * EPS * condition  # the solve with M = A + gamma I, whose condition number is below 2
    assert low - rounding <= relative <= high + rounding


def test_local_entropy_grad_rate_on_a_fixed_problem(quad: Quadratic, point: torch.Tensor) -> None:
    """gamma * relative error stays between the two constants of the bound as gamma grows: the rate is 1 / gamma."""
    grad_f = quad.grad(point)
    norm_a = float(quad.eigenvalues.abs().max())
    for gamma in (1e2, 1e3, 1e4, 1e5):
        relative = float((quad.local_entropy_grad(point, gamma) - grad_f).norm() / grad_f.norm())
        low, high = _large_gamma_bounds(quad, gamma)
        assert low - 1e-12 <= relative <= high + 1e-12
        assert gamma * relative <= norm_a / (1 - norm_a / gamma) + 1e-9


# --------------------------------------------------------------------------------------------------------
# Gaussian smoothing
# --------------------------------------------------------------------------------------------------------


def test_smoothed_grad_is_grad_f_and_matches_monte_carlo(quad: Quadratic, point: torch.Tensor) -> None:
    """grad f(x + sigma xi) = grad f(x) + sigma A xi: its mean over n draws has covariance sigma^2 A^2 / n."""
    sigma, n = 0.8, 20_000
    for s in (0.0, sigma, 5.0):
        assert torch.equal(quad.smoothed_grad(point, s), quad.grad(point))
    xi = torch.randn(n, quad.dim, generator=gen(6), dtype=DTYPE)
    estimate = quad.grad(point + sigma * xi).mean(0)
    se = sigma * (torch.diagonal(quad.A @ quad.A) / n).sqrt()
    z = bonferroni_z(quad.dim)
    assert ((estimate - quad.smoothed_grad(point, sigma)).abs() <= z * se).all()


def test_smoothed_loss_closed_form_and_monte_carlo(quad: Quadratic, point: torch.Tensor) -> None:
    """f(x + sigma xi) = f(x) + sigma r.xi + sigma^2 xi^T A xi / 2, r = grad f(x): mean f(x) + sigma^2 tr(A) / 2,
    variance sigma^2 ||r||^2 + sigma^4 tr(A^2) / 2 (the two terms are uncorrelated)."""
    sigma, n = 0.6, 40_000
    expected = quad.loss(point) + 0.5 * sigma**2 * torch.trace(quad.A)
    torch.testing.assert_close(quad.smoothed_loss(point, sigma), expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(quad.smoothed_loss(point, 0.0), quad.loss(point))
    xi = torch.randn(n, quad.dim, generator=gen(7), dtype=DTYPE)
    values = quad.loss(point + sigma * xi)
    r = quad.grad(point)
    variance = sigma**2 * r.square().sum() + sigma**4 * torch.trace(quad.A @ quad.A) / 2
    se = float((variance / n).sqrt())
    assert abs(float(values.mean() - quad.smoothed_loss(point, sigma))) <= bonferroni_z(1) * se
    # the sample variance agrees with the formula too (a loose check: its relative error is about sqrt(2 / n)
    # times the kurtosis factor; 10% is over 10 of those standard errors)
    assert float(values.var()) == pytest.approx(float(variance), rel=0.1)


# --------------------------------------------------------------------------------------------------------
# Quadratic.random
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dim", "condition", "n_negative"), [(2, 1.0, 0), (5, 10.0, 0), (20, 100.0, 3), (8, 1e4, 8)])
def test_random_has_the_requested_spectrum(dim: int, condition: float, n_negative: int) -> None:
    q = Quadratic.random(dim, condition, n_negative=n_negative, seed=3)
    assert q.dim == dim
    assert torch.equal(q.A, q.A.T)
    eig = torch.linalg.eigvalsh(q.A)
    torch.testing.assert_close(q.eigenvalues, eig)
    magnitudes = eig.abs()
    assert float(magnitudes.max() / magnitudes.min()) == pytest.approx(condition, rel=1e-9)
    assert int((eig < 0).sum()) == n_negative
    # the negative eigenvalues are those of smallest magnitude
    if 0 < n_negative < dim:
        assert magnitudes[eig < 0].max() < magnitudes[eig > 0].min()
    # b = A x* puts the stationary point at x* ~ N(0, I)
    x_star = torch.linalg.solve(q.A, q.b)
    assert torch.isfinite(x_star).all()
    assert q.grad(x_star).norm() <= 1e-8 * (1 + q.b.norm())


def test_random_is_reproducible_by_seed() -> None:
    a, b = Quadratic.random(6, 10.0, n_negative=1, seed=42), Quadratic.random(6, 10.0, n_negative=1, seed=42)
    assert torch.equal(a.A, b.A) and torch.equal(a.b, b.b)
    c = Quadratic.random(6, 10.0, n_negative=1, seed=43)
    assert not torch.equal(a.A, c.A)
    torch.testing.assert_close(a.eigenvalues, c.eigenvalues)  # same spectrum, another rotation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0, "condition": 2.0}, "dim"),
        ({"dim": 3, "condition": 0.5}, "condition"),
        ({"dim": 3, "condition": float("nan")}, "condition"),
        ({"dim": 3, "condition": 2.0, "n_negative": 4}, "n_negative"),
        ({"dim": 3, "condition": 2.0, "n_negative": -1}, "n_negative"),
        ({"dim": 3, "condition": 2.0, "seed": -1}, "seed"),
        ({"dim": 1, "condition": 10.0}, "condition"),  # a 1-D quadratic cannot have condition number 10
    ],
)
def test_random_refuses_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Quadratic.random(**kwargs)


def test_random_one_dimensional_with_condition_one() -> None:
    q = Quadratic.random(1, 1.0, seed=0)
    assert q.eigenvalues.tolist() == pytest.approx([1.0])


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("A", "match"),
    [
        (torch.zeros(2, 3), "square"),
        (torch.zeros(3), "square"),
        (torch.zeros(0, 0), "square"),
        (torch.zeros(2, 2, 2), "square"),
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "symmetric"),
        (torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), "finite"),
        (torch.tensor([[float("inf"), 0.0], [0.0, 1.0]]), "finite"),
    ],
)
def test_constructor_refuses_bad_matrices(A: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Quadratic(A)


@pytest.mark.parametrize("b", [torch.zeros(3), torch.zeros(2, 1), torch.zeros(1), torch.tensor([0.0, float("nan")])])
def test_constructor_refuses_bad_vectors(b: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="b must be a finite vector of length 2"):
        Quadratic(torch.eye(2), b)


def test_constructor_accepts_numpy_and_defaults_b_to_zero() -> None:
    q = Quadratic(np.array([[2.0, 1.0], [1.0, 3.0]]))
    assert q.A.dtype == DTYPE and torch.equal(q.b, torch.zeros(2, dtype=DTYPE))
    torch.testing.assert_close(q.grad(torch.ones(2, dtype=DTYPE)), torch.tensor([3.0, 4.0], dtype=DTYPE))


def test_not_positive_definite_coupling_is_refused_with_its_smallest_eigenvalue() -> None:
    q = Quadratic(torch.diag(torch.tensor([-2.0, 1.0], dtype=DTYPE)))
    x = torch.zeros(2, dtype=DTYPE)
    # smallest eigenvalue of A + gamma I is -2 + 1 = -1; gamma must exceed 2
    calls = [
        lambda: q.gibbs_mean(x, 1.0),
        lambda: q.gibbs_cov(1.0, 1.0),
        lambda: q.local_entropy_grad(x, 1.0),
        lambda: q.proximal_point(x, 1.0),
        lambda: q.max_stable_step(1.0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"not positive definite.*smallest eigenvalue is -1\b.*gamma > 2\b"):
            call()
    with pytest.raises(ValueError, match=r"smallest eigenvalue is 0\b"):
        q.local_entropy_grad(x, 2.0)  # gamma = 2 is the boundary: still refused
    assert torch.isfinite(q.local_entropy_grad(x, 2.5)).all()


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_gamma_must_be_positive_and_finite(quad: Quadratic, point: torch.Tensor, gamma: float) -> None:
    calls = [
        lambda: quad.gibbs_mean(point, gamma),
        lambda: quad.gibbs_cov(gamma, 1.0),
        lambda: quad.local_entropy_grad(point, gamma),
        lambda: quad.proximal_point(point, gamma),
        lambda: quad.max_stable_step(gamma),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="gamma"):
            call()


@pytest.mark.parametrize("temperature", [-1e-9, -1.0, float("nan")])
def test_temperature_must_be_nonnegative(quad: Quadratic, point: torch.Tensor, temperature: float) -> None:
    for call in (
        lambda: quad.gibbs_cov(GAMMA, temperature),
        lambda: quad.gibbs_mean(point, GAMMA, temperature),
        lambda: quad.local_entropy_grad(point, GAMMA, temperature),
    ):
        with pytest.raises(ValueError, match="temperature"):
            call()


def test_sigma_must_be_nonnegative(quad: Quadratic, point: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="sigma"):
        quad.smoothed_grad(point, -0.1)
    with pytest.raises(ValueError, match="sigma"):
        quad.smoothed_loss(point, -0.1)


@pytest.mark.parametrize("shape", [(5,), (7,), (3, 5), (6, 1), ()])
def test_wrong_point_dimension_is_refused(quad: Quadratic, shape: tuple[int, ...]) -> None:
    x = torch.zeros(shape, dtype=DTYPE)
    for call in (
        quad.loss,
        quad.grad,
        lambda p: quad.gibbs_mean(p, GAMMA),
        lambda p: quad.local_entropy_grad(p, GAMMA),
    ):
        with pytest.raises(ValueError, match="last dimension 6"):
            call(x)


# --------------------------------------------------------------------------------------------------------
# Step-size limit
# --------------------------------------------------------------------------------------------------------


def test_max_stable_step_formula(quad: Quadratic) -> None:
    lambda_max = float(np.linalg.eigvalsh(quad.A.numpy()).max())
    for gamma in (GAMMA, 10.0, 1e3):
        assert quad.max_stable_step(gamma) == pytest.approx(2.0 / (lambda_max + gamma), rel=1e-12)
    # negative definite A: lambda_max(A + gamma I) = -1 + 5 = 4 (the signed largest eigenvalue, not the largest |.|)
    negative = Quadratic(torch.diag(torch.tensor([-3.0, -1.0], dtype=DTYPE)))
    assert negative.max_stable_step(5.0) == pytest.approx(0.5, rel=1e-12)


def test_max_stable_step_separates_convergent_from_divergent_gradient_descent(
    quad: Quadratic, point: torch.Tensor
) -> None:
    """Gradient descent on U (SGLD at T = 0) contracts the error along the top eigenvector of M by |1 - h lambda_max|:
    by 0.98 per step at 0.99 h_max, and it grows by 1.02 per step at 1.01 h_max."""
    h_max = quad.max_stable_step(GAMMA)
    prox = quad.proximal_point(point, GAMMA)
    start_error = float((point - prox).norm())
    errors = {}
    for factor in (0.99, 1.01):
        y = point.clone()
        for _ in range(1500):
            y = y - factor * h_max * (quad.grad(y) + GAMMA * (y - point))
        errors[factor] = float((y - prox).norm())
    assert errors[0.99] <= 0.98**1500 * start_error * 10 + 1e-12  # the other modes contract faster
    assert errors[1.01] >= 1e6 * start_error  # 1.02^1500 ~ 8e12 times the (generic, nonzero) top component


def test_max_stable_step_dtype_and_float32_points(quad: Quadratic, point: torch.Tensor) -> None:
    assert isinstance(quad.max_stable_step(GAMMA), float)
    x32 = point.to(torch.float32)
    assert quad.loss(x32).dtype == torch.float32
    assert quad.grad(x32).dtype == torch.float32
    assert quad.local_entropy_grad(x32, GAMMA).dtype == torch.float32
    torch.testing.assert_close(
        quad.local_entropy_grad(x32, GAMMA), quad.local_entropy_grad(point, GAMMA).float(), rtol=1e-5, atol=1e-5
    )


def test_gamma_large_limit_constant_is_the_norm_of_a() -> None:
    """On a diagonal A the relative error is exactly (lambda / gamma) / (1 + lambda / gamma) along each axis."""
    q = Quadratic(torch.diag(torch.tensor([0.5, 4.0], dtype=DTYPE)))
    x = torch.tensor([0.0, 1.0], dtype=DTYPE)  # grad f along the lambda = 4 axis
    for gamma in (10.0, 1e3, 1e6):
        relative = float((q.local_entropy_grad(x, gamma) - q.grad(x)).norm() / q.grad(x).norm())
        assert relative == pytest.approx((4.0 / gamma) / (1 + 4.0 / gamma), rel=1e-9)
        assert math.isclose(gamma * relative, 4.0 / (1 + 4.0 / gamma), rel_tol=1e-9)
