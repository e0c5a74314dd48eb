"""Test problems that know their truth: closed form (quadratics) or quadrature (low-dimensional, non-convex)."""

from localentropy.entropy.problems.base import Minimum, Problem
from localentropy.entropy.problems.lowdim import DoubleWell, SharpWide
from localentropy.entropy.problems.quadratic import Quadratic
from localentropy.entropy.problems.quadrature import QuadratureProblem

__all__ = ["DoubleWell", "Minimum", "Problem", "Quadratic", "QuadratureProblem", "SharpWide"]
