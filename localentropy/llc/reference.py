r"""Monte Carlo references for the LLC of a deep linear network at a finite nbeta and localization.

Aoyagi's coefficient is the nbeta -> infinity limit; an estimate at nbeta = 1000 differs from it by a finite-nbeta
bias that no sampler can remove (docs/diagnostics.md measures it). The quantity a sampler estimates is

    lambda(nbeta, localization) = nbeta (E_p[L] - L(w*)),  p(w) ∝ exp(-nbeta L(w) - localization/2 |w - w*|^2),

which has no closed form on a network. A reference is that expectation from long chains of MALA (Roberts and
Tweedie 1996): its Metropolis-Hastings step leaves p exactly invariant, so its only error is Monte Carlo error, which
the reference carries as its MCSE (ArviZ's, over all chains). A comparison scores the samplers against it in place
of the limit when one exists for the problem's widths, rank, seed of w*, nbeta and localization.

References are computed once and shipped in ``references.json`` beside this module, each with the command that
wrote it:

    python -m localentropy.llc.reference --widths 3 2 3 --rank 1 --seed 0 --nbeta 1000 --localization 20 --write
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict

from localentropy.llc.dln import DeepLinearPotential
from localentropy.llc.estimate import estimate_llc

__all__ = [
    "REFERENCES_FILE",
    "Reference",
    "compute_reference",
    "find_reference",
    "largest_curvature",
    "load_references",
    "write_reference",
]

REFERENCES_FILE = Path(__file__).with_name("references.json")
DEFAULT_FRACTION = 0.5  # MALA's step = fraction / (nbeta lambda_max + localization): about 60-80 % accepted


class Reference(BaseModel):
    """One reference value: the network, the measure, the estimate with its MCSE and how it was computed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    widths: list[int]
    rank: int
    seed: int
    nbeta: float
    localization: float
    llc: float
    mcse: float
    rhat: float
    ess_bulk: float
    sampler: str
    step_size: float
    chains: int
    steps: int
    burn_in: int
    command: str
    seconds: float
    torch: str
    date: str

    def matches(self, widths: Sequence[int], rank: int, seed: int, nbeta: float, localization: float) -> bool:
        return (
            list(widths) == self.widths
            and rank == self.rank
            and seed == self.seed
            and math.isclose(nbeta, self.nbeta, rel_tol=1e-9)
            and math.isclose(localization, self.localization, rel_tol=1e-9)
        )


def load_references(path: Path | None = None) -> list[Reference]:
    """The references in ``path`` (default :data:`REFERENCES_FILE`); none when it does not exist."""
    path = REFERENCES_FILE if path is None else path
    if not path.is_file():
        return []
    stat = path.stat()
    return list(_read(str(path), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=8)
def _read(path: str, modified: int, size: int) -> tuple[Reference, ...]:
    """Parsed once per version of the file (a comparison asks for the truth of every task; the file rarely changes)."""
    return tuple(Reference(**entry) for entry in json.loads(Path(path).read_text(encoding="utf-8")))


def find_reference(
    widths: Sequence[int], rank: int, seed: int, nbeta: float, localization: float, path: Path | None = None
) -> Reference | None:
    """The shipped reference for this network and measure, or None."""
    return next((r for r in load_references(path) if r.matches(widths, rank, seed, nbeta, localization)), None)


def largest_curvature(potential: DeepLinearPotential, w_star: torch.Tensor) -> float:
    """The top eigenvalue of L's Hessian at w*, at least 1: the scale of a stable step (step ~ c / (nbeta lambda))."""
    hessian = torch.autograd.functional.hessian(lambda v: potential(v[None])[0], w_star)
    return max(1.0, float(torch.linalg.eigvalsh(hessian)[-1]))


def compute_reference(
    widths: Sequence[int],
    rank: int,
    seed: int,
    nbeta: float,
    localization: float,
    *,
    chains: int = 8,
    steps: int = 400_000,
    fraction: float = DEFAULT_FRACTION,
    command: str = "",
    generator_seed: int | None = None,
) -> Reference:
    """MALA chains from w* (a quarter of each chain burn-in) at step fraction / (nbeta lambda_max + localization),
    lambda_max the top eigenvalue of L's Hessian at w*. w* is :class:`DeepLinearProblem`'s for ``seed``; the chains'
    noise comes from ``generator_seed`` (default: ``seed``)."""
    potential = DeepLinearPotential(widths, rank)
    w_star = potential.true_point(torch.Generator().manual_seed(seed))
    step_size = fraction / (nbeta * largest_curvature(potential, w_star) + localization)
    start = time.perf_counter()
    result = estimate_llc(
        potential,
        w_star,
        nbeta=nbeta,
        localization=localization,
        sampler="mala",
        sampler_options={"step_size": step_size},
        chains=chains,
        steps=steps,
        burn_in=steps // 4,
        generator=torch.Generator().manual_seed(seed if generator_seed is None else generator_seed),
    )
    return Reference(
        widths=list(widths),
        rank=rank,
        seed=seed,
        nbeta=nbeta,
        localization=localization,
        llc=result.mean,
        mcse=result.mcse,
        rhat=result.rhat,
        ess_bulk=result.ess_bulk,
        sampler="mala",
        step_size=step_size,
        chains=chains,
        steps=steps,
        burn_in=steps // 4,
        command=command,
        seconds=time.perf_counter() - start,
        torch=torch.__version__,
        date=datetime.now(UTC).date().isoformat(),
    )


def write_reference(reference: Reference, path: Path | None = None) -> None:
    """Add ``reference`` to the file (replacing one of the same network and measure)."""
    path = REFERENCES_FILE if path is None else path
    kept = [
        r
        for r in load_references(path)
        if not r.matches(reference.widths, reference.rank, reference.seed, reference.nbeta, reference.localization)
    ]
    entries: list[dict[str, Any]] = [r.model_dump() for r in [*kept, reference]]
    path.write_text(json.dumps(entries, indent=1) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--widths", type=int, nargs="+", required=True)
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="the seed of w* (the comparison's problem seed)")
    parser.add_argument("--nbeta", type=float, required=True)
    parser.add_argument("--localization", type=float, required=True)
    parser.add_argument("--chains", type=int, default=8)
    parser.add_argument("--steps", type=int, default=400_000)
    parser.add_argument("--fraction", type=float, default=DEFAULT_FRACTION)
    parser.add_argument("--write", action="store_true", help=f"add it to {REFERENCES_FILE.name}")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    command = "python -m localentropy.llc.reference " + " ".join(
        [
            f"--widths {' '.join(map(str, args.widths))} --rank {args.rank} --seed {args.seed}",
            f"--nbeta {args.nbeta:g} --localization {args.localization:g}",
            f"--chains {args.chains} --steps {args.steps} --fraction {args.fraction:g}",
        ]
    )
    reference = compute_reference(
        args.widths,
        args.rank,
        args.seed,
        args.nbeta,
        args.localization,
        chains=args.chains,
        steps=args.steps,
        fraction=args.fraction,
        command=command,
    )
    print(reference.model_dump_json(indent=1))
    if args.write:
        write_reference(reference)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
