"""The atlas's bank of targets: densities exp(-U(x)) (temperature 1) whose mean and covariance are known exactly.

Each target gives, for a batch of chains x of shape (n_chains, d): grad U, U itself (for exact samplers), the
Laplacian of U (for the configurational temperature, below) and exact independent draws (the chains start from
the target, so a run measures the sampler's stationary bias rather than its burn-in).

Configurational temperature: for any density proportional to exp(-U / T), integrating by parts gives
E[|grad U|^2] = T E[Laplacian U], so T_conf = mean |grad U|^2 / mean Laplacian U estimates the temperature that a
chain actually samples at, on any target (it equals T for an unbiased sampler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

DTYPE = torch.float64


@dataclass
class Target:
    """A target with exact moments. Subclasses implement the four maps; ``mean`` and ``covariance`` are exact."""

    name: str
    mean: np.ndarray
    covariance: np.ndarray
    description: str = ""
    hessian: np.ndarray | None = field(default=None, repr=False)  # Gaussians only

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def scale(self) -> float:
        """sqrt(trace of the covariance): the spread of the law, the unit of the mean error."""
        return math.sqrt(float(np.trace(self.covariance)))

    def grad(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def potential(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def laplacian(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def draw(self, n: int, rng: np.random.Generator) -> Tensor:
        raise NotImplementedError


@dataclass
class Gaussian(Target):
    """U(x) = 1/2 (x - m)^T M (x - m)."""

    def __post_init__(self) -> None:
        self._m = torch.as_tensor(self.mean, dtype=DTYPE)
        self._M = torch.as_tensor(self.hessian, dtype=DTYPE)
        self._chol = np.linalg.cholesky(self.covariance)

    def grad(self, x: Tensor) -> Tensor:
        return (x - self._m) @ self._M

    def potential(self, x: Tensor) -> Tensor:
        y = x - self._m
        return 0.5 * ((y @ self._M) * y).sum(-1)

    def laplacian(self, x: Tensor) -> Tensor:
        return torch.full(x.shape[:1], float(np.trace(self.hessian)), dtype=x.dtype)

    def draw(self, n: int, rng: np.random.Generator) -> Tensor:
        return torch.as_tensor(self.mean + rng.standard_normal((n, self.dim)) @ self._chol.T, dtype=DTYPE)


def ill_conditioned_gaussian(dim: int = 20, condition: float = 1000.0, seed: int = 0) -> Gaussian:
    """Eigenvalues log-spaced in [1 / condition, 1], a random rotation and a nonzero mean."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))
    eig = np.geomspace(1.0 / condition, 1.0, dim)
    hessian = (q * eig) @ q.T
    hessian = (hessian + hessian.T) / 2
    covariance = (q / eig) @ q.T
    return Gaussian(
        name=f"gaussian{dim}",
        mean=rng.normal(scale=1.0, size=dim),
        covariance=(covariance + covariance.T) / 2,
        hessian=hessian,
        description=f"{dim}-D Gaussian, Hessian eigenvalues log-spaced in [{1 / condition:g}, 1] (condition "
        f"{condition:g}), rotated",
    )


@dataclass
class Banana(Target):
    """The twisted Gaussian x1 = s z1, x2 = b (x1^2 - s^2) + z2 (z ~ N(0, I)):
    U(x) = x1^2 / (2 s^2) + (x2 - b (x1^2 - s^2))^2 / 2; mean 0, covariance diag(s^2, 1 + 2 b^2 s^4)."""

    s: float = 1.0
    b: float = 0.5

    def _residual(self, x: Tensor) -> Tensor:
        return x[:, 1] - self.b * (x[:, 0] ** 2 - self.s**2)

    def grad(self, x: Tensor) -> Tensor:
        r = self._residual(x)
        return torch.stack([x[:, 0] / self.s**2 - 2 * self.b * x[:, 0] * r, r], dim=1)

    def potential(self, x: Tensor) -> Tensor:
        return x[:, 0] ** 2 / (2 * self.s**2) + self._residual(x) ** 2 / 2

    def laplacian(self, x: Tensor) -> Tensor:
        return 1 / self.s**2 - 2 * self.b * self._residual(x) + 4 * self.b**2 * x[:, 0] ** 2 + 1

    def draw(self, n: int, rng: np.random.Generator) -> Tensor:
        z = rng.standard_normal((n, 2))
        x1 = self.s * z[:, 0]
        return torch.as_tensor(np.stack([x1, self.b * (x1**2 - self.s**2) + z[:, 1]], axis=1), dtype=DTYPE)


def banana(s: float = 1.0, b: float = 0.5) -> Banana:
    return Banana(
        name="banana",
        mean=np.zeros(2),
        covariance=np.diag([s**2, 1 + 2 * b**2 * s**4]),
        description=f"twisted Gaussian, x1 = {s:g} z1, x2 = {b:g} (x1^2 - {s**2:g}) + z2",
        s=s,
        b=b,
    )


@dataclass
class StudentT(Target):
    """Independent Student-t coordinates with ``dof`` degrees of freedom and scales s_i:
    U(x) = sum_i (nu + 1) / 2 log(1 + x_i^2 / (nu s_i^2)); covariance nu / (nu - 2) diag(s^2)."""

    dof: float = 5.0
    scales: tuple[float, ...] = (1.0, 3.0)

    def __post_init__(self) -> None:
        self._s2 = torch.tensor([s * s for s in self.scales], dtype=DTYPE)

    def grad(self, x: Tensor) -> Tensor:
        return (self.dof + 1) * x / (self.dof * self._s2 + x * x)

    def potential(self, x: Tensor) -> Tensor:
        return ((self.dof + 1) / 2 * torch.log1p(x * x / (self.dof * self._s2))).sum(-1)

    def laplacian(self, x: Tensor) -> Tensor:
        denominator = self.dof * self._s2 + x * x
        return ((self.dof + 1) * (self.dof * self._s2 - x * x) / denominator**2).sum(-1)

    def draw(self, n: int, rng: np.random.Generator) -> Tensor:
        return torch.as_tensor(
            rng.standard_t(self.dof, size=(n, len(self.scales))) * np.array(self.scales), dtype=DTYPE
        )


def student_t(dof: float = 5.0, scales: tuple[float, ...] = (1.0, 3.0)) -> StudentT:
    if dof <= 4:
        raise ValueError(f"dof must be > 4 (finite fourth moments, so the covariance error has an MCSE), got {dof}")
    return StudentT(
        name="student_t",
        mean=np.zeros(len(scales)),
        covariance=dof / (dof - 2) * np.diag(np.square(scales)),
        description=f"independent Student-t, {dof:g} degrees of freedom, scales {', '.join(f'{s:g}' for s in scales)}",
        dof=dof,
        scales=scales,
    )


@dataclass
class Mixture(Target):
    """sum_k w_k N(m_k, I): unit-covariance components, so U, its gradient and Laplacian are closed-form."""

    weights: tuple[float, ...] = (0.3, 0.7)
    centres: tuple[tuple[float, ...], ...] = ((-1.5, -0.5), (1.5, 0.5))

    def __post_init__(self) -> None:
        self._c = torch.tensor(self.centres, dtype=DTYPE)  # (K, d)
        self._logw = torch.log(torch.tensor(self.weights, dtype=DTYPE))

    def _responsibilities(self, x: Tensor) -> tuple[Tensor, Tensor]:
        diff = x[:, None, :] - self._c[None]  # (n, K, d)
        logits = self._logw - 0.5 * (diff * diff).sum(-1)
        return torch.softmax(logits, dim=1), diff

    def grad(self, x: Tensor) -> Tensor:
        r, diff = self._responsibilities(x)
        return (r[..., None] * diff).sum(1)

    def potential(self, x: Tensor) -> Tensor:
        diff = x[:, None, :] - self._c[None]
        return -torch.logsumexp(self._logw - 0.5 * (diff * diff).sum(-1), dim=1)

    def laplacian(self, x: Tensor) -> Tensor:
        # Laplacian U = d - (E_r |x - m_k|^2 - |E_r (x - m_k)|^2), r the responsibilities
        r, diff = self._responsibilities(x)
        mean_diff = (r[..., None] * diff).sum(1)
        spread = (r * (diff * diff).sum(-1)).sum(1) - (mean_diff * mean_diff).sum(-1)
        return x.shape[1] - spread

    def draw(self, n: int, rng: np.random.Generator) -> Tensor:
        k = rng.choice(len(self.weights), size=n, p=np.array(self.weights))
        return torch.as_tensor(np.array(self.centres)[k] + rng.standard_normal((n, self.dim)), dtype=DTYPE)


def mixture(
    weights: tuple[float, ...] = (0.3, 0.7), centres: tuple[tuple[float, ...], ...] = ((-1.5, -0.5), (1.5, 0.5))
) -> Mixture:
    w, c = np.array(weights), np.array(centres)
    mean = w @ c
    covariance = np.eye(c.shape[1]) + (c.T * w) @ c - np.outer(mean, mean)
    return Mixture(
        name="mixture",
        mean=mean,
        covariance=covariance,
        description=f"two unit-covariance Gaussians, weights {weights}, centres {centres} (3 apart: chains cross)",
        weights=weights,
        centres=centres,
    )


def target_bank() -> list[Target]:
    """The atlas's targets, in the order of its table."""
    return [ill_conditioned_gaussian(), banana(), student_t(), mixture()]
