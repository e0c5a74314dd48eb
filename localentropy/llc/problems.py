r"""LLC problems: a loss, the point w* where the LLC is asked, and the answer an estimate is scored against.

The LLC measure p(w) ∝ exp(-nbeta L(w) - (localization / 2) ||w - w*||^2) is the local-entropy Gibbs measure
rho(w | x) ∝ exp(-[L(w) + (gamma / 2) ||w - x||^2] / T) at x = w*, T = 1 / nbeta and gamma = localization / nbeta,
so the chains of a local-entropy estimator at (w*, gamma, T) sample p, and

    lambda_hat = (1 / T) (mean of L over the kept draws - L(w*)).

:func:`llc_truth` gives the answer for a problem that has one (:data:`TRUTHS` says of which kind):

* the 2-D toys (:mod:`localentropy.llc.toys`): the exact finite-nbeta value, by quadrature;
* a scalar :class:`DeepLinearProblem` (all widths 1, rank 0: L = (w_1 ... w_M)^2) at w* = 0: the exact
  finite-nbeta value (:func:`localentropy.llc.dln.scalar_network_exact`, one-dimensional quadrature);
* any other :class:`DeepLinearProblem` with a shipped reference for its widths, rank, seed, nbeta and localization
  (:mod:`localentropy.llc.reference`): the finite-nbeta value from long MALA chains, exact up to its MCSE;
* any other :class:`DeepLinearProblem`: Aoyagi's (2024) learning coefficient, the nbeta -> infinity limit. An
  estimate at finite nbeta differs from it by the finite-nbeta bias (downward: docs/diagnostics.md measures it with
  MALA) as well as the sampler's, so a comparison scored against the limit rewards a sampler whose step bias is
  upward (SGLD's on these networks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from localentropy.entropy.problems import Problem
from localentropy.llc.dln import DeepLinearPotential, scalar_network_exact
from localentropy.llc.reference import Reference, find_reference
from localentropy.llc.toys import _Toy as Toy
from localentropy.llc.toys import exact_llc

__all__ = ["TRUTHS", "DeepLinearProblem", "has_llc_truth", "llc_truth", "measure_settings", "minimum", "truth_kind"]

TRUTHS = {
    "exact": "the exact value at this nbeta and localization (quadrature)",
    "reference": "the value at this nbeta and localization from long MALA chains (no step-size bias; exact up to its "
    "Monte Carlo standard error)",
    "limit": "Aoyagi's learning coefficient (the nbeta -> infinity limit; the finite-nbeta bias is in every error)",
}


class DeepLinearProblem(Problem):
    """L(w) = ||W_M ... W_1 - P*||_F^2 (:class:`DeepLinearPotential`) as a Problem: loss and gradient (autograd)
    for the samplers, w* its true parameter drawn from ``seed``, and the LLC's answer (:func:`llc_truth`): exact for a
    scalar network, a shipped reference or Aoyagi's coefficient otherwise.

    It has no exact Gibbs mean or smoothing: only the LLC is scored on it.
    """

    def __init__(self, widths: Sequence[int], rank: int, seed: int = 0) -> None:
        self.potential = DeepLinearPotential(widths, rank)
        self.widths, self.rank, self.seed = list(self.potential.widths), self.potential.rank, int(seed)
        self.dim = self.potential.dim
        self.w_star = self.potential.true_point(torch.Generator().manual_seed(self.seed))

    def __repr__(self) -> str:
        return f"DeepLinearProblem(widths={self.widths}, rank={self.rank}, seed={self.seed})"

    def loss(self, x: Tensor) -> Tensor:
        x = self._point(x)
        return self.potential(x.reshape(-1, self.dim)).reshape(x.shape[:-1])

    def grad(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            y = self._point(x).detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.loss(y).sum(), y)
        return g

    def _no_exact(self, what: str) -> ValueError:
        return ValueError(f"a deep linear network has no exact {what}: it is an LLC problem (estimand = 'llc')")

    def gibbs_mean(self, x: Tensor, gamma: float, temperature: float) -> Tensor:
        raise self._no_exact("Gibbs mean")

    def gibbs_cov(self, gamma: float, temperature: float, x: Tensor | None = None) -> Tensor:
        raise self._no_exact("Gibbs covariance")

    def smoothed_grad(self, x: Tensor, sigma: float) -> Tensor:
        raise self._no_exact("smoothed gradient")

    def _at_w_star(self, point: Tensor) -> bool:
        return torch.equal(self._point(point).to(self.w_star.dtype), self.w_star)

    def has_exact(self, point: Tensor) -> bool:
        """Whether the LLC at ``point`` is exact: a scalar network (all widths 1, rank 0: L = (w_1 ... w_M)^2) at its
        w* = 0, at every nbeta and localization."""
        return self.rank == 0 and all(w == 1 for w in self.widths) and self._at_w_star(point)

    def exact(self, point: Tensor, nbeta: float, localization: float) -> float | None:
        """The exact LLC of the measure (nbeta, localization) at ``point`` where :meth:`has_exact`
        (:func:`~localentropy.llc.dln.scalar_network_exact`), else None."""
        return scalar_network_exact(len(self.widths) - 1, nbeta, localization).llc if self.has_exact(point) else None

    def reference(self, point: Tensor, nbeta: float, localization: float) -> Reference | None:
        """The shipped finite-nbeta reference of this network for the measure (nbeta, localization) at ``point``, if
        any: there is one only at w* itself."""
        if not self._at_w_star(point):
            return None
        return find_reference(self.widths, self.rank, self.seed, nbeta, localization)


def has_llc_truth(problem: Problem) -> bool:
    return isinstance(problem, Toy | DeepLinearProblem)


def truth_kind(problem: Problem, w_star: Tensor, gamma: float, temperature: float) -> str:
    """``"exact"`` (a toy, or a scalar network at w*), ``"reference"`` or ``"limit"`` (another deep linear network,
    with or without a reference at this point and measure): keys of :data:`TRUTHS`."""
    if not isinstance(problem, DeepLinearProblem) or problem.has_exact(w_star):
        return "exact"
    return "limit" if problem.reference(w_star, *measure_settings(gamma, temperature)) is None else "reference"


def minimum(problem: Problem) -> Tensor:
    """The problem's w*: 0 for the toys, the true parameter of a deep linear network."""
    if isinstance(problem, DeepLinearProblem):
        return problem.w_star.clone()
    if isinstance(problem, Toy):
        return torch.zeros(problem.dim, dtype=torch.float64)
    raise ValueError(f"{problem!r} has no designated minimum w*: give the points explicitly")


def measure_settings(gamma: float, temperature: float) -> tuple[float, float]:
    """(nbeta, localization) of the local-entropy measure at (gamma, T): nbeta = 1 / T, localization = gamma / T."""
    return 1.0 / temperature, gamma / temperature


def llc_truth(problem: Problem, w_star: Tensor, gamma: float, temperature: float) -> float:
    """The answer an LLC estimate at w* of the measure at (gamma, T) is scored against (module docstring)."""
    nbeta, localization = measure_settings(gamma, temperature)
    if isinstance(problem, DeepLinearProblem):
        exact = problem.exact(w_star, nbeta, localization)
        if exact is not None:
            return exact
        reference = problem.reference(w_star, nbeta, localization)
        return float(problem.potential.theory.llc) if reference is None else reference.llc
    if isinstance(problem, Toy):
        return exact_llc(problem, nbeta, localization, w_star)
    raise ValueError(f"{problem!r} has no LLC answer: use a toy (regular, crossing, quartic) or a deep linear network")
