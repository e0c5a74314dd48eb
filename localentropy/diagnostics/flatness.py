r"""Flatness of a trained network at its current weights (PyHessian-style measures and two more).

Every measure works on the loss f(x) = sum_b (n_b / N) loss_fn(model(inputs_b), targets_b) over a fixed list of
``batches`` (a mean-reduced ``loss_fn``, so f is the mean loss over the N examples), with the model in whatever
mode the caller left it (use ``model.eval()``: dropout off, batch norm on its running statistics, so that f is a
deterministic function of the weights). x is the vector of trainable parameters, d its length.

* :func:`hessian_top_eigenvalue`: power iteration on Hessian-vector products Hv, each the gradient of
  (grad f) . v (``torch.autograd.grad`` with ``grad_outputs=v``); it finds the eigenvalue of largest magnitude.
* :func:`hessian_trace`: Hutchinson's estimator tr(H) = E[z^T H z] with Rademacher z, with its Monte Carlo
  standard error std(z^T H z) / sqrt(n).
* :func:`hessian_density`: stochastic Lanczos quadrature: m Lanczos steps with full re-orthogonalisation from
  a random unit vector give the tridiagonal T = Q diag(theta) Q^T; nodes theta_i with weights tau_i = Q_{1i}^2
  approximate the spectral measure, averaged over runs and broadened by Gaussians of width sigma.
* :func:`epsilon_sharpness`: Keskar et al. (2017): 100 (max_{y in C_eps} f(y) - f(x)) / (1 + f(x)) over the box
  C_eps = {y : |y_i - x_i| <= eps (|x_i| + 1)}, maximised by scipy's L-BFGS-B with torch gradients.
* :func:`local_entropy_gradient`: the norm of g(x) = gamma (x - <x'>) estimated by
  :class:`~localentropy.entropy.LocalEntropyEstimator` with a few SGLD chains on f (full batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
Batches = Sequence[tuple[Tensor, Tensor]]


class Objective:
    """f over fixed batches as a function of the flat parameter vector: value, gradient and Hessian-vector product.

    With a single batch the gradient's graph is built once and kept for every Hessian-vector product
    (``retain_graph``); with several it is rebuilt per product, batch by batch, to bound memory.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batches: Batches) -> None:
        self.model, self.loss_fn = model, loss_fn
        self.batches = list(batches)
        if not self.batches:
            raise ValueError("batches is empty: give at least one (inputs, targets) batch")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters")
        n = [int(y.shape[0]) for _, y in self.batches]
        self.n = sum(n)
        self.weights = [k / self.n for k in n]
        self.dim = sum(p.numel() for p in self.params)
        self._cached: tuple[Tensor, ...] | None = None
        self.hvps = 0
        self.gradients = 0

    def flat(self) -> Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def load(self, flat: Tensor) -> None:
        with torch.no_grad():
            offset = 0
            for p in self.params:
                p.copy_(flat[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        self._cached = None

    def _split(self, flat: Tensor) -> list[Tensor]:
        out, offset = [], 0
        for p in self.params:
            out.append(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    def _batch_grads(self, batch: tuple[Tensor, Tensor], weight: float, create_graph: bool) -> tuple[Tensor, Tensor]:
        inputs, targets = batch
        with torch.enable_grad():
            loss = self.loss_fn(self.model(inputs), targets) * weight
            grads = torch.autograd.grad(loss, self.params, create_graph=create_graph, allow_unused=True)
        grads = tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params, strict=True))
        return loss, grads  # type: ignore[return-value]

    def value(self) -> float:
        with torch.no_grad():
            return sum(
                float(self.loss_fn(self.model(x), y)) * w for (x, y), w in zip(self.batches, self.weights, strict=True)
            )

    def value_and_grad(self) -> tuple[float, Tensor]:
        total, grad = 0.0, torch.zeros(self.dim, dtype=self.params[0].dtype, device=self.params[0].device)
        for batch, w in zip(self.batches, self.weights, strict=True):
            loss, grads = self._batch_grads(batch, w, create_graph=False)
            total += float(loss.detach())
            grad += torch.cat([g.reshape(-1) for g in grads])
        self.gradients += 1
        return total, grad

    def _hvp_terms(self, grads: tuple[Tensor, ...], v: list[Tensor], retain: bool) -> Tensor:
        pairs = [(g, vi, i) for i, (g, vi) in enumerate(zip(grads, v, strict=True)) if g.requires_grad]
        out = [torch.zeros_like(p) for p in self.params]
        if pairs:
            hv = torch.autograd.grad(
                [g for g, _, _ in pairs],
                self.params,
                grad_outputs=[vi for _, vi, _ in pairs],
                retain_graph=retain,
                allow_unused=True,
            )
            out = [o if h is None else h for o, h in zip(out, hv, strict=True)]
        return torch.cat([h.reshape(-1) for h in out])

    def hvp(self, v: Tensor) -> Tensor:
        """H v for a flat vector v (the Hessian of f at the current parameters)."""
        parts = self._split(v.to(self.params[0].dtype))
        self.hvps += 1
        if len(self.batches) == 1:
            if self._cached is None:
                self._cached = self._batch_grads(self.batches[0], 1.0, create_graph=True)[1]
            with torch.enable_grad():
                return self._hvp_terms(self._cached, parts, retain=True).detach()
        total = torch.zeros(self.dim, dtype=self.params[0].dtype, device=self.params[0].device)
        for batch, w in zip(self.batches, self.weights, strict=True):
            grads = self._batch_grads(batch, w, create_graph=True)[1]
            with torch.enable_grad():
                total += self._hvp_terms(grads, parts, retain=False).detach()
        return total


def _draw_device(like: Tensor, generator: torch.Generator | None) -> torch.device:
    """Random vectors are drawn on the generator's device and then moved to the parameters': a seeded CPU generator
    gives the same vectors whether the model is on the CPU or a GPU (torch refuses a CPU generator for a CUDA draw)."""
    return like.device if generator is None else generator.device


def _rademacher(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    bits = torch.randint(0, 2, (n,), generator=generator, device=_draw_device(like, generator))
    return (bits * 2 - 1).to(like.device, like.dtype)


def _gaussian(n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(n, generator=generator, device=_draw_device(like, generator), dtype=like.dtype).to(like.device)


@dataclass
class TopEigenvalue:
    value: float
    iterations: int
    converged: bool
    hvps: int


def hessian_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    *,
    iterations: int = 100,
    tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> TopEigenvalue:
    """The Hessian eigenvalue of largest magnitude, by power iteration (stops when it changes by < tol relative)."""
    objective = Objective(model, loss_fn, batches)
    v = _gaussian(objective.dim, objective.params[0], generator)
    v /= v.norm()
    estimate, converged, it = None, False, 0
    for it in range(1, iterations + 1):  # noqa: B007 (it is reported)
        hv = objective.hvp(v)
        value = float(torch.dot(v, hv))
        norm = hv.norm()
        if float(norm) == 0.0:  # v is in the null space: the Hessian is zero along it
            estimate, converged = value, True
            break
        v = hv / norm
        if estimate is not None and abs(value - estimate) <= tol * (abs(estimate) + 1e-12):
            estimate, converged = value, True
            break
        estimate = value
    return TopEigenvalue(value=float(estimate or 0.0), iterations=it, converged=converged, hvps=objective.hvps)


@dataclass
class TraceEstimate:
    value: float
    mcse: float
    samples: int


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    *,
    samples: int = 50,
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    """Hutchinson's estimate of tr(H) with Rademacher vectors, and its MCSE std / sqrt(samples) (needs >= 2)."""
    if samples < 2:
        raise ValueError(f"samples must be >= 2 (the MCSE needs two), got {samples}")
    objective = Objective(model, loss_fn, batches)
    values = []
    for _ in range(samples):
        z = _rademacher(objective.dim, objective.params[0], generator)
        values.append(float(torch.dot(z, objective.hvp(z))))
    array = np.asarray(values)
    return TraceEstimate(float(array.mean()), float(array.std(ddof=1) / math.sqrt(samples)), samples)


@dataclass
class SpectralDensity:
    """SLQ output: per-run Lanczos nodes and weights, and the broadened density on a grid."""

    nodes: list[list[float]]
    weights: list[list[float]]
    grid: list[float]
    density: list[float]
    sigma: float

    def moment(self, k: int) -> float:
        """The quadrature estimate of tr(H^k) / d (exact polynomial moments of the nodes, before broadening)."""
        return float(
            np.mean([np.sum(np.asarray(w) * np.asarray(t) ** k) for t, w in zip(self.nodes, self.weights, strict=True)])
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lanczos(hvp: Callable[[Tensor], Tensor], v0: Tensor, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """m Lanczos steps with full re-orthogonalisation; returns the tridiagonal's (alpha, beta) in float64."""
    basis = torch.empty((steps, v0.numel()), dtype=v0.dtype, device=v0.device)
    v = v0 / v0.norm()
    alphas, betas = [], []
    for j in range(steps):
        basis[j] = v
        w = hvp(v)
        alpha = float(torch.dot(w, v))
        alphas.append(alpha)
        previous = basis[: j + 1]
        for _ in range(2):  # Gram-Schmidt twice against every earlier vector
            w -= previous.T @ (previous @ w)
        beta = float(w.norm())
        if j == steps - 1 or beta <= 1e-10 * max(1.0, abs(alpha)):
            break
        betas.append(beta)
        v = w / beta
    return np.asarray(alphas), np.asarray(betas[: len(alphas) - 1])


def hessian_density(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    *,
    steps: int = 30,
    runs: int = 1,
    broadening: float = 0.01,
    grid_points: int = 1000,
    generator: torch.Generator | None = None,
) -> SpectralDensity:
    """Eigenvalue density by stochastic Lanczos quadrature (``runs`` random starts, ``steps`` <= d each).

    The density is sum_i tau_i N(t; theta_i, sigma^2) averaged over runs, with sigma = broadening times the
    spread of the nodes (max - min; 1 when the nodes coincide), on ``grid_points`` points from min - 5 sigma
    to max + 5 sigma, normalised to integrate to 1 on the grid.
    """
    objective = Objective(model, loss_fn, batches)
    steps = min(int(steps), objective.dim)
    nodes, weights = [], []
    for _ in range(runs):
        v0 = _rademacher(objective.dim, objective.params[0], generator)
        alphas, betas = lanczos(objective.hvp, v0, steps)
        if len(alphas) == 1:
            theta, vectors = alphas.copy(), np.ones((1, 1))
        else:
            from scipy.linalg import eigh_tridiagonal

            theta, vectors = eigh_tridiagonal(alphas, betas)
        nodes.append(theta.tolist())
        weights.append((vectors[0] ** 2).tolist())
    all_nodes = np.concatenate([np.asarray(t) for t in nodes])
    spread = float(all_nodes.max() - all_nodes.min())
    sigma = broadening * (spread if spread > 0 else 1.0)
    grid = np.linspace(all_nodes.min() - 5 * sigma, all_nodes.max() + 5 * sigma, grid_points)
    density = np.zeros_like(grid)
    for t, w in zip(nodes, weights, strict=True):
        t_arr, w_arr = np.asarray(t)[:, None], np.asarray(w)[:, None]
        density += (w_arr * np.exp(-((grid[None, :] - t_arr) ** 2) / (2 * sigma**2))).sum(0)
    density /= runs * sigma * math.sqrt(2 * math.pi)
    area = float(np.sum(density) * (grid[1] - grid[0]))
    if area > 0:
        density /= area
    return SpectralDensity(nodes, weights, grid.tolist(), density.tolist(), sigma)


@dataclass
class Sharpness:
    value: float  # 100 (max f - f(x)) / (1 + f(x))
    loss: float  # f(x)
    max_loss: float
    epsilon: float
    evaluations: int


def epsilon_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    *,
    epsilon: float = 1e-3,
    iterations: int = 10,
    generator: torch.Generator | None = None,
) -> Sharpness:
    """Keskar's eps-sharpness in the full parameter space; the parameters are restored afterwards.

    L-BFGS-B (at most ``iterations`` iterations) maximises f over the box, starting from a random point in it
    (at a minimum the gradient vanishes, so a start at x would not move).
    """
    from scipy.optimize import Bounds, minimize

    objective = Objective(model, loss_fn, batches)
    x = objective.flat().clone()
    x64 = x.double().cpu().numpy()
    radius = epsilon * (np.abs(x64) + 1.0)
    f0 = objective.value()
    best = [f0]

    def negative(y: np.ndarray) -> tuple[float, np.ndarray]:
        objective.load(torch.from_numpy(y).to(x.dtype).to(x.device))
        value, grad = objective.value_and_grad()
        if math.isfinite(value):
            best[0] = max(best[0], value)
        return -value, -grad.double().cpu().numpy()

    u = torch.rand(x.numel(), generator=generator, dtype=torch.float64).numpy()
    start = x64 + radius * (2 * u - 1)
    try:
        minimize(
            negative,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=Bounds(x64 - radius, x64 + radius),
            options={"maxiter": int(iterations)},
        )
    finally:
        objective.load(x)
    value = 100.0 * (best[0] - f0) / (1.0 + f0)
    return Sharpness(value, f0, best[0], float(epsilon), objective.gradients)


@dataclass
class LocalEntropyGradient:
    norm: float  # ||g(x)||, the chains' mean estimate
    mcse: float  # the standard error of that mean (its noise floor), from the spread between chains
    chain_norms: list[float]
    grad_norm: float  # ||grad f(x)|| for comparison
    cosine: float  # cos(g(x), grad f(x))
    grad_evals: int  # full-batch gradient evaluations


def local_entropy_gradient(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Batches,
    *,
    gamma: float,
    temperature: float,
    step_size: float,
    steps: int = 20,
    chains: int = 2,
    burn_in: int = 0,
    generator: torch.Generator | None = None,
) -> LocalEntropyGradient:
    """||gamma (x - <x'>)|| with ``chains`` SGLD chains of ``steps`` steps on the full-batch f (params restored).

    The norm of a noisy estimate is biased upwards by about its standard error, sqrt(sum_c ||g_c - g||^2 /
    (c (c - 1))) over the c chains (``mcse``; NaN for one chain), which grows like sqrt(d T gamma): keep T small
    for large networks.
    """
    from localentropy.entropy import LocalEntropyEstimator
    from localentropy.samplers import make_sampler

    objective = Objective(model, loss_fn, batches)
    x = objective.flat().clone()

    def grad_fn(points: Tensor) -> Tensor:
        rows = []
        for point in points:
            objective.load(point)
            rows.append(objective.value_and_grad()[1])
        return torch.stack(rows)

    estimator = LocalEntropyEstimator(
        grad_fn,
        gamma,
        make_sampler("sgld", step_size=step_size),
        steps,
        temperature=temperature,
        burn_in=burn_in,
        keep_draws=False,
    )
    try:
        result = estimator.estimate(x, chains, generator)
    finally:
        objective.load(x)
    grad = objective.value_and_grad()[1]
    g = result.grad
    c = result.chain_grads.shape[0]
    spread = float(((result.chain_grads - g) ** 2).sum()) / (c * (c - 1)) if c > 1 else math.nan
    cosine = float(torch.dot(g, grad) / (g.norm() * grad.norm())) if float(g.norm() * grad.norm()) > 0 else 0.0
    return LocalEntropyGradient(
        norm=float(g.norm()),
        mcse=math.sqrt(spread),
        chain_norms=[float(c.norm()) for c in result.chain_grads],
        grad_norm=float(grad.norm()),
        cosine=cosine,
        grad_evals=result.grad_evals,
    )
