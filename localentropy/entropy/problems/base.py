"""What every test problem offers: the loss, its gradient and exact answers for both kinds of smoothing.

Conventions: points are tensors whose last dimension is the problem's ``dim`` and
whose leading dimensions are a batch; the Gibbs measure around x is
rho(x' | x) ∝ exp(-[f(x') + (gamma / 2) ||x' - x||^2] / T), the local-entropy gradient that Entropy-SGD
descends is g(x) = gamma (x - <x'>), and Gaussian smoothing of the loss is
f_sigma(x) = E f(x + sigma xi), xi ~ N(0, I).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from localentropy._checks import check_nonnegative, check_positive


class Problem(ABC):
    """A loss f on R^dim whose local-entropy and smoothed gradients are known exactly (or by quadrature)."""

    dim: int

    @abstractmethod
    def loss(self, x: Tensor) -> Tensor:
        """f at each point: (..., dim) -> (...)."""

    @abstractmethod
    def grad(self, x: Tensor) -> Tensor:
        """grad f at each point: (..., dim) -> (..., dim)."""

    @abstractmethod
    def gibbs_mean(self, x: Tensor, gamma: float, temperature: float) -> Tensor:
        """<x'> under rho(. | x): (..., dim) -> (..., dim)."""

    @abstractmethod
    def gibbs_cov(self, gamma: float, temperature: float, x: Tensor | None = None) -> Tensor:
        """Covariance of rho(. | x): (..., dim) -> (..., dim, dim) (``x`` may be omitted where it is constant)."""

    @abstractmethod
    def smoothed_grad(self, x: Tensor, sigma: float) -> Tensor:
        """grad f_sigma(x) = E grad f(x + sigma xi): (..., dim) -> (..., dim)."""

    def local_entropy_grad(self, x: Tensor, gamma: float, temperature: float) -> Tensor:
        """g(x) = gamma (x - <x'>), the gradient of -F that Entropy-SGD descends."""
        gamma = check_positive("gamma", gamma)
        return gamma * (x - self.gibbs_mean(x, gamma, temperature))

    def _point(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"points must have last dimension {self.dim}, got shape {tuple(x.shape)}")
        return x


def check_gamma_temperature(gamma: float, temperature: float) -> tuple[float, float]:
    return check_positive("gamma", gamma), check_nonnegative("temperature", temperature)


@dataclass(frozen=True)
class Minimum:
    """A local minimum of f: where it is, its loss and the eigenvalues of the Hessian there (ascending)."""

    point: Tensor
    loss: float
    hessian_eigenvalues: Tensor

    @property
    def sharpness(self) -> float:
        """The largest Hessian eigenvalue."""
        return float(self.hessian_eigenvalues[-1])
