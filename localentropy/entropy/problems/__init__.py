"""Test problems that know their truth: closed form (quadratics) or quadrature (low-dimensional, non-convex)."""

from localentropy.entropy.problems.base import Problem
from localentropy.entropy.problems.quadratic import Quadratic

__all__ = ["Problem", "Quadratic"]
