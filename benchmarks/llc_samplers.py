"""Which sampler estimates the LLC best on the exact 2-D toys, at equal gradient evaluations, tuned alike.

    python benchmarks/llc_samplers.py [--evals 10000] [--chains 16] [--replicates 10]

:func:`localentropy.llc.ranking.rank_samplers` on each toy at nbeta = 1000, localization = 20: every registered
single-chain sampler (:data:`localentropy.llc.bias.SAMPLER_SETTINGS`) gets its step-size fraction c from
{1, 0.3, 0.1} on 2 tuning replicates, then 10 fresh paired replicates; the verdict is Holm-adjusted paired t-tests
of the squared errors against the lowest. Prints a markdown table per toy.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from localentropy.diagnostics.compare import verdict_text
from localentropy.llc.ranking import rank_samplers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=10000, help="gradient evaluations per chain")
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--replicates", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    for name in ("regular", "crossing", "quartic"):
        ranking = rank_samplers(
            name,
            nbeta=1000.0,
            localization=20.0,
            evals_per_chain=args.evals,
            chains=args.chains,
            replicates=args.replicates,
        )
        print(
            f"\n### {name}: exact {ranking.exact:.4f} (nbeta 1000, localization 20, {args.chains} chains x "
            f"{args.evals} gradient evaluations, {args.replicates} replicates)\n"
        )
        print("| sampler | tuned c | bias ± SE | RMSE |")
        print("|---|---|---|---|")
        for sampler, c in ranking.chosen.items():
            e = np.asarray(ranking.errors[sampler])
            if c is None or not e.size:
                print(f"| {sampler} | diverged | — | — |")
                continue
            se = e.std(ddof=1) / math.sqrt(e.size)
            print(f"| {sampler} | {c:g} | {e.mean():+.4f} ± {se:.4f} | {ranking.rmse(sampler):.4f} |")
        print(f"\nverdict (squared error): {verdict_text(ranking.verdict)}", flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
