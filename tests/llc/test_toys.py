"""Exact LLCs of the 2-D toys by the grid quadrature, against independent one-dimensional reductions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from localentropy.llc.toys import Crossing, Quartic, Regular, exact_llc, exact_local_free_energy, toy


def _quad(fn) -> float:
    return integrate.quad(fn, -np.inf, np.inf, epsabs=0.0, epsrel=1e-13, limit=500)[0]


def crossing_by_reduction(nbeta: float, loc: float) -> float:
    """(w1 w2)^2: given w1, w2 is Gaussian with precision a = 2 nbeta w1^2 + loc, so E[w2^2 | w1] = 1 / a and the
    w1-marginal is exp(-loc w1^2 / 2) a^(-1/2): one integral each for Z and E[L]."""

    def weight(w: float, power: int) -> float:
        a = 2 * nbeta * w * w + loc
        return math.exp(-loc * w * w / 2) * a**-0.5 * (w * w / a) ** power

    return nbeta * _quad(lambda w: weight(w, 1)) / _quad(lambda w: weight(w, 0))


def quartic_by_reduction(nbeta: float, loc: float) -> float:
    """w1^2 + w2^4 separates: E[w1^2] = 1 / (2 nbeta + loc) and one integral for E[w2^4]."""

    def weight(w: float, power: int) -> float:
        return w ** (4 * power) * math.exp(-nbeta * w**4 - loc * w * w / 2)

    return nbeta * (1 / (2 * nbeta + loc) + _quad(lambda w: weight(w, 1)) / _quad(lambda w: weight(w, 0)))


@pytest.mark.parametrize("nbeta", [1.0, 1e3, 1e6])
@pytest.mark.parametrize("loc", [1.0, 100.0])
def test_singular_toys_match_their_reductions(nbeta: float, loc: float) -> None:
    assert exact_llc(Crossing(), nbeta, loc) == pytest.approx(crossing_by_reduction(nbeta, loc), rel=1e-10)
    assert exact_llc(Quartic(), nbeta, loc) == pytest.approx(quartic_by_reduction(nbeta, loc), rel=1e-10)


@settings(max_examples=10)
@given(nbeta=st.floats(0.1, 1e6), loc=st.floats(0.01, 1e3))
def test_regular_toy_matches_the_gaussian_closed_form(nbeta: float, loc: float) -> None:
    # p is N(0, I / (2 nbeta + loc)): E[L] = 2 / (2 nbeta + loc)
    assert exact_llc(Regular(), nbeta, loc) == pytest.approx(2 * nbeta / (2 * nbeta + loc), rel=1e-9)


def test_toys_approach_their_learning_coefficients() -> None:
    assert exact_llc(Regular(), 1e8, 1.0) == pytest.approx(1.0, rel=1e-7)
    assert exact_llc(Quartic(), 1e8, 1.0) == pytest.approx(0.75, rel=1e-3)
    # the normal crossing (multiplicity 2) approaches 1/2 from below, slowly (log corrections)
    values = [exact_llc(Crossing(), nb, 1.0) for nb in (1e2, 1e4, 1e6, 1e8)]
    assert all(a < b < 0.5 for a, b in itertools.pairwise(values))
    assert values[-1] > 0.44


@pytest.mark.parametrize("name", ["regular", "crossing", "quartic"])
def test_local_free_energy_derivative_is_the_llc(name: str) -> None:
    """dF / d log nbeta = nbeta E_p[L - L(w*)] (the thermodynamic identity behind the LLC)."""
    problem, nbeta, loc, eps = toy(name), 300.0, 2.0, 1e-4
    up = exact_local_free_energy(problem, nbeta * math.exp(eps), loc)
    down = exact_local_free_energy(problem, nbeta * math.exp(-eps), loc)
    assert (up - down) / (2 * eps) == pytest.approx(exact_llc(problem, nbeta, loc), rel=1e-6)


def test_regular_free_energy_closed_form() -> None:
    # F = -log ∫ exp(-nbeta |w|^2) N(w; 0, I / loc) dw = log((2 nbeta + loc) / loc)
    assert exact_local_free_energy(Regular(), 50.0, 3.0) == pytest.approx(math.log(103.0 / 3.0), rel=1e-10)


def test_off_centre_w_star() -> None:
    # L(w) = |w|^2 around w* = (1, 0): p is N(2 nbeta 0 + loc w* / (2 nbeta + loc), I / (2 nbeta + loc))
    nbeta, loc, w = 10.0, 4.0, torch.tensor([1.0, 0.0], dtype=torch.float64)
    m = loc / (2 * nbeta + loc)
    expected = nbeta * (m * m + 2 / (2 * nbeta + loc) - 1.0)
    assert exact_llc(Regular(), nbeta, loc, w) == pytest.approx(expected, rel=1e-9)


def test_toy_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="unknown LLC toy 'saddle'; available: regular, crossing, quartic"):
        toy("saddle")
    with pytest.raises(ValueError, match="nbeta"):
        exact_llc(Regular(), 0.0, 1.0)
    with pytest.raises(ValueError, match="localization"):
        exact_llc(Regular(), 1.0, -1.0)


def test_toy_losses_and_gradients_agree() -> None:
    y = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for problem in (Regular(), Crossing(), Quartic()):
        x = y.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(problem.loss(x).sum(), x)
        assert torch.allclose(problem.grad(y), auto)
        hess = torch.autograd.functional.hessian(lambda v, p=problem: p.loss(v), y[0])
        assert torch.allclose(problem.hessian(y[0]), hess)
        smooth = problem.smoothed_loss(y, 0.3)
        assert torch.allclose(smooth, problem.smoothed_loss(y, 0.3, method="hermite"), rtol=1e-9)
