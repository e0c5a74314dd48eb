"""The model-level LLC against devinterp 2.0.1 with matched settings, and what burn-in does to devinterp's average.

    python benchmarks/llc_devinterp.py [--chains 8] [--steps 1000] [--burn-in 200]

Needs the ``llc`` extra. Prints our estimate and devinterp's (same tanh MLP, data, SGLD with step_size = lr / 2,
n_beta = n / log n, localization 100, batch 32; :mod:`localentropy.llc.crosscheck`), their difference with its
standard error over chains, and our estimate from the same chains with the first ``--burn-in`` steps dropped
(devinterp's ``compute_llc`` averages every step, burn-in included).
"""

from __future__ import annotations

import argparse
import time

import torch

from localentropy.llc.crosscheck import devinterp_crosscheck


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--burn-in", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    check = devinterp_crosscheck(chains=args.chains, steps=args.steps)
    ours = check.ours
    dropped = ours.nbeta * (ours.loss_trace[:, args.burn_in :].mean(axis=1) - ours.loss_at_w_star)
    print(f"chains {args.chains}, steps {args.steps}, nbeta {ours.nbeta:.2f}, localization {ours.localization:g}")
    print(f"ours (every step)        {ours.mean:.4f}  (MCSE {ours.mcse:.4f}, L(w*) {ours.loss_at_w_star:.6f})")
    print(f"devinterp (every step)   {check.theirs:.4f}  (init_loss {check.theirs_init_loss:.6f})")
    print(f"difference               {check.difference:+.4f} +- {check.difference_se:.4f} (SE over chains)")
    print(f"ours after {args.burn_in} burn-in steps {dropped.mean():.4f}")
    print(f"({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
