"""Quadratic losses: every quantity of local entropy and of direct smoothing in closed form."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from localentropy._checks import check_int, check_nonnegative, check_range
from localentropy.entropy.problems.base import Problem, check_gamma_temperature


class Quadratic(Problem):
    r"""f(x) = 1/2 x^T A x - b^T x with A symmetric, possibly indefinite.

    With M = A + gamma I positive definite the Gibbs measure is Gaussian:
        rho(. | x) = N(m, T M^{-1}),   m = M^{-1} (b + gamma x),
        g(x) = gamma (x - m) = gamma M^{-1} (A x - b),
    which does not depend on T; as gamma -> infinity, g -> grad f. Gaussian smoothing leaves a quadratic's
    gradient unchanged: grad f_sigma = grad f = A x - b. Computation is in float64; results come back in the
    input's dtype.
    """

    def __init__(self, A: Tensor | np.ndarray, b: Tensor | np.ndarray | None = None) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] < 1:
            raise ValueError(f"A must be a square matrix, got shape {tuple(A.shape)}")
        if not torch.isfinite(A).all():
            raise ValueError("A must be finite")
        if not torch.allclose(A, A.T, rtol=1e-10, atol=1e-12 * float(A.abs().max().clamp_min(1.0))):
            raise ValueError("A must be symmetric")
        self.dim = A.shape[0]
        self.A = (A + A.T) / 2
        b = torch.zeros(self.dim, dtype=torch.float64) if b is None else torch.as_tensor(b, dtype=torch.float64)
        if b.shape != (self.dim,) or not torch.isfinite(b).all():
            raise ValueError(f"b must be a finite vector of length {self.dim}, got shape {tuple(b.shape)}")
        self.b = b
        self.eigenvalues = torch.linalg.eigvalsh(self.A)

    @classmethod
    def random(cls, dim: int, condition: float, n_negative: int = 0, seed: int = 0) -> Quadratic:
        """A random rotation of eigenvalues whose magnitudes are log-spaced over [1, condition].

        ``condition`` = max |eigenvalue| / min |eigenvalue|. The ``n_negative`` eigenvalues of smallest
        magnitude are made negative (mild saddle directions), so gamma > their largest magnitude makes
        A + gamma I positive definite. b = A x*, with x* ~ N(0, I), puts the stationary point at x*.
        """
        dim = check_int("dim", dim, 1)
        condition = check_range("condition", condition, 1.0)
        n_negative = check_int("n_negative", n_negative, 0)
        if n_negative > dim:
            raise ValueError(f"n_negative must be in [0, dim={dim}], got {n_negative}")
        if dim == 1 and condition != 1.0:
            raise ValueError(f"a 1-D quadratic has condition number 1, got condition={condition:g}")
        rng = np.random.default_rng(check_int("seed", seed, 0))
        magnitudes = np.geomspace(1.0, condition, dim)
        signs = np.ones(dim)
        signs[:n_negative] = -1.0
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))  # a Haar-distributed rotation
        A = (q * (signs * magnitudes)) @ q.T
        x_star = rng.standard_normal(dim)
        return cls(A, A @ x_star)

    def _coupled(self, gamma: float) -> Tensor:
        lowest = float(self.eigenvalues[0]) + gamma
        if lowest <= 0:
            raise ValueError(
                f"A + gamma I is not positive definite for gamma={gamma:g}: its smallest eigenvalue is "
                f"{lowest:.6g}; the Gibbs measure needs gamma > {-float(self.eigenvalues[0]):.6g}"
            )
        return self.A + gamma * torch.eye(self.dim, dtype=torch.float64)

    def loss(self, x: Tensor) -> Tensor:
        x = self._point(x)
        x64 = x.to(torch.float64)
        return (0.5 * ((x64 @ self.A) * x64).sum(-1) - x64 @ self.b).to(x.dtype)

    def grad(self, x: Tensor) -> Tensor:
        x = self._point(x)
        return (x @ self.A.to(x.dtype)) - self.b.to(x.dtype)

    def gibbs_mean(self, x: Tensor, gamma: float, temperature: float | None = None) -> Tensor:
        """m = (A + gamma I)^{-1} (b + gamma x); independent of the temperature."""
        x = self._point(x)
        gamma, _ = check_gamma_temperature(gamma, 1.0 if temperature is None else temperature)
        M = self._coupled(gamma)
        rhs = (self.b + gamma * x.to(torch.float64)).unsqueeze(-1)
        return torch.linalg.solve(M, rhs).squeeze(-1).to(x.dtype)

    def gibbs_cov(self, gamma: float, temperature: float, x: Tensor | None = None) -> Tensor:
        """T (A + gamma I)^{-1}; the same at every x (``x`` may be None)."""
        gamma, temperature = check_gamma_temperature(gamma, temperature)
        return temperature * torch.linalg.inv(self._coupled(gamma))

    def local_entropy_grad(self, x: Tensor, gamma: float, temperature: float | None = None) -> Tensor:
        """g(x) = gamma (A + gamma I)^{-1} (A x - b), computed directly (no cancellation in x - m)."""
        x = self._point(x)
        gamma, _ = check_gamma_temperature(gamma, 1.0 if temperature is None else temperature)
        M = self._coupled(gamma)
        residual = (x.to(torch.float64) @ self.A - self.b).unsqueeze(-1)
        return (gamma * torch.linalg.solve(M, residual).squeeze(-1)).to(x.dtype)

    def smoothed_grad(self, x: Tensor, sigma: float) -> Tensor:
        """grad f_sigma = grad f: Gaussian smoothing does not change a quadratic's gradient."""
        check_nonnegative("sigma", sigma)
        return self.grad(x)

    def smoothed_loss(self, x: Tensor, sigma: float) -> Tensor:
        """f_sigma(x) = f(x) + sigma^2 tr(A) / 2."""
        sigma = check_nonnegative("sigma", sigma)
        return self.loss(x) + 0.5 * sigma**2 * float(torch.trace(self.A))

    def proximal_point(self, x: Tensor, gamma: float) -> Tensor:
        """argmin_x' f(x') + gamma/2 ||x' - x||^2, the T -> 0 limit of <x'> (equal to it here)."""
        return self.gibbs_mean(x, gamma)

    def max_stable_step(self, gamma: float) -> float:
        """2 / lambda_max(A + gamma I): SGLD on the inner potential diverges for step sizes at or above it."""
        gamma = check_gamma_temperature(gamma, 1.0)[0]
        self._coupled(gamma)  # no step is stable unless A + gamma I is positive definite
        return 2.0 / (float(self.eigenvalues[-1]) + gamma)
