r"""Deep linear networks and their learning coefficient (Aoyagi 2024), the LLC's large-scale test case.

A deep linear network with M layers and widths H_1 (input), H_2, ..., H_{M+1} (output) maps x to
W_M ... W_2 W_1 x, W_j of shape (H_{j+1}, H_j). With a true map of rank r realised by the network and the square
loss, its learning coefficient is (M. Aoyagi, "Consideration on the learning efficiency of multiple-layered neural
networks with linear units", Neural Networks 172, 106132, 2024, Theorem 1; restated by Lau et al. 2023, App.):

Let Delta_j = H_j - r. There is a set Sigma of ell + 1 indices of {1, ..., M + 1} (ell >= 1) with

    max_{s in Sigma} Delta_s < min_{k not in Sigma} Delta_k,
    sum_{s in Sigma} Delta_s >= ell max_{s in Sigma} Delta_s,
    sum_{s in Sigma} Delta_s < ell min_{k not in Sigma} Delta_k,

and with S = sum_{s in Sigma} Delta_s and a = S - ell floor(S / ell),

    lambda = (-r^2 + r (H_1 + H_{M+1})) / 2 + a (ell - a) / (4 ell) - (ell - 1) S^2 / (4 ell)
             + (1/2) sum_{s < s' in Sigma} Delta_s Delta_s',.

The conditions make Sigma a set of the ell + 1 smallest Delta:
:func:`aoyagi_llc` tries ell = 1, 2, ... on the sorted Delta and takes the first set that meets them. Cases worked by
hand (tests/llc/test_dln.py): one layer gives H_1 H_2 / 2 (a regular model); two layers give Aoyagi and
Watanabe's (2005) reduced-rank regression; all widths 1 and r = 0 give 1/2 for any depth, the learning coefficient
of (w_1 ... w_M)^2. The same test file restates the rule in the arithmetic of public LLC experiment code (sets by
size, a from a ceiling) and checks that both give the same value on every network of depth 1 to 4 with widths 1 to 4.

With inputs x ~ N(0, I) and noiseless targets y = P* x (P* the true product), the population loss is
L(w) = E ||P(w) x - P* x||^2 = ||P(w) - P*||_F^2: :class:`DeepLinearPotential` evaluates it for a batch of chains.

Aoyagi's lambda is a limit. The scalar network of depth M (all widths 1, rank 0: L = (w_1 ... w_M)^2, lambda = 1/2,
multiplicity M) has an exact value at every finite nbeta (:func:`scalar_network_exact`). Near that limit the
free energy is lambda log nbeta - (M - 1) log log nbeta + O(1), so the LLC at finite nbeta is

    lambda(nbeta) = 1/2 - (M - 1) / log nbeta + o(1 / log nbeta),

a deficit that vanishes only logarithmically (at nbeta = 1000 and localization 1: 0.390 for M = 2, 0.306 for M = 3,
0.241 for M = 4). An estimate at finite nbeta of a network with a high multiplicity is scored against such an exact
value or a reference, not against the limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from localentropy._checks import check_int

__all__ = ["AoyagiLLC", "DeepLinearPotential", "ScalarNetworkExact", "aoyagi_llc", "scalar_network_exact"]


@dataclass(frozen=True)
class AoyagiLLC:
    """The learning coefficient of a deep linear network, the set Sigma (0-based indices), ell and a."""

    llc: float
    sigma: tuple[int, ...]
    ell: int
    a: int


def _check_widths(widths: Sequence[int], rank: int) -> tuple[list[int], int]:
    if isinstance(widths, (str, bytes)) or len(widths) < 2:
        raise ValueError(f"widths must list at least two layer widths (input, ..., output), got {widths!r}")
    h = [check_int(f"widths[{j}]", w, 1) for j, w in enumerate(widths)]
    rank = check_int("rank", rank, 0)
    if rank > min(h):
        raise ValueError(f"rank must be <= the smallest width {min(h)}, got {rank}")
    return h, rank


def aoyagi_llc(widths: Sequence[int], rank: int) -> AoyagiLLC:
    """Aoyagi's (2024) learning coefficient of the deep linear network with ``widths`` and true rank ``rank``."""
    h, r = _check_widths(widths, rank)
    delta = [w - r for w in h]
    order = sorted(range(len(h)), key=lambda j: delta[j])
    for ell in range(1, len(h)):
        inside, outside = order[: ell + 1], order[ell + 1 :]
        d_in = [delta[j] for j in inside]
        s, top = sum(d_in), max(d_in)
        low = min((delta[j] for j in outside), default=None)
        if (low is None or top < low) and s >= ell * top and (low is None or s < ell * low):
            a = s - ell * (s // ell)
            pairs = sum(d_in[i] * d_in[j] for i in range(len(d_in)) for j in range(i + 1, len(d_in)))
            value = (-(r**2) + r * (h[0] + h[-1])) / 2 + a * (ell - a) / (4 * ell) - (ell - 1) * s**2 / (4 * ell)
            return AoyagiLLC(value + pairs / 2, tuple(sorted(inside)), ell, a)
    raise AssertionError(
        f"no set Sigma meets Aoyagi's conditions for widths {h}, rank {r}"
    )  # the theorem says one does


class DeepLinearPotential:
    """L(w) = ||W_M ... W_1 - P*||_F^2 for a batch of flattened weight vectors w [chains, d] -> [chains].

    ``layers(w)`` splits w into the matrices (W_1 first); ``true_point(generator)`` draws a w* whose product has rank
    ``rank`` (random Gaussian layers, the first with only ``rank`` non-zero rows), and ``target`` is set from it.
    """

    def __init__(self, widths: Sequence[int], rank: int, dtype: torch.dtype = torch.float64) -> None:
        self.widths, self.rank = _check_widths(widths, rank)
        self.shapes = [(self.widths[j + 1], self.widths[j]) for j in range(len(self.widths) - 1)]
        self.dim = sum(a * b for a, b in self.shapes)
        self.dtype = dtype
        self.target = torch.zeros(self.widths[-1], self.widths[0], dtype=dtype)

    def layers(self, w: Tensor) -> list[Tensor]:
        out, offset = [], 0
        for a, b in self.shapes:
            out.append(w[..., offset : offset + a * b].reshape(*w.shape[:-1], a, b))
            offset += a * b
        return out

    def product(self, w: Tensor) -> Tensor:
        mats = self.layers(w)
        p = mats[0]
        for m in mats[1:]:
            p = m @ p
        return p

    def __call__(self, w: Tensor) -> Tensor:
        return ((self.product(w) - self.target) ** 2).sum(dim=(-2, -1))

    def true_point(self, generator: torch.Generator | None = None) -> Tensor:
        """A w* whose every layer has rank ``rank`` (W_j = A_j B_j^T, Gaussian factors with ``rank`` columns, scaled
        by 1 / sqrt(width)); sets ``target`` to its product, so L(w*) = 0. Aoyagi's lambda is the global learning
        coefficient, the smallest over the true parameters: at a true parameter whose layers have a larger rank (say
        W_1 of rank r and W_2 of full rank) the local coefficient is larger (for widths (2, 2, 2), r = 0, W_1 = 0 and
        W_2 invertible, L is regular in W_1's 4 entries: lambda = 2, not 1.5)."""
        parts = []
        for a, b in self.shapes:
            left = torch.randn(a, self.rank, generator=generator, dtype=self.dtype) / a**0.5
            right = torch.randn(b, self.rank, generator=generator, dtype=self.dtype) / b**0.5
            parts.append((left @ right.T).reshape(-1))
        w = torch.cat(parts)
        self.target = self.product(w).clone()
        return w

    def balanced_point(self, generator: torch.Generator | None = None) -> Tensor:
        """A w* whose every layer has rank ``rank`` and unit singular values, each layer reading what the one before
        writes: W_j = U_{j+1} U_j^T with U_j (H_j x r) of orthonormal columns drawn from ``generator``. Sets
        ``target`` to its product U_{M+1} U_1^T, so L(w*) = 0. Unlike :meth:`true_point`, whose random layers can be
        small and misaligned (for (3, 3, 3, 3), rank 1, seed 1: layer norms 0.19, 0.66, 0.26 and Hessian eigenvalues
        1e-4 to 0.025), its Hessian's nonzero eigenvalues are of order 1, so nbeta itself, not nbeta times a tiny
        curvature, sets how far the measure is from the nbeta -> infinity limit (docs/diagnostics.md)."""
        frames = []
        for width in self.widths:
            gaussian = torch.randn(width, self.rank, generator=generator, dtype=self.dtype)
            frames.append(torch.linalg.qr(gaussian).Q if self.rank else gaussian)
        w = torch.cat([(frames[j + 1] @ frames[j].T).reshape(-1) for j in range(len(self.widths) - 1)])
        self.target = self.product(w).clone()
        return w

    @property
    def theory(self) -> AoyagiLLC:
        return aoyagi_llc(self.widths, self.rank)


@dataclass(frozen=True)
class ScalarNetworkExact:
    """The exact LLC at finite nbeta (``llc``) and local free energy (``free_energy``) of a scalar network."""

    llc: float
    free_energy: float


def _log_chi2_density(z: np.ndarray) -> np.ndarray:
    """The density of log X for X ~ chi-square with 1 degree of freedom: exp(z / 2 - e^z / 2) / sqrt(2 pi)."""
    return np.exp(z / 2 - np.exp(z) / 2) / np.sqrt(2 * np.pi)


def scalar_network_exact(
    depth: int, nbeta: float, localization: float, *, grid_step: float = 0.01
) -> ScalarNetworkExact:
    r"""The LLC measure p(w) ∝ exp(-nbeta (w_1 ... w_M)^2 - (localization / 2) |w|^2) of the depth-M scalar network
    at w* = 0, computed exactly: its LLC nbeta E_p[L] and local free energy -log E_prior[exp(-nbeta L)] (prior
    N(0, I / localization)).

    Integrating w_M out (it is Gaussian given the others) leaves one variable: with
    s = (2 nbeta / localization^M) X_1 ... X_{M-1}, X_j = localization w_j^2 independent chi-square(1),

        E_prior[exp(-nbeta L)] = E[(1 + s)^(-1/2)],    nbeta E_p[L] = E[(s / 2) (1 + s)^(-3/2)] / E[(1 + s)^(-1/2)].

    The density of log(X_1 ... X_{M-1}) is the (M - 1)-fold convolution of the log-chi-square density, summed on a
    uniform grid of ``grid_step`` reaching 60 below the scale where s = 1 (both tails decay exponentially, so the
    rectangle rule converges geometrically; the same answer as the 2-D grid quadrature of the toys for M = 2, to
    1e-10). Cost: a few milliseconds for M <= 4 up to nbeta = 1e40.
    """
    depth = check_int("depth", depth, 1)
    if not (nbeta > 0 and localization > 0):
        raise ValueError(f"nbeta and localization must be > 0, got nbeta={nbeta!r}, localization={localization!r}")
    log_kappa = np.log(2 * nbeta) - depth * np.log(localization)
    low = min(-log_kappa - 60.0, -60.0)
    z = np.arange(low, 6.0, grid_step)
    mass = _log_chi2_density(z) * grid_step
    density, start = np.ones(1), 0.0
    for _ in range(depth - 1):
        density, start = np.convolve(density, mass), start + low
    log_s = log_kappa + start + grid_step * np.arange(density.size)
    s = np.exp(log_s)
    density = density / density.sum()  # the grid's own normalisation: no mass lost to truncation or rounding
    partition = float((density * (1 + s) ** -0.5).sum())
    llc = float((density * 0.5 * s * (1 + s) ** -1.5).sum()) / partition
    return ScalarNetworkExact(llc, -float(np.log(partition)))
