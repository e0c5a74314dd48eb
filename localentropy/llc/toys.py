r"""Two-dimensional potentials whose local learning coefficient at finite nbeta is known exactly, by quadrature.

The LLC measure p(w) ∝ exp(-nbeta L(w) - (localization / 2) ||w - w*||^2) is the Gibbs measure of
:class:`~localentropy.entropy.problems.quadrature.QuadratureProblem` with f = L, temperature T = 1 / nbeta and
scope gamma = localization / nbeta: exp(-U / T) with U = L + (gamma / 2) ||w - w*||^2. So

    lambda(nbeta, localization) = nbeta (E_p[L] - L(w*))

is one call of the project's grid quadrature (:meth:`QuadratureProblem.gibbs_loss_mean`). As nbeta -> infinity
with the localization fixed, lambda tends to the learning coefficient of L at w* = 0 (Watanabe 2009, Ch. 2;
normal crossings: lambda = min_j (h_j + 1) / (2 k_j) for L = prod_j w_j^(2 k_j) ... sums and products of them):

* :class:`Regular`: L = w1^2 + w2^2, lambda -> 1 (= d / 2); closed form 2 nbeta / (2 nbeta + localization);
* :class:`Crossing`: L = (w1 w2)^2, lambda -> 1/2 (the two-parameter deep linear network);
* :class:`Quartic`: L = w1^2 + w2^4, lambda -> 1/2 + 1/4 = 3/4.

Each class is a QuadratureProblem (loss, gradient, Hessian, the Gibbs moments, Gaussian smoothing in closed form),
so the samplers and estimators of the rest of the package run on it unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from localentropy._checks import check_positive
from localentropy.entropy.problems.quadrature import QuadratureProblem

__all__ = ["TOYS", "Crossing", "Quartic", "Regular", "exact_llc", "exact_local_free_energy", "toy"]

# feature scales from the wide arms down to the narrow ones at nbeta ~ 1e6: the grid puts panel breaks at
# half of each scale around w* = 0, so every width of the measure (which varies along the arms of (w1 w2)^2)
# is resolved by panels of Gauss-Legendre nodes
_SCALES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)


def _xp(y):
    return np if isinstance(y, np.ndarray) else torch


class _Toy(QuadratureProblem):
    dim = 2
    limit: float  # the learning coefficient at w* = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((len(_SCALES), 2)), np.repeat(np.array(_SCALES)[:, None], 2, 1)

    def _d2f(self, y):
        h = _xp(y).zeros((*y.shape, 2), dtype=y.dtype)
        self._fill_hessian(h, y[..., 0], y[..., 1])
        return h

    def _fill_hessian(self, h, a, b) -> None:
        raise NotImplementedError


class Regular(_Toy):
    """L(w) = w1^2 + w2^2: a regular minimum, lambda = d / 2 = 1."""

    limit = 1.0

    def _f(self, y):
        return y[..., 0] ** 2 + y[..., 1] ** 2

    def _df(self, y):
        return 2 * y

    def _fill_hessian(self, h, a, b) -> None:
        h[..., 0, 0] = 2.0
        h[..., 1, 1] = 2.0

    def _f_scalar(self, y: tuple[float, ...]) -> float:
        return y[0] * y[0] + y[1] * y[1]

    def _minorant(self) -> tuple[float, np.ndarray, np.ndarray]:
        return 0.0, np.array([2.0, 2.0]), np.zeros(2)

    def _smoothed(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        return y[..., 0] ** 2 + y[..., 1] ** 2 + 2 * sigma**2, 2 * y


class Crossing(_Toy):
    """L(w) = (w1 w2)^2: a normal crossing, lambda = 1/2 (multiplicity 2)."""

    limit = 0.5

    def _f(self, y):
        return (y[..., 0] * y[..., 1]) ** 2

    def _df(self, y):
        a, b = y[..., 0], y[..., 1]
        return _xp(y).stack([2 * a * b * b, 2 * a * a * b], -1)

    def _fill_hessian(self, h, a, b) -> None:
        h[..., 0, 0] = 2 * b * b
        h[..., 1, 1] = 2 * a * a
        h[..., 0, 1] = 4 * a * b
        h[..., 1, 0] = 4 * a * b

    def _f_scalar(self, y: tuple[float, ...]) -> float:
        return (y[0] * y[1]) ** 2

    def _minorant(self) -> tuple[float, np.ndarray, np.ndarray]:
        return 0.0, np.zeros(2), np.zeros(2)

    def _smoothed(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        # E (a + s xi)^2 = a^2 + s^2, independently in each coordinate
        p, q = y[..., 0] ** 2 + sigma**2, y[..., 1] ** 2 + sigma**2
        return p * q, torch.stack([2 * y[..., 0] * q, 2 * y[..., 1] * p], -1)


class Quartic(_Toy):
    """L(w) = w1^2 + w2^4: lambda = 1/2 + 1/4 = 3/4."""

    limit = 0.75

    def _f(self, y):
        return y[..., 0] ** 2 + y[..., 1] ** 4

    def _df(self, y):
        return _xp(y).stack([2 * y[..., 0], 4 * y[..., 1] ** 3], -1)

    def _fill_hessian(self, h, a, b) -> None:
        h[..., 0, 0] = 2.0
        h[..., 1, 1] = 12 * b * b

    def _f_scalar(self, y: tuple[float, ...]) -> float:
        return y[0] * y[0] + y[1] ** 4

    def _minorant(self) -> tuple[float, np.ndarray, np.ndarray]:
        return 0.0, np.array([2.0, 0.0]), np.zeros(2)

    def _smoothed(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        # E (b + s xi)^4 = b^4 + 6 b^2 s^2 + 3 s^4
        a, b, s2 = y[..., 0], y[..., 1], sigma**2
        loss = a**2 + s2 + b**4 + 6 * b**2 * s2 + 3 * s2**2
        return loss, torch.stack([2 * a, 4 * b**3 + 12 * b * s2], -1)


TOYS: dict[str, type[_Toy]] = {"regular": Regular, "crossing": Crossing, "quartic": Quartic}


def toy(name: str) -> _Toy:
    """The toy potential registered as ``name`` (``regular``, ``crossing``, ``quartic``)."""
    if name not in TOYS:
        raise ValueError(f"unknown LLC toy {name!r}; available: {', '.join(TOYS)}")
    return TOYS[name]()


def _settings(
    problem: QuadratureProblem, nbeta: float, localization: float, w_star: Tensor | None
) -> tuple[float, float, Tensor]:
    """nbeta and localization checked (both > 0), and w* as float64 (0 when not given)."""
    w = (
        torch.zeros(problem.dim, dtype=torch.float64)
        if w_star is None
        else torch.as_tensor(w_star, dtype=torch.float64)
    )
    return check_positive("nbeta", nbeta), check_positive("localization", localization), w


def exact_llc(problem: QuadratureProblem, nbeta: float, localization: float, w_star: Tensor | None = None) -> float:
    """nbeta (E_p[L] - L(w*)) by quadrature, p ∝ exp(-nbeta L - localization / 2 ||w - w*||^2) (w* = 0 default).

    The measure is the problem's Gibbs measure at T = 1 / nbeta and gamma = localization / nbeta (module docstring).
    """
    nbeta, localization, w = _settings(problem, nbeta, localization, w_star)
    mean = problem.gibbs_loss_mean(w, localization / nbeta, 1.0 / nbeta)
    return nbeta * (mean - float(problem.loss(w)))


def exact_local_free_energy(
    problem: QuadratureProblem, nbeta: float, localization: float, w_star: Tensor | None = None
) -> float:
    """F = -log ∫ exp(-nbeta (L(w) - L(w*))) N(w; w*, I / localization) dw by quadrature.

    Its derivative in log nbeta is the LLC at (nbeta, localization): dF / d log nbeta = nbeta E_p[L - L(w*)], and
    F ~ lambda log nbeta as nbeta -> infinity (Watanabe's free energy expansion with the localizing prior).
    """
    nbeta, localization, w = _settings(problem, nbeta, localization, w_star)
    t = 1.0 / nbeta
    # local_entropy = T log ∫ exp(-(L + gamma/2 ||.-w*||^2) / T): the normaliser of the prior is (loc / 2 pi)^(d/2)
    log_z = float(problem.local_entropy(w, localization / nbeta, t)) / t
    return -(log_z + nbeta * float(problem.loss(w)) + 0.5 * problem.dim * math.log(localization / (2 * math.pi)))
