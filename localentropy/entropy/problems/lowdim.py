"""Non-convex losses on R^1 and R^2 whose local entropy and Gibbs moments come from quadrature.

Both classes get the Gibbs mean, covariance, local entropy F and the proximal point from
:class:`~localentropy.entropy.problems.quadrature.QuadratureProblem` (methods ``"grid"``, ``"adaptive"``,
``"hermite"``), and give Gaussian smoothing f_sigma(x) = E f(x + sigma xi) in closed form (``method="closed"``,
the default), by composite Gauss-Legendre (``"grid"``) or by Gauss-Hermite (``"hermite"``). All computation is in
float64; results come back in the input's dtype. Parameters are fixed at construction (results are cached).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from localentropy._checks import check_int, check_positive, check_real
from localentropy.entropy.problems.base import Minimum
from localentropy.entropy.problems.quadrature import QuadratureProblem

__all__ = ["DoubleWell", "Minimum", "SharpWide"]


def _xp(y):
    """numpy for arrays, torch for tensors: the formulas below serve both (numpy is the fast path for quadrature)."""
    return np if isinstance(y, np.ndarray) else torch


def _check_dim(dim: int) -> int:
    dim = check_int("dim", dim)
    if dim not in (1, 2):
        raise ValueError(f"dim must be 1 or 2 (quadrature problems), got {dim}")
    return dim


def _sq(y):
    """||y||^2 over the last axis, written out (torch's reductions over a tiny last axis are slow)."""
    out = y[..., 0] ** 2
    for k in range(1, y.shape[-1]):
        out = out + y[..., k] ** 2
    return out


class DoubleWell(QuadratureProblem):
    r"""f(x) = height (x_1^2 - 1)^2, plus (curvature / 2) x_2^2 when dim = 2.

    Two minima of equal loss 0 at x_1 = -1 and x_1 = +1 (x_2 = 0), Hessian diag(8 height, curvature) there,
    separated by a barrier of height ``height`` at x_1 = 0 (where f'' = -4 height).

    Parameters: ``dim`` (1 or 2, default 1), ``height`` (> 0, default 1), ``curvature`` (> 0, default 1; the
    harmonic direction x_2, used only when dim = 2).

    Gaussian smoothing in closed form (E X^2 = x^2 + s^2, E X^4 = x^4 + 6 x^2 s^2 + 3 s^4):
        f_sigma(x) = height [(x_1^2 - 1)^2 + 6 x_1^2 sigma^2 + 3 sigma^4 - 2 sigma^2] + curvature/2 (x_2^2 + sigma^2),
        grad f_sigma(x) = (height (4 x_1^3 - 4 x_1 + 12 x_1 sigma^2), curvature x_2);
    for sigma^2 > 1/3 the smoothed loss has a single minimum at 0.
    """

    def __init__(self, dim: int = 1, height: float = 1.0, curvature: float = 1.0) -> None:
        self.dim = _check_dim(dim)
        self.height = check_positive("height", height)
        self.curvature = check_positive("curvature", curvature)

    def __repr__(self) -> str:
        return f"DoubleWell(dim={self.dim}, height={self.height:g}, curvature={self.curvature:g})"

    def _f(self, y: Tensor) -> Tensor:
        out = self.height * (y[..., 0] ** 2 - 1) ** 2
        return out + 0.5 * self.curvature * y[..., 1] ** 2 if self.dim == 2 else out

    def _df(self, y: Tensor) -> Tensor:
        d1 = 4 * self.height * y[..., 0] * (y[..., 0] ** 2 - 1)
        return _xp(y).stack([d1, self.curvature * y[..., 1]], -1) if self.dim == 2 else d1[..., None]

    def _d2f(self, y: Tensor) -> Tensor:
        h = _xp(y).zeros((*y.shape, self.dim), dtype=y.dtype)
        h[..., 0, 0] = self.height * (12 * y[..., 0] ** 2 - 4)
        if self.dim == 2:
            h[..., 1, 1] = self.curvature
        return h

    def _f_scalar(self, y: tuple[float, ...]) -> float:
        out = self.height * (y[0] * y[0] - 1.0) ** 2
        return out + 0.5 * self.curvature * y[1] * y[1] if self.dim == 2 else out

    def _minorant(self) -> tuple[float, np.ndarray, np.ndarray]:
        # (x^2 - 1)^2 - (2 x^2 - 3) = (x^2 - 2)^2 >= 0
        q = np.array([4 * self.height, self.curvature][: self.dim])
        return -3 * self.height, q, np.zeros(self.dim)

    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        centres = np.zeros((3, self.dim))
        centres[:, 0] = [-1.0, 0.0, 1.0]
        scales = np.tile([0.5, min(1.0, 1 / math.sqrt(self.curvature))][: self.dim], (3, 1))
        return centres, scales

    def _smoothed(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        s2, x1 = sigma**2, y[..., 0]
        loss = self.height * ((x1**2 - 1) ** 2 + 6 * x1**2 * s2 + 3 * s2**2 - 2 * s2)
        g1 = self.height * (4 * x1**3 - 4 * x1 + 12 * x1 * s2)
        if self.dim == 1:
            return loss, g1[..., None]
        x2 = y[..., 1]
        return loss + 0.5 * self.curvature * (x2**2 + s2), torch.stack([g1, self.curvature * x2], -1)


class SharpWide(QuadratureProblem):
    r"""A sharp, deeper minimum and a wide, shallower one in a weak quadratic bowl.

        f(x) = -a_s exp(-||x - c_s||^2 / (2 w_s^2)) - a_w exp(-||x - c_w||^2 / (2 w_w^2)) + (q / 2) ||x||^2,

    with the centres on the first axis: c_s = (sharp_center, 0), c_w = (wide_center, 0) in 2-D.

    Parameters and defaults: ``dim`` 1 or 2 (1); ``sharp_depth`` a_s = 1.0, ``sharp_width`` w_s = 0.1,
    ``sharp_center`` -1.5; ``wide_depth`` a_w = 0.7, ``wide_width`` w_w = 1.0, ``wide_center`` 1.5;
    ``confinement`` q = 0.05 (> 0: it makes every integral exist for gamma > 0 and bounds f from below).

    At the defaults the sharp minimum (x_1 = -1.499, f = -0.952, Hessian eigenvalue 99.97) has the lower loss,
    the wide one (x_1 = 1.400, f = -0.648, Hessian 0.739) the larger basin. In 1-D, -F(x) = -(local entropy):
      * T <= 0.1 (any gamma in [0.1, 10]): -F is lowest at the sharp minimum, like f;
      * T in [0.2, 0.3], gamma in [0.3, 3]: both minima are stationary points of -F, the wide one the lower;
      * moderate scope and temperature, e.g. gamma = 0.5, T = 0.5 (also gamma = 0.3, T = 0.3; gamma = 1, T = 1):
        the sharp minimum is no longer a stationary point of -F, and following -g from it (or from the
        origin) ends near the wide minimum (x_1 ~ 1.25), the only minimiser of -F
    (``tests/entropy/test_problems_lowdim.py`` checks these). In 2-D the sharp well weighs even less: its volume factor
    relative to the flat background, (gamma / (100 + gamma))^(dim/2), is squared.

    Gaussian smoothing in closed form: E exp(-||x + sigma xi - c||^2 / (2 w^2)) =
    (w^2 / (w^2 + sigma^2))^(dim/2) exp(-||x - c||^2 / (2 (w^2 + sigma^2))), and E q/2 ||x + sigma xi||^2 =
    q/2 (||x||^2 + dim sigma^2).
    """

    def __init__(
        self,
        dim: int = 1,
        sharp_depth: float = 1.0,
        sharp_width: float = 0.1,
        sharp_center: float = -1.5,
        wide_depth: float = 0.7,
        wide_width: float = 1.0,
        wide_center: float = 1.5,
        confinement: float = 0.05,
    ) -> None:
        self.dim = _check_dim(dim)
        self.depths = (check_positive("sharp_depth", sharp_depth), check_positive("wide_depth", wide_depth))
        self.widths = (check_positive("sharp_width", sharp_width), check_positive("wide_width", wide_width))
        centres = (check_real("sharp_center", sharp_center), check_real("wide_center", wide_center))
        if centres[0] == centres[1]:
            raise ValueError(f"sharp_center and wide_center must differ, both are {centres[0]!r}")
        self.centres = np.zeros((2, self.dim))
        self.centres[:, 0] = centres
        self.confinement = check_positive("confinement", confinement)

    def __repr__(self) -> str:
        (a_s, a_w), (w_s, w_w), (c_s, c_w) = self.depths, self.widths, self.centres[:, 0]
        return (
            f"SharpWide(dim={self.dim}, sharp_depth={a_s:g}, sharp_width={w_s:g}, sharp_center={c_s:g}, "
            f"wide_depth={a_w:g}, wide_width={w_w:g}, wide_center={c_w:g}, confinement={self.confinement:g})"
        )

    def _bumps(self, y: Tensor, extra: float = 0.0):
        """(a_i (w_i^2 / (w_i^2 + extra))^(dim/2) exp(-r_i^2 / (2 (w_i^2 + extra))), y - c_i, w_i^2 + extra)."""
        xp = _xp(y)
        centres = self.centres if xp is np else torch.from_numpy(self.centres).to(y.dtype)
        for a, w, c in zip(self.depths, self.widths, centres, strict=True):
            v = w * w + extra
            diff = y - c
            yield a * (w * w / v) ** (self.dim / 2) * xp.exp(-_sq(diff) / (2 * v)), diff, v

    def _f(self, y: Tensor) -> Tensor:
        out = 0.5 * self.confinement * _sq(y)
        for g, _, _ in self._bumps(y):
            out = out - g
        return out

    def _df(self, y: Tensor) -> Tensor:
        out = self.confinement * y
        for g, diff, v in self._bumps(y):
            out = out + (g / v)[..., None] * diff
        return out

    def _d2f(self, y: Tensor) -> Tensor:
        eye = _xp(y).eye(self.dim, dtype=y.dtype)
        out = self.confinement * eye
        for g, diff, v in self._bumps(y):
            outer = diff[..., :, None] * diff[..., None, :] / v
            out = out + (g / v)[..., None, None] * (eye - outer)
        return out

    def _f_scalar(self, y: tuple[float, ...]) -> float:
        (a_s, a_w), (w_s, w_w), (c_s, c_w) = self.depths, self.widths, self.centres[:, 0].tolist()
        r2 = y[1] * y[1] if len(y) == 2 else 0.0  # the centres lie on the first axis
        return (
            0.5 * self.confinement * (y[0] * y[0] + r2)
            - a_s * math.exp(-((y[0] - c_s) ** 2 + r2) / (2 * w_s * w_s))
            - a_w * math.exp(-((y[0] - c_w) ** 2 + r2) / (2 * w_w * w_w))
        )

    def _minorant(self) -> tuple[float, np.ndarray, np.ndarray]:
        return -sum(self.depths), np.full(self.dim, self.confinement), np.zeros(self.dim)

    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        return self.centres.copy(), np.repeat(np.array(self.widths)[:, None], self.dim, 1)

    def _smoothed(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        s2 = sigma**2
        loss = 0.5 * self.confinement * (_sq(y) + self.dim * s2)
        grad = self.confinement * y
        for g, diff, v in self._bumps(y, s2):
            loss = loss - g
            grad = grad + (g / v)[..., None] * diff
        return loss, grad
