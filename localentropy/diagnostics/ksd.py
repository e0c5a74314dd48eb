"""Kernel Stein discrepancy with the inverse multiquadric kernel (Gorham & Mackey, ICML 2017), in torch.

For draws x_1..x_n and the score s(x) = grad log p(x) = -grad U(x) / T of the target p ∝ exp(-U / T),

    KSD^2 = (1 / n^2) sum_{i,j} k0(x_i, x_j),
    k0(x, y) = s(x)^T s(y) k(x, y) + s(x)^T grad_y k + s(y)^T grad_x k + tr(grad_x grad_y k),

with k(x, y) = (c^2 + ||x - y||^2)^beta, beta in (-1, 0) (default -1/2, c = 1). It is zero only when the draws'
distribution is p (for the IMQ kernel, KSD controls weak convergence), needs only the score, not the
normalising constant, and grows with the draws' bias. This is the V-statistic (always >= 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor

from localentropy._checks import check_positive, check_range


def imq_ksd(
    draws: Tensor,
    score: Tensor | Callable[[Tensor], Tensor],
    *,
    c: float = 1.0,
    beta: float = -0.5,
    block_size: int = 2048,
) -> float:
    """KSD of ``draws`` (n, d) (or (n_chains, n_draws, d), pooled) against the target with the given score.

    ``score`` is the (n, d) tensor of grad log p at the draws, or a function computing it.
    """
    c = check_positive("c", c)
    beta = check_range("beta", beta, -1.0, 0.0, low_open=True, high_open=True)
    x = draws.reshape(-1, draws.shape[-1]).double()
    s = (score(draws) if callable(score) else score).reshape(x.shape).double()
    n, d = x.shape
    total = x.new_zeros(())
    for start in range(0, n, block_size):
        xb, sb = x[start : start + block_size], s[start : start + block_size]
        r = xb[:, None, :] - x[None, :, :]  # (b, n, d)
        r2 = (r * r).sum(-1)
        q = c * c + r2
        k = q.pow(beta)
        dk = 2.0 * beta * q.pow(beta - 1.0)  # grad_x k = dk * r, grad_y k = -dk * r
        term1 = (sb @ s.T) * k
        term2 = -(sb[:, None, :] * r).sum(-1) * dk  # s(x)^T grad_y k
        term3 = (s[None, :, :] * r).sum(-1) * dk  # s(y)^T grad_x k
        term4 = -2.0 * beta * d * q.pow(beta - 1.0) - 4.0 * beta * (beta - 1.0) * q.pow(beta - 2.0) * r2
        total = total + (term1 + term2 + term3 + term4).sum()
    return math.sqrt(max(float(total) / (n * n), 0.0))
