"""Flatness measures on linear regression, whose Hessian is exactly X^T X / n for f(w) = mean (x.w - y)^2 / 2."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from localentropy.diagnostics.flatness import (
    epsilon_sharpness,
    hessian_density,
    hessian_top_eigenvalue,
    hessian_trace,
    local_entropy_gradient,
)

N, D = 200, 8


def mse(out, target):
    return 0.5 * ((out.squeeze(-1) - target) ** 2).mean()


def regression(seed: int = 0, orthogonal: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    if orthogonal:  # X^T X diagonal: the eps-sharpness has a closed form
        q, _ = torch.linalg.qr(x)
        x = q * torch.linspace(1.0, 6.0, D, dtype=torch.float64) * math.sqrt(N)
    else:
        x = x @ torch.randn(D, D, generator=g, dtype=torch.float64)
    y = torch.randn(N, generator=g, dtype=torch.float64)
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, D, generator=g, dtype=torch.float64))
    hessian = (x.T @ x / N).numpy()
    return model, x, y, hessian


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("split", [1, 3])
def test_top_eigenvalue_matches_the_exact_hessian(split, single_thread):
    model, x, y, hessian = regression()
    batches = list(zip(x.tensor_split(split), y.tensor_split(split), strict=True))  # unequal batch sizes for 3
    result = hessian_top_eigenvalue(model, mse, batches, iterations=1000, tol=1e-12, generator=gen())
    assert result.converged
    assert result.value == pytest.approx(np.linalg.eigvalsh(hessian).max(), rel=1e-6)


def test_trace_within_its_mcse_and_the_mcse_matches_theory(single_thread):
    model, x, y, hessian = regression()
    samples = 400
    result = hessian_trace(model, mse, [(x, y)], samples=samples, generator=gen(1))
    off_diagonal = float((hessian**2).sum() - (np.diag(hessian) ** 2).sum())
    theory = math.sqrt(2 * off_diagonal / samples)  # Var(z^T H z) = 2 sum_{i != j} H_ij^2 for Rademacher z
    assert abs(result.value - np.trace(hessian)) < 4 * result.mcse
    assert 0.7 * theory < result.mcse < 1.3 * theory


def test_trace_is_exact_for_a_diagonal_hessian(single_thread):
    model, x, y, hessian = regression(orthogonal=True)
    result = hessian_trace(model, mse, [(x, y)], samples=5, generator=gen())
    assert result.value == pytest.approx(np.trace(hessian), rel=1e-10) and result.mcse < 1e-8


def test_slq_nodes_are_the_eigenvalues_and_moments_match(single_thread):
    model, x, y, hessian = regression()
    eigenvalues = np.linalg.eigvalsh(hessian)
    runs = 200
    density = hessian_density(model, mse, [(x, y)], steps=D, runs=runs, broadening=0.01, generator=gen(2))
    for nodes, weights in zip(density.nodes[:5], density.weights[:5], strict=True):
        assert np.allclose(np.sort(nodes), eigenvalues, rtol=1e-8)  # full Lanczos: exact Ritz values
        assert sum(weights) == pytest.approx(1.0, abs=1e-10)
    # each run's k-th moment is u^T H^k u, unbiased for tr(H^k) / d; check within 4 standard errors
    for k in (1, 2):
        per_run = np.array(
            [np.sum(np.asarray(w) * np.asarray(t) ** k) for t, w in zip(density.nodes, density.weights, strict=True)]
        )
        exact = np.trace(np.linalg.matrix_power(hessian, k)) / D
        assert density.moment(k) == pytest.approx(per_run.mean())
        assert abs(per_run.mean() - exact) < 4 * per_run.std(ddof=1) / math.sqrt(runs)
    grid, values = np.asarray(density.grid), np.asarray(density.density)
    step = grid[1] - grid[0]
    assert np.sum(values) * step == pytest.approx(1.0, abs=1e-9)
    assert np.sum(grid * values) * step == pytest.approx(density.moment(1), rel=1e-3)  # broadening keeps the mean


def test_lanczos_stops_early_on_a_low_rank_hessian(single_thread):
    model, x, y, _ = regression()
    x = x[:, :1] * torch.ones(1, D, dtype=torch.float64)  # rank 1
    density = hessian_density(model, mse, [(x, y)], steps=D, runs=2, generator=gen())
    top = float((x.T @ x / N).trace())
    assert all(len(t) <= 2 for t in density.nodes)
    assert max(max(t) for t in density.nodes) == pytest.approx(top, rel=1e-8)


def test_epsilon_sharpness_closed_form_at_the_minimum(single_thread):
    model, x, y, hessian = regression(orthogonal=True)
    w_star = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.T
    with torch.no_grad():
        model.weight.copy_(w_star)
    eps = 1e-2
    radius = eps * (np.abs(w_star.numpy().ravel()) + 1)
    f0 = float(mse(model(x), y).detach())
    exact = 100 * 0.5 * float(np.sum(np.diag(hessian) * radius**2)) / (1 + f0)  # every vertex of the box
    before = model.weight.detach().clone()
    result = epsilon_sharpness(model, mse, [(x, y)], epsilon=eps, iterations=20, generator=gen())
    assert result.loss == pytest.approx(f0)
    assert result.value == pytest.approx(exact, rel=1e-6)
    assert torch.equal(model.weight, before)


def test_local_entropy_gradient_matches_the_quadratic_closed_form(single_thread):
    model, x, y, hessian = regression()
    gamma = 1.0
    w = model.weight.detach().numpy().ravel()
    grad = hessian @ w - (x.T @ y).numpy() / N
    exact = gamma * np.linalg.solve(hessian + gamma * np.eye(D), grad)  # gamma (A + gamma I)^-1 (A x - b)
    step = 1.0 / (np.linalg.eigvalsh(hessian).max() + gamma)
    before = model.weight.detach().clone()
    result = local_entropy_gradient(
        model,
        mse,
        [(x, y)],
        gamma=gamma,
        temperature=1e-12,
        step_size=step,
        steps=600,
        chains=3,
        burn_in=300,
        generator=gen(),
    )
    assert result.norm == pytest.approx(np.linalg.norm(exact), rel=1e-3)
    assert result.grad_norm == pytest.approx(np.linalg.norm(grad), rel=1e-10)
    assert result.mcse < 1e-4 and result.grad_evals == 3 * 600
    assert result.cosine == pytest.approx(float(exact @ grad / np.linalg.norm(exact) / np.linalg.norm(grad)), rel=1e-4)
    assert torch.equal(model.weight, before)


def test_measures_run_on_a_network_in_eval_mode_and_leave_it_unchanged(single_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    model.train()
    model(x)  # running statistics
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(x[:40], y[:40]), (x[40:], y[40:])]
    loss = nn.functional.cross_entropy
    top = hessian_top_eigenvalue(model, loss, batches, iterations=50, generator=gen())
    trace = hessian_trace(model, loss, batches, samples=5, generator=gen())
    density = hessian_density(model, loss, batches, steps=10, generator=gen())
    sharp = epsilon_sharpness(model, loss, batches, iterations=3, generator=gen())
    le = local_entropy_gradient(
        model, loss, batches, gamma=1.0, temperature=1e-8, step_size=0.05, steps=5, generator=gen()
    )
    values = [top.value, trace.value, trace.mcse, sharp.value, le.norm, *density.density]
    assert all(math.isfinite(v) for v in values) and sharp.value >= 0
    assert top.value >= max(max(t) for t in density.nodes) - 1e-3 * abs(top.value)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_trace_needs_two_samples():
    model, x, y, _ = regression()
    with pytest.raises(ValueError, match="samples must be >= 2"):
        hessian_trace(model, mse, [(x, y)], samples=1)
    with pytest.raises(ValueError, match="batches is empty"):
        hessian_top_eigenvalue(model, mse, [])


def test_generator_on_keeps_a_generator_of_the_device_and_derives_one_deterministically():
    from localentropy.samplers import generator_on

    parent = gen(3)
    assert generator_on("cpu", parent) is parent  # on its own device: the stream goes on unchanged
    assert generator_on(torch.device("cpu"), parent) is parent


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_flatness_measures_on_cuda_match_the_cpu():
    """Every measure runs on a model and data on the GPU with the same seeded CPU generator as on the CPU: the
    Hessian measures draw the same random vectors (on the generator's device), so they agree with the CPU's to
    float64 rounding; the local-entropy gradient's chains draw on the GPU (another stream), so it only has to run."""
    model, x, y, _ = regression()
    batches = [(x[:120], y[:120]), (x[120:], y[120:])]
    cuda = copy.deepcopy(model).cuda()
    cuda_batches = [(bx.cuda(), by.cuda()) for bx, by in batches]
    for measure, kwargs in (
        (hessian_top_eigenvalue, {"iterations": 30}),
        (hessian_trace, {"samples": 5}),
        (epsilon_sharpness, {"iterations": 3}),
    ):
        on_cpu = measure(model, mse, batches, generator=gen(), **kwargs).value
        on_gpu = measure(cuda, mse, cuda_batches, generator=gen(), **kwargs).value
        assert on_gpu == pytest.approx(on_cpu, rel=1e-9), measure.__name__
    density = hessian_density(cuda, mse, cuda_batches, steps=5, generator=gen())
    assert all(math.isfinite(v) for v in density.density)
    from localentropy.samplers import generator_on

    le = local_entropy_gradient(
        cuda,
        mse,
        cuda_batches,
        gamma=1.0,
        temperature=1e-8,
        step_size=0.05,
        steps=5,
        generator=generator_on("cuda", gen()),
    )
    assert math.isfinite(le.norm)
