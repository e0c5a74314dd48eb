"""The pieces of quadrature that know nothing of a problem: a local minimum's record, composite Gauss-Legendre
panels, and the moments of a weighted set of nodes (used by :mod:`localentropy.entropy.problems.quadrature`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from torch import Tensor

_GL_ORDER = 6


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


def gauss_legendre(breaks: np.ndarray, order: int = _GL_ORDER) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.legendre.leggauss(order)
    a, b = breaks[:-1, None], breaks[1:, None]
    return ((a + b) / 2 + (b - a) / 2 * z).ravel(), ((b - a) / 2 * w).ravel()



def weighted_moments(y: np.ndarray, e: np.ndarray, m0: np.ndarray, u_min: float, temperature: float):
    """log Z, mean and covariance from nodes y (n, d) and weights e = w exp(-(U - u_min) / T) (n,)."""
    s0 = e.sum()
    mean = m0 + e @ (y - m0) / s0
    c = y - mean
    cov = (c.T * e) @ c / s0
    return math.log(s0) - u_min / temperature, mean, cov
