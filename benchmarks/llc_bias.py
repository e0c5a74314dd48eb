"""Bias of each sampler's LLC estimate against the exact finite-nbeta values of the 2-D toys (docs/diagnostics.md).

    python benchmarks/llc_bias.py [--quick] [--json PATH]

Two tables (markdown on stdout): (1) bias vs step-size fraction c for every sampler, toy and (nbeta, localization)
at equal gradient evaluations (32 chains, 20000 per chain, 20% burn-in, one replicate: the interval is the
estimate's MCSE); (2) SGLD's bias vs the number of chains and of steps on independent replicates (the interval is
the replicates' standard error). The settings are :mod:`localentropy.llc.bias`'s. The (nbeta, localization) pairs
share 2 nbeta / localization = 100, the ratio of the stiffest to the softest curvature of U near w*, so that one
budget equilibrates the chains alike: the soft directions relax in time ~ 1 / localization, about 100 / c steps of
SGLD, so at c = 0.03 the 4000 burn-in steps are about one relaxation time and the bias there is partly the chains'
start at w*, not the discretisation.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

from localentropy.llc.bias import SAMPLER_SETTINGS, BiasRow, bias_row

TOYS = ("regular", "crossing", "quartic")
SETTINGS = ((100.0, 2.0), (10000.0, 200.0))  # (nbeta, localization)


def _cell(row: BiasRow) -> str:
    if row.diverged:
        return "diverged"
    return f"{row.bias:+.3f} ± {row.bias_se:.3f}"


def step_size_table(settings, fractions, chains: int, evals: int) -> list[BiasRow]:
    rows = []
    for toy_name in TOYS:
        for nbeta, loc in settings:
            for sampler in SAMPLER_SETTINGS:
                for c in fractions:
                    row = bias_row(
                        toy_name, sampler, c, nbeta=nbeta, localization=loc, chains=chains, grad_evals_per_chain=evals
                    )
                    rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one setting, two step sizes, fewer replicates")
    parser.add_argument("--json", default=None, help="write every row to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    settings = SETTINGS[:1] if args.quick else SETTINGS
    fractions = (0.3, 0.03) if args.quick else (1.0, 0.3, 0.1, 0.03)
    replicates = 4 if args.quick else 8
    evals = 5000 if args.quick else 20000
    rows = step_size_table(settings, fractions, chains=32, evals=evals)
    print(f"## Bias vs step-size fraction c (32 chains x {evals} gradient evaluations, 20% burn-in)\n")
    print("| toy | nbeta | localization | exact | sampler | " + " | ".join(f"c = {c:g}" for c in fractions) + " |")
    print("|---|---|---|---|---|" + "---|" * len(fractions))
    for toy_name in TOYS:
        for nbeta, loc in settings:
            for sampler in SAMPLER_SETTINGS:
                cells = [r for r in rows if (r.toy, r.nbeta, r.sampler) == (toy_name, nbeta, sampler)]
                values = " | ".join(_cell(r) for r in cells)
                print(f"| {toy_name} | {nbeta:g} | {loc:g} | {cells[0].exact:.4f} | {sampler} | {values} |")
    extra = []
    print(
        f"\n## SGLD bias vs chains and steps (crossing, nbeta 1000, localization 20, c = 0.1, "
        f"{replicates} replicates)\n"
    )
    print("| chains | steps | burn-in | bias ± SE (replicates) | mean MCSE |")
    print("|---|---|---|---|---|")
    for chains, steps in ((4, 20000), (16, 20000), (64, 20000), (32, 2500), (32, 10000), (32, 40000)):
        if args.quick and steps > 10000:
            continue
        row = bias_row(
            "crossing",
            "sgld",
            0.1,
            nbeta=1000.0,
            localization=20.0,
            chains=chains,
            grad_evals_per_chain=steps,
            replicates=replicates,
            seed=1,
        )
        extra.append(row)
        print(f"| {chains} | {row.steps} | {int(0.2 * row.steps)} | {_cell(row)} | {row.mean_mcse:.3f} |")
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([asdict(r) for r in rows + extra], fh, indent=1)


if __name__ == "__main__":
    main()
