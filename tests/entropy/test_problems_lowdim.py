"""Low-dimensional non-convex problems: the quadrature truths checked against each other and against limits.

The grid quadrature (the default) is cross-checked with an adaptive one (scipy quad / quad_vec) and, where f / T
varies slowly on the Gibbs width, with Gauss-Hermite; F is checked against its Laplace expansion at small T,
<x'> against the proximal point as T -> 0 and g against grad f as gamma -> infinity. Gaussian smoothing in
closed form is checked against Gauss-Hermite and Monte Carlo.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from localentropy.entropy.problems import DoubleWell, Minimum, Problem, SharpWide

PROBLEMS_1D = [DoubleWell(1), SharpWide(1)]
PROBLEMS_2D = [DoubleWell(2, height=1.5, curvature=2.0), SharpWide(2)]
ALL = PROBLEMS_1D + PROBLEMS_2D
IDS_1D = ["doublewell1", "sharpwide1"]
IDS_2D = ["doublewell2", "sharpwide2"]
IDS = IDS_1D + IDS_2D


def t64(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def u_value(problem, x: torch.Tensor, gamma: float, y: torch.Tensor) -> torch.Tensor:
    return problem.loss(y) + 0.5 * gamma * ((y - x) ** 2).sum(-1)


def rel(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-2) -> float:
    """max |a - b| relative to max |b|, or to ``floor`` where b is smaller (a mean or F may vanish)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(floor))


# ------------------------------------------------------------------------------------------------ the loss


@pytest.mark.parametrize("problem", ALL, ids=IDS)
def test_is_a_problem_and_grad_hessian_match_autograd(problem):
    assert isinstance(problem, Problem)
    assert repr(problem).startswith(type(problem).__name__)
    x = torch.randn(6, problem.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 1.5
    x.requires_grad_(True)
    (auto,) = torch.autograd.grad(problem.loss(x).sum(), x)
    torch.testing.assert_close(problem.grad(x.detach()), auto, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(problem.loss, (x[:2],))
    for point in x.detach()[:3]:
        hess = torch.autograd.functional.hessian(problem.loss, point)
        torch.testing.assert_close(problem.hessian(point), hess, rtol=1e-10, atol=1e-10)


def test_minima_double_well_exact():
    for dim, expected in ((1, [8.0]), (2, [2.0, 12.0])):
        problem = DoubleWell(dim, height=1.5, curvature=2.0) if dim == 2 else DoubleWell(1)
        minima = problem.minima()
        assert len(minima) == 2 and all(isinstance(m, Minimum) for m in minima)
        points = sorted(float(m.point[0]) for m in minima)
        assert points == pytest.approx([-1.0, 1.0], abs=1e-9)
        for m in minima:
            assert m.loss == pytest.approx(0.0, abs=1e-14)
            torch.testing.assert_close(m.hessian_eigenvalues, t64(*expected), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("problem", [SharpWide(1), SharpWide(2)], ids=["1d", "2d"])
def test_minima_sharp_wide(problem):
    sharp, wide = problem.minima()  # by loss: the sharp one is deeper
    assert sharp.loss < wide.loss - 0.25
    assert float(sharp.point[0]) == pytest.approx(-1.5, abs=0.01) and float(wide.point[0]) == pytest.approx(
        1.4, abs=0.01
    )
    assert sharp.sharpness > 100 * wide.sharpness
    for m in (sharp, wide):
        assert float(problem.grad(m.point).abs().max()) < 1e-10
        assert bool((m.hessian_eigenvalues > 0).all())


# ------------------------------------------------------------------------------------- quadrature cross-checks

CASES_1D = [(t, g) for t in (1e-4, 1e-3, 0.1, 10.0) for g in (0.1, 3.0)]


@pytest.mark.parametrize(("temperature", "gamma"), CASES_1D)
@pytest.mark.parametrize("problem", PROBLEMS_1D, ids=IDS_1D)
def test_grid_and_adaptive_agree_1d(problem, temperature, gamma):
    x = t64([-1.7], [0.2], [1.1])
    grid = [problem.local_entropy(x, gamma, temperature), problem.gibbs_mean(x, gamma, temperature)]
    adaptive = [problem.local_entropy(x, gamma, temperature, "adaptive")]
    adaptive.append(problem.gibbs_mean(x, gamma, temperature, method="adaptive"))
    for a, b in zip(grid, adaptive, strict=True):
        assert rel(a, b) < 1e-9
    cov_grid, cov_adaptive = (
        problem.gibbs_cov(gamma, temperature, x),
        problem.gibbs_cov(gamma, temperature, x, "adaptive"),
    )
    assert rel(cov_grid, cov_adaptive) < 1e-7


@pytest.mark.parametrize(("x", "gamma", "temperature"), [((0.3, -0.2), 0.3, 1e-4), ((-1.4, 0.5), 3.0, 1.0)])
@pytest.mark.parametrize("problem", PROBLEMS_2D, ids=IDS_2D)
def test_grid_and_adaptive_agree_2d(problem, x, gamma, temperature):
    x = t64(*x)
    for method_out in (problem.local_entropy, problem.gibbs_mean):
        assert rel(method_out(x, gamma, temperature), method_out(x, gamma, temperature, method="adaptive")) < 1e-9
    assert rel(problem.gibbs_cov(gamma, temperature, x), problem.gibbs_cov(gamma, temperature, x, "adaptive")) < 1e-7


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [1e-4, 1e-3, 1e-2, 0.1, 1.0, 5.0])
@pytest.mark.parametrize("problem", PROBLEMS_2D, ids=IDS_2D)
def test_grid_and_adaptive_agree_2d_sweep(problem, temperature):
    x = t64((0.3, -0.2), (-1.4, 0.5), (1.2, 0.8))
    for gamma in (0.3, 3.0):
        for fn in (problem.local_entropy, problem.gibbs_mean):
            assert rel(fn(x, gamma, temperature), fn(x, gamma, temperature, method="adaptive")) < 1e-9
        assert (
            rel(problem.gibbs_cov(gamma, temperature, x), problem.gibbs_cov(gamma, temperature, x, "adaptive")) < 1e-7
        )


@pytest.mark.parametrize(
    ("problem", "gamma", "temperature"), [(ALL[0], 10.0, 1.0), (ALL[1], 10.0, 1.0), (ALL[3], 10.0, 1.0)]
)
def test_hermite_agrees_where_the_gibbs_width_is_small(problem, gamma, temperature):
    """Gauss-Hermite at width sqrt(T / gamma) is accurate when exp(-f / T) is smooth on that scale."""
    x = t64(*[[0.4, -0.3][: problem.dim], [1.6, 0.1][: problem.dim]])  # away from the sharp well (width 0.1)
    for fn in (problem.local_entropy, problem.gibbs_mean):
        assert rel(fn(x, gamma, temperature, method="hermite"), fn(x, gamma, temperature)) < 1e-8
    assert rel(problem.gibbs_cov(gamma, temperature, x, "hermite"), problem.gibbs_cov(gamma, temperature, x)) < 1e-7


@pytest.mark.parametrize(
    ("dim", "temperature", "method"),
    [(1, t, m) for t in (1e-4, 1e-3, 1.0) for m in ("grid", "adaptive")] + [(2, 1e-3, "grid"), (2, 0.1, "grid")],
)
def test_exact_on_the_degenerate_quartic(dim, temperature, method):
    """DoubleWell at x = 0 with gamma = 4 height: U = height (x_1^4 + 1) [+ harmonic x_2]: a flat (quartic) minimum.

    ∫ exp(-h (t^4 + 1) / T) dt = 2 Gamma(5/4) (T/h)^(1/4) e^(-h/T) and E t^2 = (T/h)^(1/2) Gamma(3/4) / Gamma(1/4).
    """
    height, curvature, gamma = 1.5, 2.0, 6.0
    problem = DoubleWell(dim, height=height, curvature=curvature)
    x = t64(*[0.0, 0.3][:dim])
    log_z = math.log(2 * math.gamma(1.25)) + 0.25 * math.log(temperature / height) - height / temperature
    var = math.sqrt(temperature / height) * math.gamma(0.75) / math.gamma(0.25)
    mean = [0.0]
    if dim == 2:  # x_2 is Gaussian: N(gamma x_2 / (c + gamma), T / (c + gamma)), and U's x_2 part has minimum ...
        k = curvature + gamma
        u2_min = 0.5 * curvature * gamma / k * 0.3**2
        log_z += 0.5 * math.log(2 * math.pi * temperature / k) - u2_min / temperature
        mean.append(gamma * 0.3 / k)
    entropy = problem.local_entropy(x, gamma, temperature, method)
    assert float(entropy) == pytest.approx(temperature * log_z, rel=1e-11, abs=1e-13)
    torch.testing.assert_close(problem.gibbs_mean(x, gamma, temperature, method), t64(*mean), rtol=1e-11, atol=1e-12)
    cov = problem.gibbs_cov(gamma, temperature, x, method)
    assert float(cov[0, 0]) == pytest.approx(var, rel=1e-9)
    if dim == 2:
        assert float(cov[1, 1]) == pytest.approx(temperature / k, rel=1e-9)
        assert abs(float(cov[0, 1])) < 1e-12


@settings(max_examples=6, deadline=None)
@given(
    x=st.floats(-2.5, 2.5),
    log_gamma=st.floats(-1.0, 1.0),
    log_t=st.floats(-4.0, 0.5),
    which=st.sampled_from([0, 1]),
)
def test_grid_and_adaptive_agree_random_1d(x, log_gamma, log_t, which):
    problem, point = PROBLEMS_1D[which], t64([x])
    gamma, temperature = 10.0**log_gamma, 10.0**log_t
    for fn in (problem.local_entropy, problem.gibbs_mean):
        assert rel(fn(point, gamma, temperature), fn(point, gamma, temperature, method="adaptive")) < 1e-8


# ----------------------------------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("problem", "x"), [(ALL[0], (0.3,)), (ALL[1], (-1.2,)), (ALL[2], (0.4, 0.3)), (ALL[3], (1.0, -0.5))]
)
def test_small_temperature_laplace_and_proximal_point(problem, x):
    """F = -U* + T d/2 log(2 pi T) - T/2 log det H + O(T^2), and <x'> - prox = O(T)."""
    x, gamma = t64(*x), 1.0
    prox = problem.proximal_point(x, gamma)
    u_star = u_value(problem, x, gamma, prox)
    hess = problem.hessian(prox) + gamma * torch.eye(problem.dim, dtype=torch.float64)
    # the proximal point is a minimiser of U, and global on a fine grid
    grad_u = problem.grad(prox) + gamma * (prox - x)
    assert float(grad_u.abs().max()) < 1e-9 and bool((torch.linalg.eigvalsh(hess) > 0).all())
    axes = [torch.linspace(-4, 4, 401, dtype=torch.float64)] * problem.dim
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    assert float(u_value(problem, x, gamma, grid).min()) >= float(u_star) - 1e-12
    errors = []
    for temperature in (1e-2, 1e-3, 1e-4):
        laplace = -u_star + temperature * (problem.dim / 2 * math.log(2 * math.pi * temperature))
        laplace = laplace - temperature / 2 * torch.logdet(hess)
        assert abs(float(problem.local_entropy(x, gamma, temperature) - laplace)) < 20 * temperature**2
        errors.append(float((problem.gibbs_mean(x, gamma, temperature) - prox).norm()))
    assert errors[2] < 20 * 1e-4 and errors[2] < errors[1] < errors[0]
    # T = 0 is the limit itself
    torch.testing.assert_close(problem.gibbs_mean(x, gamma, 0.0), prox)
    assert float(problem.gibbs_cov(gamma, 0.0, x).abs().max()) == 0.0
    torch.testing.assert_close(problem.local_entropy(x, gamma, 0.0), -u_star)


@pytest.mark.parametrize("problem", ALL, ids=IDS)
def test_large_gamma_gives_the_gradient(problem):
    x = t64(*[0.6, -0.4][: problem.dim])
    grad = problem.grad(x)
    errors = [float((problem.local_entropy_grad(x, gamma, 0.1) - grad).norm()) for gamma in (1e2, 1e3, 1e4)]
    assert errors[2] < 1e-2 * float(grad.norm())
    assert errors[2] < errors[1] / 5 < errors[0] / 25  # O(1 / gamma)


FD_CASES = [(p, t, g) for p in PROBLEMS_1D for t, g in ((1e-3, 1.0), (0.3, 0.5), (2.0, 3.0))]


@pytest.mark.parametrize(("problem", "temperature", "gamma"), FD_CASES + [(p, 0.3, 0.5) for p in PROBLEMS_2D])
def test_local_entropy_gradient_by_finite_differences(problem, temperature, gamma):
    """grad F = -gamma (x - <x'>) = -g."""
    x, h = t64(*[0.35, -0.6][: problem.dim]), 1e-5
    g = problem.local_entropy_grad(x, gamma, temperature)
    for k in range(problem.dim):
        step = torch.zeros(problem.dim, dtype=torch.float64)
        step[k] = h
        fd = problem.local_entropy(x + step, gamma, temperature) - problem.local_entropy(x - step, gamma, temperature)
        assert float(fd) / (2 * h) == pytest.approx(-float(g[k]), rel=1e-6, abs=1e-7)


# ------------------------------------------------------------------------------------------- direct smoothing


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("problem", ALL, ids=IDS)
def test_smoothing_closed_form_matches_hermite_and_monte_carlo(problem, sigma):
    x = t64(*[[-1.3, 0.2][: problem.dim], [0.5, -0.7][: problem.dim]])
    closed_grad, closed_loss = problem.smoothed_grad(x, sigma), problem.smoothed_loss(x, sigma)
    # Gauss-Hermite only where f is smooth on the scale sigma (not sigma >~ the sharp well's width 0.1)
    methods = ["grid", "hermite"] if isinstance(problem, DoubleWell) or sigma < 0.1 else ["grid"]
    for method in methods:
        torch.testing.assert_close(problem.smoothed_grad(x, sigma, method=method), closed_grad, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(problem.smoothed_loss(x, sigma, method=method), closed_loss, rtol=1e-9, atol=1e-11)
    n, z = 200_000, 5.0  # |mean - truth| <= z sd / sqrt(n): fails by chance with probability ~ 1e-6 per entry
    xi = torch.randn(n, problem.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for point, g_true, f_true in zip(x, closed_grad, closed_loss, strict=True):
        samples_g, samples_f = problem.grad(point + sigma * xi), problem.loss(point + sigma * xi)
        se_g = samples_g.std(0) / math.sqrt(n)
        assert bool(((samples_g.mean(0) - g_true).abs() <= z * se_g + 1e-12).all())
        assert abs(float(samples_f.mean() - f_true)) <= z * float(samples_f.std()) / math.sqrt(n) + 1e-12


@pytest.mark.parametrize("problem", ALL, ids=IDS)
def test_smoothing_vanishes_with_sigma(problem):
    x = t64(*[[-1.3, 0.2][: problem.dim], [0.5, -0.7][: problem.dim]])
    torch.testing.assert_close(problem.smoothed_grad(x, 0.0), problem.grad(x))
    torch.testing.assert_close(problem.smoothed_loss(x, 0.0), problem.loss(x))
    errors = [float((problem.smoothed_grad(x, s) - problem.grad(x)).abs().max()) for s in (1e-2, 1e-3)]
    assert errors[1] < 1e-3 and errors[1] < errors[0] / 50  # O(sigma^2)


# ------------------------------------------------------------------------------------- the sharp/wide contrast


def test_sharp_wide_local_entropy_prefers_the_wide_minimum():
    problem = SharpWide(1)
    sharp, wide = problem.minima()
    assert sharp.loss < wide.loss  # the plain loss prefers the sharp minimum
    xs = torch.linspace(-3, 3, 61, dtype=torch.float64)[:, None]
    # moderate scope and temperature: -F has a single minimum, near the wide minimum of f
    gamma, temperature = 0.5, 0.5
    g = problem.local_entropy_grad(xs, gamma, temperature)[:, 0]
    crossings = [float(xs[i, 0]) for i in range(60) if g[i] < 0 <= g[i + 1]]
    assert len(crossings) == 1 and abs(crossings[0] - float(wide.point[0])) < 0.3
    for start in (sharp.point, torch.zeros(1, dtype=torch.float64)):
        x = start.clone()
        for _ in range(40):  # x <- x - g / gamma = <x'>: following -g with step 1 / gamma
            x = x - problem.local_entropy_grad(x, gamma, temperature) / gamma
        assert abs(float(x[0]) - float(wide.point[0])) < 0.3
        assert abs(float(problem.local_entropy_grad(x, gamma, temperature)[0])) < 1e-5
    # lower temperature: both minima are stationary points of -F, but -F is lower at the wide one
    f_sharp, f_wide = (problem.local_entropy(m.point, 0.5, 0.2) for m in (sharp, wide))
    assert float(f_wide) > float(f_sharp)
    # small temperature: local entropy agrees with the loss and prefers the sharp minimum
    f_sharp, f_wide = (problem.local_entropy(m.point, 0.5, 0.01) for m in (sharp, wide))
    assert float(f_sharp) > float(f_wide)


# ------------------------------------------------------------------------------------------ shapes and errors


def test_batching_shapes_and_dtype():
    for problem, batch in ((ALL[1], (3, 4)), (ALL[3], (2, 1))):
        d = problem.dim
        x = torch.linspace(-1.0, 1.0, math.prod(batch) * d, dtype=torch.float64).reshape(*batch, d)
        assert problem.loss(x).shape == batch and problem.grad(x).shape == (*batch, d)
        assert problem.gibbs_mean(x, 1.0, 0.1).shape == (*batch, d)
        assert problem.gibbs_cov(1.0, 0.1, x).shape == (*batch, d, d)
        assert problem.local_entropy(x, 1.0, 0.1).shape == batch
        assert problem.local_entropy_grad(x, 1.0, 0.1).shape == (*batch, d)
        assert problem.smoothed_grad(x, 0.2).shape == (*batch, d) and problem.smoothed_loss(x, 0.2).shape == batch
        assert problem.proximal_point(x, 1.0).shape == (*batch, d)
        flat = problem.gibbs_mean(x.reshape(-1, d), 1.0, 0.1)
        torch.testing.assert_close(problem.gibbs_mean(x, 1.0, 0.1).reshape(-1, d), flat)
        x32 = x.to(torch.float32)
        for out in (problem.loss(x32), problem.gibbs_mean(x32, 1.0, 0.1), problem.smoothed_grad(x32, 0.2)):
            assert out.dtype == torch.float32


def test_errors():
    for bad in (0, 3, 1.5, True):
        with pytest.raises(ValueError, match="dim"):
            DoubleWell(bad)
        with pytest.raises(ValueError, match="dim"):
            SharpWide(bad)
    with pytest.raises(ValueError, match="height"):
        DoubleWell(1, height=0.0)
    with pytest.raises(ValueError, match="sharp_width"):
        SharpWide(1, sharp_width=-0.1)
    with pytest.raises(ValueError, match="confinement"):
        SharpWide(1, confinement=0.0)
    with pytest.raises(ValueError, match="differ"):
        SharpWide(1, sharp_center=1.0, wide_center=1.0)
    problem, x = SharpWide(1), t64([0.2])
    with pytest.raises(ValueError, match="gamma"):
        problem.gibbs_mean(x, 0.0, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        problem.local_entropy_grad(x, -1.0, 0.1)
    with pytest.raises(ValueError, match="temperature"):
        problem.local_entropy(x, 1.0, -0.1)
    with pytest.raises(ValueError, match="needs x"):
        problem.gibbs_cov(1.0, 0.1)
    with pytest.raises(ValueError, match="method"):
        problem.gibbs_mean(x, 1.0, 0.1, method="simpson")
    with pytest.raises(ValueError, match="sigma"):
        problem.smoothed_grad(x, -0.1)
    with pytest.raises(ValueError, match="method"):
        problem.smoothed_loss(x, 0.1, method="mc")
    with pytest.raises(ValueError, match="finite"):
        problem.gibbs_mean(t64([math.nan]), 1.0, 0.1)
    with pytest.raises(ValueError, match="last dimension"):
        problem.loss(t64([0.1, 0.2]))
