"""Exact stationary laws of the samplers on a quadratic potential, and moment checks with MCSEs.

On U(x) = 1/2 (x - m)^T M (x - m) every sampler here is a linear recursion driven by Gaussian noise, so its
stationary law is Gaussian with the exact mean m and a covariance that solves a discrete Lyapunov equation
Sigma = A Sigma A^T + Q (``scipy.linalg.solve_discrete_lyapunov``). Tests compare sampled moments with these
exact laws, not with the target T M^{-1}, which they only approach as the step size goes to 0.

Sampled moments are judged with Monte Carlo standard errors from ``arviz_stats.mcse`` (no hand-written ESS)
and a Bonferroni-corrected z threshold, so that the family of comparisons in one test fails by chance with
probability about ``FAMILY_LEVEL``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import arviz_stats
import numpy as np
import torch
from scipy import linalg, stats

FAMILY_LEVEL = 1e-3


# --------------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GaussianTarget:
    """U(x) = 1/2 (x - mean)^T precision (x - mean); the target exp(-U / T) has covariance T precision^-1."""

    mean: np.ndarray
    precision: np.ndarray

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def eigenvalues(self) -> np.ndarray:
        return np.linalg.eigvalsh(self.precision)

    @property
    def lambda_max(self) -> float:
        return float(self.eigenvalues[-1])

    def covariance(self, temperature: float = 1.0) -> np.ndarray:
        return temperature * np.linalg.inv(self.precision)

    def grad_fn(self, dtype: torch.dtype = torch.float64):
        """x (n_chains, d) -> grad U(x) = (x - m) M, for a batch of chains (M is symmetric)."""
        m = torch.as_tensor(self.mean, dtype=dtype)
        M = torch.as_tensor(self.precision, dtype=dtype)
        return lambda x: (x - m) @ M

    def init(self, n_chains: int, generator: torch.Generator, scale: float = 1.0) -> torch.Tensor:
        """Random starting points around the mean (never exactly at the mode: pSGLD needs a nonzero gradient)."""
        noise = torch.randn(n_chains, self.dim, generator=generator, dtype=torch.float64)
        return torch.as_tensor(self.mean) + scale * noise


def gaussian_target(dim: int, condition: float, seed: int, lambda_max: float = 1.0) -> GaussianTarget:
    """A correlated, ill-conditioned Gaussian: log-spaced eigenvalues in [lambda_max / condition, lambda_max],
    a random rotation and a nonzero mean."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    q = q * np.sign(np.diag(r))  # a Haar-distributed rotation
    eig = lambda_max * np.geomspace(1.0 / condition, 1.0, dim)
    precision = (q * eig) @ q.T
    precision = (precision + precision.T) / 2
    mean = rng.normal(scale=2.0, size=dim)
    return GaussianTarget(mean=mean, precision=precision)


# --------------------------------------------------------------------------------------------------------
# Exact stationary covariances
# --------------------------------------------------------------------------------------------------------


def _lyapunov(A: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The stationary covariance of x' = A x + noise(cov Q): Sigma = A Sigma A^T + Q (A must be stable)."""
    radius = np.max(np.abs(np.linalg.eigvals(A)))
    if radius >= 1:
        raise ValueError(f"the recursion is unstable (spectral radius {radius:.4f} >= 1)")
    sigma = linalg.solve_discrete_lyapunov(A, Q)
    return (sigma + sigma.T) / 2


def sgld_covariance_formula(M: np.ndarray, step_size: float, temperature: float = 1.0) -> np.ndarray:
    """SGLD's stationary covariance in closed form (docs/background.md): T M^{-1} (I - h M / 2)^{-1}."""
    eye = np.eye(M.shape[0])
    return temperature * np.linalg.inv(M) @ np.linalg.inv(eye - step_size * M / 2)


def sgld_covariance(M: np.ndarray, step_size: float, temperature: float = 1.0) -> np.ndarray:
    """SGLD, x' = (I - h M) x + sqrt(2 h T) xi, by the Lyapunov equation."""
    d = M.shape[0]
    return _lyapunov(np.eye(d) - step_size * M, 2 * step_size * temperature * np.eye(d))


def sghmc_joint_covariance(
    M: np.ndarray, step_size: float, friction: float, temperature: float = 1.0, noise_estimate: float = 0.0
) -> np.ndarray:
    """SGHMC's stationary covariance of the joint state (x, v), shape (2d, 2d).

    v' = (1 - a) v - eta M x + c xi and x' = x + v' (the *new* v), c^2 = 2 (a - beta_hat) eta T, so
    (x', v') = [[I - eta M, (1 - a) I], [-eta M, (1 - a) I]] (x, v) + c (xi, xi).
    """
    d = M.shape[0]
    eye = np.eye(d)
    A = np.block([[eye - step_size * M, (1 - friction) * eye], [-step_size * M, (1 - friction) * eye]])
    c2 = 2 * (friction - noise_estimate) * step_size * temperature
    Q = c2 * np.block([[eye, eye], [eye, eye]])
    return _lyapunov(A, Q)


def sghmc_covariance(
    M: np.ndarray, step_size: float, friction: float, temperature: float = 1.0, noise_estimate: float = 0.0
) -> np.ndarray:
    """SGHMC's stationary covariance of the position x alone."""
    d = M.shape[0]
    return sghmc_joint_covariance(M, step_size, friction, temperature, noise_estimate)[:d, :d]


def psgld_frozen_covariance(
    M: np.ndarray, step_size: float, preconditioner: np.ndarray, temperature: float = 1.0
) -> np.ndarray:
    """pSGLD with a frozen diagonal preconditioner D: x' = (I - h D M) x + sqrt(2 h T) D^{1/2} xi."""
    D = np.diag(preconditioner)
    return _lyapunov(np.eye(M.shape[0]) - step_size * D @ M, 2 * step_size * temperature * D)


# --------------------------------------------------------------------------------------------------------
# Moment checks
# --------------------------------------------------------------------------------------------------------


def bonferroni_z(n_comparisons: int, family_level: float = FAMILY_LEVEL) -> float:
    """Two-sided z threshold for ``n_comparisons`` tests at family-wise level ``family_level``."""
    return float(stats.norm.ppf(1 - family_level / (2 * n_comparisons)))


def to_numpy(draws: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(draws, torch.Tensor):
        draws = draws.detach().cpu().numpy()
    return np.asarray(draws, dtype=np.float64)


@dataclass
class MomentCheck:
    """Sampled moments beside the exact ones, with MCSEs and the z threshold."""

    names: list[str]
    estimate: np.ndarray
    truth: np.ndarray
    mcse: np.ndarray
    z: float
    quantities: np.ndarray = field(
        repr=False
    )  # (n_chains, n_draws, n_entries): the chains whose means are the estimates

    @property
    def ess(self) -> np.ndarray:
        """Bulk ESS of each entry, for messages only (computed on demand: it costs more than the MCSE)."""
        return np.asarray(arviz_stats.ess(self.quantities, method="bulk"), dtype=np.float64)

    @property
    def zscores(self) -> np.ndarray:
        return (self.estimate - self.truth) / self.mcse

    @property
    def passed(self) -> bool:
        return bool(np.all(np.abs(self.estimate - self.truth) <= self.z * self.mcse))

    def report(self, limit: int = 12) -> str:
        order = np.argsort(-np.abs(self.zscores))[:limit]
        lines = [f"z threshold {self.z:.2f} over {len(self.names)} entries; worst entries:"]
        ess = self.ess
        for i in order:
            lines.append(
                f"  {self.names[i]:>10}: estimate {self.estimate[i]: .5f}  truth {self.truth[i]: .5f}  "
                f"mcse {self.mcse[i]:.2e}  z {self.zscores[i]: .2f}  bulk ESS {ess[i]:.0f}"
            )
        return "\n".join(lines)


def moment_check(
    draws: torch.Tensor | np.ndarray,
    mean: np.ndarray,
    covariance: np.ndarray,
    *,
    family_level: float = FAMILY_LEVEL,
) -> MomentCheck:
    """Compare the per-coordinate means and the covariance entries (upper triangle) of ``draws``
    (shape (n_chains, n_draws, d)) with the exact ``mean`` and ``covariance``.

    Each covariance entry is estimated as the mean of (x_i - m_i)(x_j - m_j) with the exact mean m, so that
    every estimate is a plain mean of a scalar chain and gets its MCSE from ``arviz_stats.mcse``.
    """
    x = to_numpy(draws)
    if x.ndim != 3:
        raise ValueError(f"draws must have shape (n_chains, n_draws, d), got {x.shape}")
    d = x.shape[-1]
    mean = np.asarray(mean, dtype=np.float64)
    covariance = np.asarray(covariance, dtype=np.float64)
    centred = x - mean
    iu, ju = np.triu_indices(d)
    products = centred[..., iu] * centred[..., ju]
    quantities = np.concatenate([x, products], axis=-1)
    truth = np.concatenate([mean, covariance[iu, ju]])
    names = [f"mean[{i}]" for i in range(d)] + [f"cov[{i},{j}]" for i, j in zip(iu, ju, strict=True)]
    estimate = quantities.mean(axis=(0, 1))
    mcse = np.asarray(arviz_stats.mcse(quantities, method="mean"), dtype=np.float64)
    return MomentCheck(
        names=names,
        estimate=estimate,
        truth=truth,
        mcse=mcse,
        z=bonferroni_z(len(names), family_level),
        quantities=quantities,
    )


def assert_moments(
    draws: torch.Tensor | np.ndarray,
    mean: np.ndarray,
    covariance: np.ndarray,
    *,
    family_level: float = FAMILY_LEVEL,
    label: str = "",
) -> MomentCheck:
    """Assert that every mean and covariance entry of ``draws`` lies within z * MCSE of the exact value."""
    check = moment_check(draws, mean, covariance, family_level=family_level)
    assert check.passed, f"{label}: sampled moments differ from the exact stationary law\n{check.report()}"
    return check


def sample_covariance(draws: torch.Tensor | np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The covariance of ``draws`` (n_chains, n_draws, d) about a known ``mean``."""
    x = to_numpy(draws) - np.asarray(mean)
    x = x.reshape(-1, x.shape[-1])
    return x.T @ x / x.shape[0]


def relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Frobenius-norm relative error."""
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))
