"""Quadrature for the Gibbs measure of a loss on R^1 or R^2, accurate from large temperatures down to T ~ 1e-4.

The Gibbs measure around x is rho(x' | x) ∝ exp(-U(x') / T) with U(x') = f(x') + (gamma / 2) ||x' - x||^2
(see docs/estimators.md). Three independent ways to integrate against it:

``"grid"`` (the default): find every local minimiser of U (a grid search refined by ``scipy.optimize``), then
    integrate on a tensor product of composite Gauss-Legendre panels, in log space (exp(-(U - U_min) / T)).
    Along each axis the panel breaks are the union of a coarse uniform grid over a box that provably holds the
    set {U <= U_min + 40 T} (from a quadratic minorant of f), breaks around the problem's features (the
    length scales of f), and breaks around every minimiser placed where U - U(m) crosses T u^2 for
    u = 0.75, 1.5, ... up to sqrt(40): panels of about one local standard deviation, whatever T and whatever
    the shape of the well (quadratic or flatter).
``"adaptive"``: ``scipy.integrate.quad`` (1-D) or an outer ``quad_vec`` over inner ``quad`` calls (2-D) on the
    same box with the minimisers as break points, using a separately written scalar loss.
``"hermite"``: Gauss-Hermite centred at x with width sqrt(T / gamma); accurate only when f / T varies slowly on
    that scale (large T).
The mass left outside the box is below e^-40 times a ratio of volumes. Moments are taken about the global
minimiser and the covariance about the mean (two passes), so small spreads are not lost to cancellation.
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod

import numpy as np
import torch
from scipy import integrate, optimize
from scipy.ndimage import minimum_filter
from torch import Tensor

from localentropy._checks import check_choice, check_nonnegative
from localentropy.entropy.problems.base import Minimum, Problem, check_gamma_temperature

__all__ = ["METHODS", "SMOOTHING_METHODS", "QuadratureProblem", "gauss_legendre", "weighted_moments"]

METHODS = ("grid", "adaptive", "hermite")
LEVEL = 40.0  # the grid covers U <= U_min + LEVEL * T
_DU = 0.75  # spacing of the levels sqrt((U - U(m)) / T) that place the panels around a minimiser
_HERMITE_NODES = 100
_SMOOTHING_NODES = 60
SMOOTHING_METHODS = ("closed", "grid", "hermite")

_GL_ORDER = 6  # Gauss-Legendre nodes per panel


def gauss_legendre(breaks: np.ndarray, order: int = _GL_ORDER) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of composite Gauss-Legendre quadrature, ``order`` nodes on each panel between breaks."""
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


class QuadratureProblem(Problem):
    """A loss on R^1 or R^2 whose Gibbs moments and local entropy come from quadrature.

    Subclasses give f, its gradient and Hessian (``_f``, ``_df``, ``_d2f`` on (..., dim) float64, each taking a
    torch tensor or, on the fast path used by the quadrature, a numpy array), a
    scalar version of f written separately for the adaptive check (``_f_scalar``), a quadratic minorant
    f(y) >= a + sum_k q_k / 2 (y_k - c_k)^2 (``_minorant``) and the centres and length scales of its features.
    """

    @abstractmethod
    def _f(self, y: Tensor) -> Tensor: ...

    @abstractmethod
    def _df(self, y: Tensor) -> Tensor: ...

    @abstractmethod
    def _d2f(self, y: Tensor) -> Tensor: ...

    @abstractmethod
    def _f_scalar(self, y: tuple[float, ...]) -> float: ...

    @abstractmethod
    def _minorant(self) -> tuple[float, np.ndarray, np.ndarray]: ...

    @abstractmethod
    def _features(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres (k, dim) and length scales (k, dim) of the structure of f (wells, bumps)."""

    # ---------------------------------------------------------------------------------------------- the loss

    def loss(self, x: Tensor) -> Tensor:
        x = self._point(x)
        return self._f(x.to(torch.float64)).to(x.dtype)

    def grad(self, x: Tensor) -> Tensor:
        x = self._point(x)
        return self._df(x.to(torch.float64)).to(x.dtype)

    def hessian(self, x: Tensor) -> Tensor:
        """The Hessian of f: (..., dim) -> (..., dim, dim)."""
        x = self._point(x)
        return self._d2f(x.to(torch.float64)).to(x.dtype)

    # ------------------------------------------------------------------------ U = f + gamma/2 ||. - x||^2

    def _u(self, y: np.ndarray, x: np.ndarray, gamma: float) -> np.ndarray:
        d = y - x
        return self._f(y) + 0.5 * gamma * (d**2).sum(-1)

    def _box(self, x: np.ndarray, gamma: float, level: float) -> tuple[np.ndarray, np.ndarray]:
        """A box holding {y : U(y) <= level}, from U >= a + sum_k (q_k + gamma)/2 (y_k - m_k)^2 + r_k."""
        a, q, c = self._minorant()
        qg = q + gamma
        m = (q * c + gamma * x) / qg
        r = 0.5 * q * gamma / qg * (c - x) ** 2
        half = np.sqrt(2.0 * max(level - a - r.sum(), 0.0) / qg)
        return m - half, m + half

    def _local_minima(self, x: np.ndarray, gamma: float, lo: np.ndarray, hi: np.ndarray) -> list[np.ndarray]:
        """Every local minimiser of U in the box: grid minima and the features' centres, refined by Newton."""
        centres, scales = self._features()
        n_max = 4001 if self.dim == 1 else 301
        axes = [
            np.linspace(lo[k], hi[k], int(np.clip(np.ceil(4 * (hi[k] - lo[k]) / scales[:, k].min()), 65, n_max)))
            for k in range(self.dim)
        ]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1)
        values = self._u(grid, x, gamma)
        is_min = values == minimum_filter(values, size=3, mode="nearest")
        order = np.argsort(values[is_min])[:16]
        starts = np.concatenate([grid[is_min][order], centres, x[None]])

        def fun(y):
            return float(self._u(y, x, gamma))

        def jac(y):
            return self._df(y) + gamma * (y - x)

        def hess(y):
            return self._d2f(y) + gamma * np.eye(self.dim)

        found: list[np.ndarray] = []
        tol = 1e-7 * float(np.max(hi - lo))
        for y0 in starts:
            res = optimize.minimize(fun, y0, jac=jac, hess=hess, method="trust-exact", options={"gtol": 1e-12})
            y = res.x
            for _ in range(3):  # Newton polish: trust-exact may stop a little short of gtol
                try:
                    step = np.linalg.solve(hess(y), jac(y))
                except np.linalg.LinAlgError:
                    break
                if not np.all(np.isfinite(step)) or fun(y - step) > fun(y) + 1e-15 * (1 + abs(fun(y))):
                    break
                y = y - step
            if np.linalg.eigvalsh(hess(y))[0] < -1e-8 or any(np.max(np.abs(y - z)) < tol for z in found):
                continue
            found.append(y)
        return sorted(found, key=fun)

    def _minimisers(self, x: np.ndarray, gamma: float, extra: float) -> tuple[np.ndarray, np.ndarray]:
        """Local minimisers of U with U <= U_min + extra, sorted by U (the first is global), and their U."""
        centres, _ = self._features()
        upper = float(self._u(np.concatenate([centres, x[None]]), x, gamma).min())
        lo, hi = self._box(x, gamma, upper + extra)
        points = np.array(self._local_minima(x, gamma, lo, hi))
        values = self._u(points, x, gamma)
        keep = values <= values[0] + extra
        return points[keep], values[keep]

    # ------------------------------------------------------------------------------------------ quadrature

    def _ray(self, m, k, sign, levels, lo, hi, x, gamma) -> np.ndarray:
        """Distances from m along sign * e_k at which U - U(m) first reaches each level (within 5%), up to the box."""
        dist = hi[k] - m[k] if sign > 0 else m[k] - lo[k]
        if dist <= 0:
            return np.zeros(0)
        t = dist * np.geomspace(1e-12, 1.0, 600)
        ray = np.repeat(m[None], t.size, 0)
        ray[:, k] += sign * t
        envelope = np.maximum.accumulate(self._u(ray, x, gamma) - float(self._u(m, x, gamma)))
        idx = np.searchsorted(envelope, levels)
        return t[idx[idx < t.size]]

    def _axis_breaks(self, k, lo, hi, minima, x, gamma, temperature) -> np.ndarray:
        centres, scales = self._features()
        breaks = [np.linspace(lo[k], hi[k], 49)]
        for c, s in zip(centres[:, k], scales[:, k], strict=True):
            breaks.append(c + 0.5 * s * np.arange(-12, 13))
        levels = temperature * (_DU * np.arange(1, int(np.ceil(math.sqrt(LEVEL) / _DU)) + 1)) ** 2
        for m in minima:
            breaks.append(np.array([m[k]]))
            for sign in (1.0, -1.0):
                breaks.append(m[k] + sign * self._ray(m, k, sign, levels, lo, hi, x, gamma))
        b = np.unique(np.clip(np.concatenate(breaks), lo[k], hi[k]))
        return b[np.concatenate([[True], np.diff(b) > 1e-13 * (hi[k] - lo[k])])]

    def _grid(self, x, gamma, temperature):
        """Nodes y (n, dim), weights e = w exp(-(U - u_min) / T) (n,), the global minimiser of U and u_min."""
        minima, values = self._minimisers(x, gamma, LEVEL * temperature)
        lo, hi = self._box(x, gamma, values[0] + LEVEL * temperature)
        nodes, weights = zip(
            *(gauss_legendre(self._axis_breaks(k, lo, hi, minima, x, gamma, temperature)) for k in range(self.dim)),
            strict=True,
        )
        y = np.stack(np.meshgrid(*nodes, indexing="ij"), -1)
        w = weights[0] if self.dim == 1 else np.outer(*weights)
        u = self._u(y, x, gamma)
        u_min = min(float(values[0]), float(u.min()))
        e = w * np.exp(-(u - u_min) / temperature)
        return y.reshape(-1, self.dim), e.ravel(), minima[0], u_min

    def _moments_grid(self, x, gamma, temperature):
        y, e, m0, u_min = self._grid(x, gamma, temperature)
        return weighted_moments(y, e, m0, u_min, temperature)

    def gibbs_loss_mean(self, x: Tensor, gamma: float, temperature: float) -> float:
        """E_rho[f] under rho(. | x) at one point x (T > 0), by the ``"grid"`` quadrature."""
        gamma, temperature = check_gamma_temperature(gamma, temperature)
        if temperature == 0.0:
            raise ValueError("temperature must be > 0 for gibbs_loss_mean, got 0")
        p = self._point(x).detach().to(torch.float64).reshape(self.dim).numpy()
        y, e, _, _ = self._grid(p, gamma, temperature)
        return float(e @ self._f(y) / e.sum())

    def _moments_adaptive(self, x, gamma, temperature):
        minima, values = self._minimisers(x, gamma, LEVEL * temperature)
        u_min, m0, t = float(values[0]), minima[0], temperature
        lo, hi = self._box(x, gamma, u_min + LEVEL * t)
        centres, _ = self._features()
        # break points at the minimisers and a few local widths around them, and at the features' centres
        # where U - U(m) first reaches T along each axis (any shape of well)
        widths = np.array(
            [
                [
                    np.concatenate([self._ray(m, k, sg, [t], lo, hi, x, gamma) for sg in (1, -1)] + [hi - lo]).min()
                    for k in range(self.dim)
                ]
                for m in minima
            ]
        )
        offsets = np.array([0.0, -1.0, 1.0, -3.0, 3.0, -10.0, 10.0])
        hints = np.concatenate([(minima[:, None] + offsets[:, None] * widths[:, None]).reshape(-1, self.dim), centres])

        def pts(k):
            return sorted({float(p) for p in hints[:, k] if lo[k] < p < hi[k]})

        f, x0, x1, exp = self._f_scalar, float(x[0]), float(x[-1]), math.exp

        def e(*y):
            if len(y) == 1:
                return exp(-(f(y) + 0.5 * gamma * (y[0] - x0) ** 2 - u_min) / t)
            return exp(-(f(y) + 0.5 * gamma * ((y[0] - x0) ** 2 + (y[1] - x1) ** 2) - u_min) / t)

        opts = {"epsrel": 1e-13, "limit": 2000}
        if self.dim == 1:
            z = integrate.quad(e, lo[0], hi[0], points=pts(0), epsabs=0.0, **opts)[0]
            s = [z] + [
                integrate.quad(
                    lambda a, p=p: (a - m0[0]) ** p * e(a), lo[0], hi[0], points=pts(0), epsabs=1e-16 * z, **opts
                )[0]
                for p in (1, 2)
            ]
            s = np.array(s)
        else:
            inner_pts = pts(1)
            # moments in units of the spread (local widths at m0, distances between minima), so that
            # quad_vec's norm weighs them alike; absolute tolerances relative to the peak's mass
            sc = np.maximum(widths[0], np.abs(minima - m0).max(0))

            def inner(a):
                tol = {"epsabs": 1e-14 * sc[1], "epsrel": 1e-10, "limit": 2000, "points": inner_pts}
                i0, i1, i2 = (
                    integrate.quad(lambda b, p=p: ((b - m0[1]) / sc[1]) ** p * e(a, b), lo[1], hi[1], **tol)[0]
                    for p in (0, 1, 2)
                )
                d = (a - m0[0]) / sc[0]
                return np.array([i0, d * i0, i1, d * d * i0, d * i1, i2])

            s = integrate.quad_vec(
                inner, lo[0], hi[0], points=pts(0), epsabs=1e-14 * sc[0] * sc[1], epsrel=1e-10, limit=20000
            )[0]
            s = s * np.array([1.0, sc[0], sc[1], sc[0] ** 2, sc[0] * sc[1], sc[1] ** 2])
        z = s[0]
        d = s[1 : 1 + self.dim] / z
        second = np.array([[s[2]]] if self.dim == 1 else [[s[3], s[4]], [s[4], s[5]]]) / z
        return math.log(z) - u_min / t, m0 + d, second - np.outer(d, d)

    def _moments_hermite(self, x, gamma, temperature):
        z, w = np.polynomial.hermite.hermgauss(_HERMITE_NODES)
        h = math.sqrt(2.0 * temperature / gamma)
        grids = np.meshgrid(*([z] * self.dim), indexing="ij")
        y = x + h * np.stack(grids, -1).reshape(-1, self.dim)
        logw = np.log(np.stack(np.meshgrid(*([w] * self.dim), indexing="ij"), -1).reshape(-1, self.dim)).sum(-1)
        logits = logw - self._f(y) / temperature
        top = logits.max()
        e = np.exp(logits - top)
        log_z, mean, cov = weighted_moments(y, e, y[np.argmax(logits)], 0.0, 1.0)
        return log_z + top + self.dim * math.log(h), mean, cov

    def _gibbs(self, x: Tensor, gamma: float, temperature: float, method: str):
        """log Z, <x'> and Cov at each point (flattened batch) in numpy float64."""
        gamma, temperature = check_gamma_temperature(gamma, temperature)
        method = check_choice("method", method, METHODS)
        pts = self._point(x).detach().to(torch.float64).reshape(-1, self.dim).numpy()
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite")
        cache = self.__dict__.setdefault("_gibbs_cache", {})
        if len(cache) > 4096:
            cache.clear()
        out = []
        for p in pts:
            key = (p.tobytes(), gamma, temperature, method)
            if key not in cache:
                if temperature == 0.0:
                    mins, vals = self._minimisers(p, gamma, 0.0)
                    cache[key] = (-math.inf, mins[0], np.zeros((self.dim, self.dim)), float(vals[0]))
                else:
                    with warnings.catch_warnings():  # quad's roundoff notes at epsrel ~1e-12 (checked by tests)
                        for note in ("The occurrence of roundoff", "Extremely bad integrand"):
                            warnings.filterwarnings("ignore", note, integrate.IntegrationWarning)
                        cache[key] = (*getattr(self, f"_moments_{method}")(p, gamma, temperature), math.nan)
            out.append(cache[key])
        return out

    def gibbs_mean(self, x: Tensor, gamma: float, temperature: float, method: str = "grid") -> Tensor:
        """<x'> under rho(. | x) by quadrature; at T = 0 the proximal point."""
        x = self._point(x)
        means = [r[1] for r in self._gibbs(x, gamma, temperature, method)]
        return torch.as_tensor(np.array(means), dtype=x.dtype).reshape(x.shape)

    def gibbs_cov(self, gamma: float, temperature: float, x: Tensor | None = None, method: str = "grid") -> Tensor:
        """Cov of rho(. | x) by quadrature: (..., dim) -> (..., dim, dim); zero at T = 0."""
        if x is None:
            raise ValueError(f"{type(self).__name__}.gibbs_cov needs x: the Gibbs covariance depends on the point")
        x = self._point(x)
        covs = [r[2] for r in self._gibbs(x, gamma, temperature, method)]
        return torch.as_tensor(np.array(covs), dtype=x.dtype).reshape(*x.shape, self.dim)

    def local_entropy(self, x: Tensor, gamma: float, temperature: float, method: str = "grid") -> Tensor:
        """F(x) = T log ∫ exp(-[f(x') + gamma/2 ||x - x'||^2] / T) dx'; at T = 0 its limit -min U."""
        x = self._point(x)
        rows = self._gibbs(x, gamma, temperature, method)
        t = float(temperature)
        values = [-r[3] if t == 0.0 else t * r[0] for r in rows]
        return torch.as_tensor(values, dtype=x.dtype).reshape(x.shape[:-1])

    def proximal_point(self, x: Tensor, gamma: float) -> Tensor:
        """argmin_x' f(x') + gamma/2 ||x' - x||^2 (global), the T -> 0 limit of <x'>; ties go to the first found."""
        return self.gibbs_mean(x, gamma, 0.0)

    def minima(self) -> list[Minimum]:
        """The local minima of f, by loss, with the Hessian eigenvalues there."""
        lo, hi = self._minima_box()
        found = self._local_minima(np.zeros(self.dim), 0.0, lo, hi)
        result = []
        for y in found:
            t = torch.from_numpy(y)
            result.append(Minimum(t, float(self._f(t)), torch.linalg.eigvalsh(self._d2f(t))))
        return result

    # ------------------------------------------------------------------------------------- direct smoothing

    @abstractmethod
    def _smoothed(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """Closed forms of f_sigma and grad f_sigma at y (..., dim), float64."""

    def _smoothed_hermite(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """E f(y + sigma xi) and E grad f(y + sigma xi) by tensor-product Gauss-Hermite."""
        z, w = np.polynomial.hermite.hermgauss(_SMOOTHING_NODES)
        nodes = np.stack(np.meshgrid(*([z] * self.dim), indexing="ij"), -1).reshape(-1, self.dim)
        weights = np.prod(np.stack(np.meshgrid(*([w] * self.dim), indexing="ij"), -1).reshape(-1, self.dim), -1)
        weights = weights / math.pi ** (self.dim / 2)
        shifted = y.numpy()[..., None, :] + math.sqrt(2.0) * sigma * nodes
        loss, grad = (self._f(shifted) * weights).sum(-1), (self._df(shifted) * weights[:, None]).sum(-2)
        return torch.from_numpy(np.asarray(loss)), torch.from_numpy(grad)

    def _smoothed_grid(self, y: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
        """E f(y + sigma xi) and E grad f(y + sigma xi) on composite Gauss-Legendre panels over +-10 sigma,
        with breaks every half feature scale around the features, so narrow wells are resolved at any sigma."""
        pts = y.numpy().reshape(-1, self.dim)
        if sigma == 0.0:
            return torch.from_numpy(self._f(pts)).reshape(y.shape[:-1]), torch.from_numpy(self._df(pts)).reshape(
                y.shape
            )
        centres, scales = self._features()
        losses, grads = [], []
        for p in pts:
            nodes, weights = [], []
            for k in range(self.dim):
                lo, hi = p[k] - 10 * sigma, p[k] + 10 * sigma
                breaks = [np.linspace(lo, hi, 41)] + [
                    c + 0.5 * s * np.arange(-12, 13) for c, s in zip(centres[:, k], scales[:, k], strict=True)
                ]
                t, w = gauss_legendre(np.unique(np.clip(np.concatenate(breaks), lo, hi)))
                nodes.append(t)
                weights.append(w * np.exp(-0.5 * ((t - p[k]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi)))
            grid = np.stack(np.meshgrid(*nodes, indexing="ij"), -1).reshape(-1, self.dim)
            w = weights[0] if self.dim == 1 else np.outer(*weights).ravel()
            losses.append(self._f(grid) @ w)
            grads.append(w @ self._df(grid))
        return torch.tensor(losses).reshape(y.shape[:-1]), torch.from_numpy(np.array(grads)).reshape(y.shape)

    def _smoothing(self, x: Tensor, sigma: float, method: str) -> tuple[Tensor, Tensor]:
        sigma = check_nonnegative("sigma", sigma)
        method = check_choice("method", method, SMOOTHING_METHODS)
        y = self._point(x).detach().to(torch.float64)
        return getattr(self, "_smoothed" if method == "closed" else f"_smoothed_{method}")(y, sigma)

    def smoothed_loss(self, x: Tensor, sigma: float, method: str = "closed") -> Tensor:
        """f_sigma(x) = E f(x + sigma xi): closed form (``"closed"``), composite Gauss-Legendre (``"grid"``) or
        Gauss-Hermite (``"hermite"``, 60 nodes per axis: accurate only where f is smooth on the scale sigma)."""
        return self._smoothing(x, sigma, method)[0].to(self._point(x).dtype)

    def smoothed_grad(self, x: Tensor, sigma: float, method: str = "closed") -> Tensor:
        """grad f_sigma(x) = E grad f(x + sigma xi): ``"closed"``, ``"grid"`` or ``"hermite"``."""
        return self._smoothing(x, sigma, method)[1].to(self._point(x).dtype)

    def _minima_box(self) -> tuple[np.ndarray, np.ndarray]:
        centres, scales = self._features()
        return centres.min(0) - 8 * scales.max(0), centres.max(0) + 8 * scales.max(0)
