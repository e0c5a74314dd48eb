"""The LLC of deep linear networks at a true parameter against Aoyagi's (2024) learning coefficient.

    python benchmarks/llc_dln.py [--steps 80000] [--chains 16] [--sampler sgld] [--fraction 0.05] [--cases 0 1 ...]
                                 [--start-spread 0.1] [--point balanced]

For each (widths, rank): w* has every layer of rank r (:meth:`DeepLinearPotential.true_point`, seed 1; with
``--point balanced`` unit singular values and aligned layers, :meth:`DeepLinearPotential.balanced_point`), L the
population loss ||W_M ... W_1 - P*||_F^2, the sampler (SGLD by default; MALA, with its accept-reject step, has no
step-size bias) at step_size = fraction / (nbeta lambda_max + localization) (lambda_max of the Hessian of L at w*, at
least 1; fraction 0.05 by default), localization 1, a quarter of the steps burn-in. The soft directions relax in
time ~ 1 / localization = nbeta lambda_max / 0.05 steps: 20000 at nbeta = 1000. Prints a markdown table with the
estimate +- MCSE, R-hat and the relative error.
"""

from __future__ import annotations

import argparse
import time

import torch

from localentropy.llc import DeepLinearPotential, estimate_llc
from localentropy.llc.reference import largest_curvature

CASES = (((2, 2, 2), 0), ((3, 2, 3), 1), ((5, 4, 3), 2), ((4, 3, 2, 5), 1), ((3, 3, 3, 3), 1), ((2, 3, 4, 3, 2), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80000)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--nbeta", type=float, nargs="+", default=[1000.0, 10000.0])
    parser.add_argument("--sampler", default="sgld", help="a registered sampler (mala: no step-size bias)")
    parser.add_argument("--fraction", type=float, default=0.05, help="step size x (nbeta lambda_max + localization)")
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(len(CASES))), help="indices into CASES")
    parser.add_argument(
        "--start-spread",
        type=float,
        default=0.0,
        help="start the second half of the chains at w* + N(0, spread^2) (default 0: every chain at w*), and print "
        "the two halves' means apart: chains that forget their start agree",
    )
    parser.add_argument(
        "--point",
        choices=("random", "balanced"),
        default="random",
        help="w*: random rank-r layers (true_point, the default) or unit, aligned ones (balanced_point)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(
        f"{args.sampler}, localization 1, {args.chains} chains x {args.steps} steps (burn-in {args.steps // 4}), "
        f"c = {args.fraction:g}, {args.point} w*\n"
    )
    print("| widths | rank | Aoyagi | nbeta | estimate ± MCSE | R-hat | relative error |")
    print("|---|---|---|---|---|---|---|")
    for widths, rank in (CASES[i] for i in args.cases):
        potential = DeepLinearPotential(widths, rank)
        draw = potential.balanced_point if args.point == "balanced" else potential.true_point
        w_star = draw(torch.Generator().manual_seed(1))
        lmax = largest_curvature(potential, w_star)
        theory = potential.theory.llc
        initial = w_star.expand(args.chains, -1).clone()
        spread = torch.randn(args.chains - args.chains // 2, w_star.numel(), generator=torch.Generator().manual_seed(2))
        initial[args.chains // 2 :] += args.start_spread * spread.to(w_star.dtype)
        for nbeta in args.nbeta:
            result = estimate_llc(
                potential,
                w_star,
                nbeta=nbeta,
                localization=1.0,
                sampler=args.sampler,
                sampler_options={"step_size": args.fraction / (nbeta * lmax + 1)},
                chains=args.chains,
                steps=args.steps,
                burn_in=args.steps // 4,
                generator=torch.Generator().manual_seed(0),
                initial=initial,
            )
            error = (result.mean - theory) / theory
            print(
                f"| {widths} | {rank} | {theory:g} | {nbeta:g} | {result.mean:.3f} ± {result.mcse:.3f} | "
                f"{result.rhat:.3f} | {error:+.1%} |",
                flush=True,
            )
            if args.start_spread:
                half = args.chains // 2
                own, moved = (result.per_chain[:half].round(3), result.per_chain[half:].round(3))
                print(f"per-chain estimates from w*: {own}; from w* + N(0, {args.start_spread:g}^2): {moved}")
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
