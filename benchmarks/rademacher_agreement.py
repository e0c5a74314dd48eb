"""Does Rademacher noise give the same local-entropy estimates and sampled moments as Gaussian noise?

    python benchmarks/rademacher_agreement.py [--chains 1000] [--steps-scale 1] [--quick] [--json [PATH]]
                                              [--sampler sgld]

On the non-convex test problems (DoubleWell, SharpWide; 1-D and 2-D) at a few (x, gamma, T), runs
LocalEntropyEstimator with the same sampler and the same seed-independent settings twice, with
``noise="gaussian"`` and ``noise="rademacher"``, and compares with ``problem.local_entropy_grad`` (quadrature):

* g = gamma (x - <x'>): the mean over R independent chains of each chain's estimate, with MCSE = the spread
  of the chain estimates / sqrt(R) (replicates, so autocorrelation within a chain needs no model);
* the sampled second moment about the exact Gibbs mean, per coordinate, E (x'_i - m_i)^2, against the exact
  Gibbs variance (quadrature), MCSE again from the spread over chains;
* z-scores: (estimate - exact) / MCSE for each noise kind, and (rademacher - gaussian) / sqrt(MCSE_r^2 + MCSE_g^2).

Both noise kinds carry SGLD's O(h) discretisation bias, and the O(h) term is not the same for both (it involves
the fourth moment of the noise: 3 for Gaussian, 1 for Rademacher), so the step size is small relative to the
largest curvature (``h kappa_max`` is printed). Nothing here asserts; tests/test_rademacher.py runs a smaller
version with assertions.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from localentropy.entropy.estimators import LocalEntropyEstimator
from localentropy.entropy.problems.lowdim import DoubleWell, SharpWide
from localentropy.samplers import make_sampler

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "rademacher_agreement.json"

# (label, problem, x, gamma, T, step size h, steps). h keeps h kappa_max (the largest curvature of U over the
# region the chains visit) near 0.05 or below, so that SGLD's own bias stays near the Monte Carlo error; steps
# make the chain time (steps x h) long against the relaxation time, barrier crossings included.
CASES: list[tuple[str, Any, tuple[float, ...], float, float, float, int]] = [
    ("DoubleWell 1-D", DoubleWell(), (-1.2,), 2.0, 0.1, 2e-3, 4_000),
    ("DoubleWell 1-D", DoubleWell(), (0.3,), 0.5, 1.0, 1e-3, 20_000),
    ("DoubleWell 2-D", DoubleWell(dim=2, curvature=4.0), (0.3, 0.5), 1.0, 0.5, 1e-3, 20_000),
    ("SharpWide 1-D", SharpWide(), (1.0,), 1.0, 0.3, 1e-2, 4_000),
    ("SharpWide 1-D", SharpWide(), (-1.3,), 1.0, 0.2, 5e-4, 40_000),
    ("SharpWide 2-D", SharpWide(dim=2), (0.5, 0.3), 0.5, 0.5, 5e-4, 40_000),
]
# The quick set (tests/test_rademacher.py): unimodal-but-non-Gaussian and bimodal cases that mix in few steps.
QUICK = (0, 1, 3)


def curvature_bound(problem: Any, x: torch.Tensor, gamma: float, temperature: float) -> float:
    """Largest Hessian eigenvalue of U over +-4 Gibbs standard deviations around the Gibbs mean (a guide for h)."""
    sd = problem.gibbs_cov(gamma, temperature, x).diagonal(dim1=-2, dim2=-1).sqrt().max().item()
    mean = problem.gibbs_mean(x, gamma, temperature)
    lines = [torch.linspace(m - 4 * sd, m + 4 * sd, 801, dtype=torch.float64) for m in mean.tolist()]
    grid = torch.stack(torch.meshgrid(*lines, indexing="ij"), -1).reshape(-1, x.numel())
    return float(torch.linalg.eigvalsh(problem.hessian(grid)).max()) + gamma


def run_case(
    problem: Any,
    x: tuple[float, ...],
    gamma: float,
    temperature: float,
    step_size: float,
    *,
    chains: int,
    steps: int,
    burn_in: int,
    sampler: str = "sgld",
    seed: int = 0,
) -> dict[str, Any]:
    """Gaussian and Rademacher estimates at one (x, gamma, T) against the quadrature values."""
    x64 = torch.tensor(x, dtype=torch.float64)
    exact_g = problem.local_entropy_grad(x64, gamma, temperature)
    exact_mean = problem.gibbs_mean(x64, gamma, temperature)
    exact_var = problem.gibbs_cov(gamma, temperature, x64).diagonal()
    out: dict[str, Any] = {
        "x": list(x),
        "gamma": gamma,
        "temperature": temperature,
        "step_size": step_size,
        "h_kappa_max": step_size * curvature_bound(problem, x64, gamma, temperature),
        "chains": chains,
        "steps": steps,
        "burn_in": burn_in,
        "sampler": sampler,
        "exact_g": exact_g.tolist(),
        "exact_var": exact_var.tolist(),
    }
    for noise in ("gaussian", "rademacher"):
        template = make_sampler(sampler, step_size=step_size, noise=noise)
        est = LocalEntropyEstimator(problem.grad, gamma, template, steps, temperature=temperature, burn_in=burn_in)
        generator = torch.Generator().manual_seed(seed + (noise == "rademacher"))
        start = time.perf_counter()
        result = est.estimate(x64, n_chains=chains, generator=generator)
        seconds = time.perf_counter() - start
        per_chain_g = result.chain_grads  # (R, dim)
        second = ((result.draws - exact_mean) ** 2).mean(1)  # (R, dim): E (x' - m)^2 per chain
        out[noise] = {
            "g": per_chain_g.mean(0).tolist(),
            "g_mcse": (per_chain_g.std(0) / math.sqrt(chains)).tolist(),
            "var": second.mean(0).tolist(),
            "var_mcse": (second.std(0) / math.sqrt(chains)).tolist(),
            "seconds": seconds,
        }
    for key, exact in (("g", exact_g), ("var", exact_var)):
        g, r = out["gaussian"], out["rademacher"]
        for est in (g, r):
            est[f"{key}_z"] = [
                (e - t) / s for e, t, s in zip(est[key], exact.tolist(), est[f"{key}_mcse"], strict=True)
            ]
        out[f"{key}_z_difference"] = [
            (a - b) / math.hypot(sa, sb)
            for a, b, sa, sb in zip(r[key], g[key], r[f"{key}_mcse"], g[f"{key}_mcse"], strict=True)
        ]
    return out


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| problem | x | gamma | T | h | steps | h kappa_max | quantity | exact | gaussian (MCSE) | rademacher (MCSE) "
        "| z gauss | z rad | z rad-gauss |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        x = "(" + ", ".join(f"{v:g}" for v in row["x"]) + ")"
        for key, exact_key, label in (("g", "exact_g", "g"), ("var", "exact_var", "Var x'")):
            for i, exact in enumerate(row[exact_key]):
                g, r = row["gaussian"], row["rademacher"]
                q = f"{label}_{i + 1}" if len(row[exact_key]) > 1 else label
                lines.append(
                    f"| {row['problem']} | {x} | {row['gamma']:g} | {row['temperature']:g} | {row['step_size']:g} | "
                    f"{row['steps']} | {row['h_kappa_max']:.3f} | "
                    f"{q} | {exact:.4f} | {g[key][i]:.4f} ({g[key + '_mcse'][i]:.4f}) | "
                    f"{r[key][i]:.4f} ({r[key + '_mcse'][i]:.4f}) | {g[key + '_z'][i]:+.1f} | "
                    f"{r[key + '_z'][i]:+.1f} | {row[key + '_z_difference'][i]:+.1f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chains", type=int, default=1000, help="independent chains (replicates) per noise kind")
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every case's number of steps")
    p.add_argument("--quick", action="store_true", help="only the cases that tests/test_rademacher.py runs")
    p.add_argument("--sampler", default="sgld")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", nargs="?", const=str(DEFAULT_JSON), default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for k, (label, problem, x, gamma, temperature, h, steps) in enumerate(CASES):
        if args.quick and k not in QUICK:
            continue
        steps = max(4, round(steps * args.steps_scale))
        row = run_case(
            problem,
            x,
            gamma,
            temperature,
            h,
            chains=args.chains,
            steps=steps,
            burn_in=steps // 4,
            sampler=args.sampler,
            seed=args.seed + 10 * k,
        )
        rows.append({"problem": label, **row})
    print(
        f"{args.sampler}, {args.chains} independent chains per noise kind and case, the first quarter of the steps "
        "discarded"
    )
    print(format_table(rows))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
