"""What each published inner-loop convention of Entropy-SGD does to the local-entropy gradient estimate.

    python benchmarks/preset_effects.py [--chains 256] [--steps 20] [--eps 1e-3 0.1] [--step-size 0.01]

On the quadratic ``Quadratic.random(20, 100, seed=0)`` (eigenvalues of A log-spaced in [1, 100]) at x = 0 with
gamma = 1, the truth is g = gamma (A + gamma I)^-1 (A x - b). Each row runs ``--chains`` independent inner
loops of L = ``--steps`` steps (the L of the paper) with inner step size eta' = ``--step-size`` (the paper's
eta' = 0.1 would be unstable here: SGLD needs eta' < 2 / (lambda_max(A) + gamma) = 0.0198), and reports, from
the chains as replicates (``localentropy.diagnostics.estimator_quality``):

* bias: ||mean over chains - g||, corrected for the variance / R it carries (docs/background.md), with its MCSE;
* var/chain: the variance of one chain's estimate, sum_r ||g_r - mean||^2 / (R - 1);
* var / exact: that variance over the variance of the mean of L exact Gibbs draws at the row's temperature,
  gamma^2 tr(T (A + gamma I)^-1) / L;
* rel. MSE per chain: (bias^2 + var/chain) / ||g||^2; cosine between the mean estimate and g.

Rows (noise scale eps, T the temperature that the row's noise amounts to):

* paper: Algorithm 1, SGLD with noise sqrt(eta') eps xi (T = eps^2 / 2), alpha = 0.75;
* authors (SGLD): the authors' temperature T = eps^2 and weight 0.25 on the newest iterate, no momentum
  (``LocalEntropyEstimator.from_preset("authors-sgld")``);
* paper T, alpha = 0.25 / uniform / alpha = 1: the averaging changed alone;
* authors + Nesterov, coupling inside: the optimizer's ``preset="authors"`` inner loop (MomentumSGLD, m = 0.9,
  T = eps^2 (1 - m), i.e. noise eps sqrt(2 eta') xi) with the coupling inside the momentum buffer;
* authors + Nesterov, coupling after momentum: the authors' Lua code and PyTorch port, where the coupling
  gamma (x' - x) and the noise are added after the momentum (``coupling="after_momentum"``).

A second table runs the after-momentum chain long enough to converge (T = 0, many steps, uniform average of
the second half) and compares gamma (x - mu) with the closed forms at gamma and at the effective scope
gamma_eff = gamma (1 - m): the chain's x - mu converges to (A + gamma_eff I)^-1 (A x - b), so gamma (x - mu)
converges to g(gamma_eff) / (1 - m), not to g(gamma).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

import torch

from localentropy.diagnostics import estimator_quality
from localentropy.entropy import LocalEntropyEstimator
from localentropy.entropy.problems import Quadratic
from localentropy.samplers import SGLD, MomentumSGLD, Sampler

F64 = torch.float64


def hand_chains(
    grad_fn,
    x: torch.Tensor,
    gamma: float,
    sampler: Sampler,
    *,
    n_chains: int,
    n_steps: int,
    averaging: str | float,
    coupling: str,
    generator: torch.Generator,
    burn_in: int = 0,
) -> torch.Tensor:
    """Per-chain gamma (x - mu) with the coupling inside the sampler's gradient or added after its momentum."""
    position = x.unsqueeze(0).repeat(n_chains, 1)
    state = sampler.init(position)
    kept = n_steps - burn_in
    mu = torch.zeros_like(position) if averaging == "uniform" else position.clone()
    for k in range(n_steps):
        p = state.position
        force = gamma * (p - x)
        if coupling == "inside":
            state = sampler.step(state, grad_fn(p) + force, generator)
        else:
            state = sampler.step(state, grad_fn(p), generator, force=force)
        if k < burn_in:
            continue
        if averaging == "uniform":
            mu.add_(state.position)
        else:
            mu.lerp_(state.position, averaging)
    if averaging == "uniform":
        mu.div_(kept)
    return gamma * (x - mu)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="L, inner steps per estimate")
    parser.add_argument("--step-size", type=float, default=0.01, help="eta', the inner step size")
    parser.add_argument("--eps", type=float, nargs="+", default=[1e-3, 0.1], help="noise scales eps")
    parser.add_argument("--momentum", type=float, default=0.9, help="the authors' inner Nesterov momentum")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    problem = Quadratic.random(20, 100, seed=0)
    A, b = problem.A, problem.b
    x = torch.zeros(problem.dim, dtype=F64)
    gamma, h, L, R, m = args.gamma, args.step_size, args.steps, args.chains, args.momentum
    truth = problem.local_entropy_grad(x, gamma)

    def grad_fn(points: torch.Tensor) -> torch.Tensor:
        return points @ A - b

    print(
        f"Quadratic.random(20, 100, seed=0), x = 0, gamma = {gamma:g}, ||g|| = {float(truth.norm()):.4f}; "
        f"L = {L} inner steps of eta' = {h:g}, {R} chains per row (each chain one estimate, {L} gradients)"
    )
    for eps in args.eps:
        rows = []

        def estimator_row(name, temperature, sampler, averaging, seed_offset, eps=eps, rows=rows):
            est = LocalEntropyEstimator(grad_fn, gamma, sampler, L, averaging=averaging, keep_draws=False)
            result = est.estimate(x, n_chains=R, generator=torch.Generator().manual_seed(args.seed + seed_offset))
            rows.append((name, temperature, result.chain_grads))

        paper = LocalEntropyEstimator.from_preset("paper", grad_fn, gamma, step_size=h, noise_scale=eps, n_steps=L)
        authors = LocalEntropyEstimator.from_preset(
            "authors-sgld", grad_fn, gamma, step_size=h, noise_scale=eps, n_steps=L
        )
        for name, est, offset in (("paper", paper, 0), ("authors (SGLD)", authors, 1)):
            result = est.estimate(x, n_chains=R, generator=torch.Generator().manual_seed(args.seed + offset))
            rows.append((name, est.temperature, result.chain_grads))
        t_paper = eps**2 / 2
        sgld_paper = SGLD(step_size=h, temperature=t_paper)
        estimator_row("paper T, alpha = 0.25", t_paper, sgld_paper, 0.25, 2)
        estimator_row("paper T, uniform", t_paper, sgld_paper, "uniform", 3)
        estimator_row("paper T, alpha = 1 (last)", t_paper, sgld_paper, 1.0, 4)

        t_authors = eps**2 * (1 - m)  # MomentumSGLD's noise sqrt(2 h T / (1 - m)) = eps sqrt(2 h)
        nesterov = MomentumSGLD(step_size=h, momentum=m, nesterov=True, temperature=t_authors)
        estimator_row("authors + Nesterov, inside", t_authors, nesterov, 0.25, 5)
        # cross-check: the hand-rolled loop with the coupling inside equals the estimator, draw for draw
        check = hand_chains(
            grad_fn,
            x,
            gamma,
            nesterov,
            n_chains=R,
            n_steps=L,
            averaging=0.25,
            coupling="inside",
            generator=torch.Generator().manual_seed(args.seed + 5),
        )
        torch.testing.assert_close(check, rows[-1][2], rtol=1e-12, atol=1e-14)
        after = hand_chains(
            grad_fn,
            x,
            gamma,
            nesterov,
            n_chains=R,
            n_steps=L,
            averaging=0.25,
            coupling="after_momentum",
            generator=torch.Generator().manual_seed(args.seed + 6),
        )
        rows.append(("authors + Nesterov, after", t_authors, after))

        print(f"\neps = {eps:g}")
        print(
            f"| {'inner loop':<27} | {'T':>8} | {'bias':>7} | {'MCSE':>7} | {'var/chain':>9} | {'var / exact':>11} |"
            f" {'rel. MSE':>8} | {'cosine':>6} |"
        )
        print(f"|{'-' * 29}|{'-' * 10}|{'-' * 9}|{'-' * 9}|{'-' * 11}|{'-' * 13}|{'-' * 10}|{'-' * 8}|")
        for name, temperature, chain_grads in rows:
            q = estimator_quality(chain_grads, truth, grad_evals=L)
            exact_var = gamma**2 * float(torch.trace(problem.gibbs_cov(gamma, temperature))) / L
            print(
                f"| {name:<27} | {temperature:8.2e} | {q.bias_norm:7.4f} | {q.bias_norm_mcse:7.1e} |"
                f" {q.variance:9.2e} | {q.variance / exact_var:11.2f} | {q.relative_mse:8.4f} | {q.cosine:6.4f} |"
            )

    # Effective scope of the after-momentum coupling, at convergence (T = 0: the deterministic limit)
    n_long = 4000
    converged = hand_chains(
        grad_fn,
        x,
        gamma,
        MomentumSGLD(step_size=h, momentum=m, nesterov=True, temperature=0.0),
        n_chains=1,
        n_steps=n_long,
        averaging="uniform",
        coupling="after_momentum",
        generator=torch.Generator().manual_seed(args.seed),
        burn_in=n_long // 2,
    )[0]
    gamma_eff = gamma * (1 - m)
    g_gamma = truth
    g_eff = problem.local_entropy_grad(x, gamma_eff)
    print(
        f"\nCoupling after Nesterov momentum m = {m:g}, converged ({n_long} steps, T = 0, uniform average of "
        f"the second half): gamma_eff = gamma (1 - m) = {gamma_eff:g}"
    )
    print(f"| {'compared with':<44} | {'rel. error':>10} | {'cosine':>6} | {'norm ratio':>10} |")
    print(f"|{'-' * 46}|{'-' * 12}|{'-' * 8}|{'-' * 12}|")
    for label, reference in (
        ("g(gamma) = gamma (A + gamma I)^-1 (Ax - b)", g_gamma),
        ("g(gamma_eff)", g_eff),
        ("g(gamma_eff) / (1 - m)", g_eff / (1 - m)),
    ):
        rel = float((converged - reference).norm() / reference.norm())
        cos = float(converged @ reference / (converged.norm() * reference.norm()))
        ratio = float(converged.norm() / reference.norm())
        print(f"| {label:<44} | {rel:10.2e} | {cos:6.4f} | {ratio:10.4f} |")
    if not math.isfinite(float(converged.norm())):
        print("the after-momentum chain diverged", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
