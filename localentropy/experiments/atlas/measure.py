"""The atlas's measurements: a sampler's stability limit, its moments' errors with MCSEs, its temperature.

Chains start from exact draws of the target, so a run measures the sampler's stationary bias, not its burn-in.
The starting draws also give a control variate: their moments are known exactly, and for slowly mixing
directions the kept draws stay close to them, so each moment is estimated as mean(a) - beta (mean(b) - truth)
with a the chain's time average, b its starting value and beta = cov(a, b) / var(b) fitted over chains. This
is unbiased (up to O(1 / n_chains) from fitting beta) and removes most of the noise of the directions that a
chain barely moves in during the run. The unit of replication is the chain: chains are independent, so the
MCSE of each moment is the standard deviation over chains of the adjusted per-chain values / sqrt(n_chains).

Errors are measured in the target's whitened coordinates z = L^{-1} (x - m), Sigma = L L^T, so that every
direction counts alike (on a 20-D Gaussian of condition 1000 the plain Frobenius norm sees only the widest
directions, where a sampler's bias is smallest):

* mean error |mean(z)| / sqrt(d), covariance error |Cov(z) - I|_F / sqrt(d) (relative, Frobenius);
* their MCSE: the same norm of the entrywise MCSEs, the error an unbiased sampler would show by chance (an
  error within 2 MCSE is compatible with no bias);
* the configurational temperature T_conf = mean |grad U|^2 / mean Laplacian U (exactly T for an exact sampler).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from localentropy.experiments.atlas.entries import Entry
from localentropy.experiments.atlas.targets import DTYPE, Gaussian, Target

DIVERGENCE_SCALE = 30.0  # a chain farther than this many standard deviations (whitened) from the mean has diverged
MIN_ACCEPTANCE = 0.25  # an exact (Metropolis) sampler never diverges: its limit is where acceptance drops below this


@dataclass
class ChainStats:
    """Per-chain sums over the kept draws (in whitened coordinates) and the starting values, diverged chains out."""

    z_mean: Tensor  # (n, d) time average of z per chain
    zz_mean: Tensor  # (n, d, d) time average of z z^T
    z0: Tensor  # (n, d) starting point
    grad_sq: Tensor  # (n,) time average of |grad U|^2
    laplacian: Tensor  # (n,) time average of Laplacian U
    n_diverged: int
    n_chains: int
    acceptance: float | None
    exact_start: bool = True  # the chains started from exact draws (the control variate is valid)


def _whitener(target: Target) -> tuple[Tensor, Tensor]:
    chol = np.linalg.cholesky(target.covariance)
    return torch.as_tensor(target.mean, dtype=DTYPE), torch.as_tensor(np.linalg.inv(chol).T, dtype=DTYPE)


def run_chains(
    entry: Entry,
    target: Target,
    step_size: float,
    *,
    n_chains: int,
    n_steps: int,
    burn_in: int,
    seed: int,
    grad_noise: float = 0.0,
    start: Tensor | None = None,
) -> ChainStats:
    """Run ``n_chains`` chains from exact draws (or ``start``) and accumulate the per-chain moments.

    ``grad_noise`` V adds N(0, V I) to every gradient the sampler sees (the statistics use the exact gradient).
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator().manual_seed(seed + 7919)
    x0 = target.draw(n_chains, rng) if start is None else start.clone()
    sampler = entry.build(step_size, target, n_steps)
    state = sampler.init(x0.clone())
    mean, whiten = _whitener(target)
    d = target.dim
    z_sum = torch.zeros(n_chains, d, dtype=DTYPE)
    zz_sum = torch.zeros(n_chains, d, d, dtype=DTYPE)
    g2_sum = torch.zeros(n_chains, dtype=DTYPE)
    lap_sum = torch.zeros(n_chains, dtype=DTYPE)
    peak = torch.zeros(n_chains, dtype=DTYPE)
    noise = torch.empty(n_chains, d, dtype=DTYPE)
    for k in range(n_steps):
        position = state.position
        grad = target.grad(position)
        if k >= burn_in:
            z = (position - mean) @ whiten
            z_sum += z
            zz_sum += z[:, :, None] * z[:, None, :]
            g2_sum += (grad * grad).sum(1)
            lap_sum += target.laplacian(position)
            torch.maximum(peak, z.abs().amax(1), out=peak)
        if grad_noise > 0:
            grad = grad + math.sqrt(grad_noise) * noise.normal_(generator=noise_generator)
        state = sampler.step(state, grad, generator)
    kept = n_steps - burn_in
    finite = torch.isfinite(zz_sum.reshape(n_chains, -1)).all(1) & torch.isfinite(g2_sum) & torch.isfinite(lap_sum)
    alive = finite & (peak < DIVERGENCE_SCALE) & torch.isfinite(state.position).all(1)
    rate = getattr(state, "acceptance_rate", None)
    return ChainStats(
        z_mean=z_sum[alive] / kept,
        zz_mean=zz_sum[alive] / kept,
        z0=((x0 - mean) @ whiten)[alive],
        grad_sq=g2_sum[alive] / kept,
        laplacian=lap_sum[alive] / kept,
        n_diverged=int((~alive).sum()),
        n_chains=n_chains,
        acceptance=None if rate is None else float(rate[alive].mean()) if bool(alive.any()) else 0.0,
        exact_start=start is None,
    )


def _control_variate(
    a: np.ndarray, b: np.ndarray, truth: np.ndarray, use: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Entrywise mean(a) - beta (mean(b) - truth) over chains (axis 0) and its standard error (beta = 0 unless
    ``use``: starting points that are not exact draws are no control variate)."""
    n = a.shape[0]
    if not use:
        return a.mean(0), a.std(0, ddof=1) / math.sqrt(n)
    a_c, b_c = a - a.mean(0), b - b.mean(0)
    var_b = (b_c * b_c).sum(0)
    beta = np.divide((a_c * b_c).sum(0), var_b, out=np.zeros_like(var_b), where=var_b > 0)
    adjusted = a - beta * (b - truth)
    return adjusted.mean(0), adjusted.std(0, ddof=1) / math.sqrt(n)


def moment_errors(stats: ChainStats) -> dict[str, Any]:
    """Mean and covariance errors (whitened, relative, Frobenius) with MCSEs, T_conf with its MCSE."""
    n = stats.z_mean.shape[0]
    if n < 4:
        return {
            "mean_error": None,
            "mean_mcse": None,
            "cov_error": None,
            "cov_mcse": None,
            "temperature": None,
            "temperature_mcse": None,
        }
    z = stats.z_mean.numpy()
    zz = stats.zz_mean.numpy()
    z0 = stats.z0.numpy()
    d = z.shape[1]
    mean, mean_se = _control_variate(z, z0, np.zeros(d), stats.exact_start)
    second, second_se = _control_variate(zz, z0[:, :, None] * z0[:, None, :], np.eye(d), stats.exact_start)
    # Cov(z) = E[z z^T] - E[z] E[z]^T; the product term is second order in the (small) mean error
    cov = second - np.outer(mean, mean)
    g2, lap = stats.grad_sq.numpy(), stats.laplacian.numpy()
    temperature = g2.mean() / lap.mean()
    residual = (g2 - temperature * lap) / lap.mean()  # the delta method for a ratio of means
    return {
        "mean_error": float(np.linalg.norm(mean) / math.sqrt(d)),
        "mean_mcse": float(np.linalg.norm(mean_se) / math.sqrt(d)),
        "cov_error": float(np.linalg.norm(cov - np.eye(d)) / math.sqrt(d)),
        "cov_mcse": float(np.linalg.norm(second_se) / math.sqrt(d)),
        "temperature": float(temperature),
        "temperature_mcse": float(residual.std(ddof=1) / math.sqrt(n)),
    }


def stable(entry: Entry, target: Target, step_size: float, n_chains: int, n_steps: int, seed: int) -> bool:
    """No chain diverged in ``n_steps`` steps (and, for an exact sampler, acceptance >= MIN_ACCEPTANCE)."""
    burn_in = min(entry.adaptation_steps(), n_steps - 1)
    stats = run_chains(entry, target, step_size, n_chains=n_chains, n_steps=n_steps, burn_in=burn_in, seed=seed)
    if stats.n_diverged:
        return False
    return stats.acceptance is None or stats.acceptance >= MIN_ACCEPTANCE


def stability_limit(
    entry: Entry, target: Target, *, n_chains: int, n_steps: int, seed: int, rtol: float = 0.05
) -> float:
    """The largest step size with no divergence in ``n_steps`` steps, by bracketing then bisection in log h.

    The same seed is used at every step size, so the answer is deterministic. Brackets are searched by factors
    of 4 from h = 0.1 between 1e-8 and 1e4 (a sampler stable at 1e4 reports 1e4).
    """
    lo, hi = None, None
    h = 0.1
    while 1e-8 <= h <= 1e4:
        if stable(entry, target, h, n_chains, n_steps, seed):
            lo = h
            if hi is not None:
                break
            h *= 4
        else:
            hi = h
            if lo is not None:
                break
            h /= 4
    if lo is None:
        return 0.0
    if hi is None:
        return lo
    while hi / lo > 1 + rtol:
        mid = math.sqrt(lo * hi)
        if stable(entry, target, mid, n_chains, n_steps, seed):
            lo = mid
        else:
            hi = mid
    return lo


def coupled_gaussian(base: Gaussian, gamma: float, anchor: np.ndarray) -> Gaussian:
    """The law exp(-(f(x') + gamma/2 |x' - x|^2)) of Entropy-SGD's inner loop for a Gaussian f, at anchor x."""
    hessian = base.hessian + gamma * np.eye(base.dim)
    covariance = np.linalg.inv(hessian)
    mean = covariance @ (base.hessian @ base.mean + gamma * anchor)
    description = f"{base.name} coupled to an anchor with gamma = {gamma:g}"
    covariance = (covariance + covariance.T) / 2
    return Gaussian(
        name=f"{base.name}+coupling", mean=mean, covariance=covariance, hessian=hessian, description=description
    )


def entropy_sgd_regime(
    entry: Entry,
    coupled: Gaussian,
    anchor: np.ndarray,
    gamma: float,
    step_size: float,
    *,
    inner_steps: int,
    outer_steps: int,
    n_chains: int,
    seed: int,
) -> dict[str, Any]:
    """Short chains restarted every outer step, as Entropy-SGD runs them: each outer step puts the chains back at
    the anchor x, ``reset``s the sampler (a frozen pSGLD preconditioner survives it) and runs ``inner_steps``
    steps; the estimate of the local-entropy gradient is gamma (x - mu), mu the uniform mean of the iterates.

    Returns its error relative to the exact gamma (x - <x'>), over chains and outer steps, with the MCSE (chains
    are the replicates; each chain's estimate averages its outer steps).
    """
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(anchor, dtype=DTYPE).expand(n_chains, -1).clone()
    sampler = entry.build(step_size, coupled, inner_steps)
    state = sampler.init(x.clone())
    per_chain = torch.zeros_like(x)
    diverged = torch.zeros(n_chains, dtype=torch.bool)
    for t in range(outer_steps):
        if t:
            state.position.copy_(x)
            state = sampler.reset(state)
        mu = torch.zeros_like(x)
        for _ in range(inner_steps):
            state = sampler.step(state, coupled.grad(state.position), generator)
            mu += state.position
        estimate = gamma * (x - mu / inner_steps)
        diverged |= ~torch.isfinite(estimate).all(1)
        per_chain += torch.nan_to_num(estimate)
    per_chain = (per_chain / outer_steps)[~diverged].numpy()
    truth = gamma * (anchor - coupled.mean)
    if per_chain.shape[0] < 4:
        return {"grad_error": None, "grad_mcse": None, "n_diverged": int(diverged.sum())}
    scale = np.linalg.norm(truth)
    return {
        "grad_error": float(np.linalg.norm(per_chain.mean(0) - truth) / scale),
        "grad_mcse": float(np.linalg.norm(per_chain.std(0, ddof=1) / math.sqrt(per_chain.shape[0])) / scale),
        "n_diverged": int(diverged.sum()),
    }
