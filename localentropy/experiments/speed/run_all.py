"""All speed benchmarks of the inner loop in one command: tables on stdout, everything in one JSON file.

    python -m localentropy.experiments.speed [--json [PATH]] [--quick] [--device cpu|cuda] [--threads 2]
                                             [--sections entropy,samplers,estimator] [--hidden 1024] [--batch 128]
                                             [--max-other-cores C] [--quiet-wait S] [--max-seconds S]

(``python benchmarks/run_all.py`` is a thin wrapper of :func:`run`; ``localentropy reproduce`` runs it as a module.)

Sections (docs/performance.md describes them and the targets):

* ``entropy``: one EntropySGD outer step (``optimizer.step(closure)``, L closure calls) divided by L x G, per
  sampler, noise kind and L (5 and 20), and the floor rows G + serial draw and G + parallel draw. G = zero_grad +
  forward + backward of the same model at the same batch, timed in the same loop right before each outer step
  (interleaved), so every figure is a ratio.
* ``samplers``: one sampler step, gradient included, divided by G, for every registered sampler and both noise
  kinds, plus torch.optim.SGD and the ``posteriors`` peers (:mod:`localentropy.experiments.speed.samplers`, also
  ``benchmarks/bench_samplers.py``).
* ``estimator``: LocalEntropyEstimator with SGLD on a 100-D quadratic with 1, 8 and 64 chains: chain-steps
  per second and the time of one step with 64 chains over the time with one chain.
* ``peers`` (derived from ``samplers``): our step / the posteriors step, SGLD and SGHMC; ``floor`` (derived from
  ``entropy``): the SGLD Gaussian inner step against G + its noise draw.

Timing: each repeat times G and every row once, in an order that rotates from repeat to repeat; each row's
time is divided by that repeat's G and the tables give medians over the repeats after warm-up, with the
interquartile range. The machine, threads, versions and the CPU that other processes used while each section
measured are recorded. On a shared machine a measurement (a repeat; in ``entropy`` a (G, outer step) pair) during
which other processes used more than ``--max-other-cores`` (from ``/proc/stat``) is dropped and retaken, within
``--max-seconds`` per section; the tables say how many were dropped. ``--quiet-wait S`` first waits up to S seconds
for a quiet machine. Nothing asserts a timing. On CUDA, every clock read is preceded by a synchronisation.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from localentropy.experiments.core.cpuload import load_average, wait_for_quiet
from localentropy.experiments.speed.entropy import entropy_section
from localentropy.experiments.speed.report import SECTIONS, floor_section, print_report, targets
from localentropy.experiments.speed.samplers import make_mlp
from localentropy.experiments.speed.sections import estimator_section, peers_section, samplers_section
from localentropy.experiments.speed.timing import finish_report, machine_info

DEFAULT_JSON = Path("benchmarks") / "results" / "run_all.json"  # the script passes the path beside it
COMMAND = "python -m localentropy.experiments.speed"


def parse_args(
    argv: list[str] | None, default_json: Path = DEFAULT_JSON, prog: str | None = None
) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--json", nargs="?", const=str(default_json), default=None, help=f"write JSON (default path {default_json})"
    )
    p.add_argument("--quick", action="store_true", help="few repeats and L = 5 only (about a minute)")
    p.add_argument("--full-inner", action="store_true", help="with --quick: still time L = 20")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--hidden", type=int, default=1024, help="width of both hidden layers (default 1024: mnistfc)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=None, help="unmeasured repeats per section (default 3; quick 1)")
    p.add_argument("--entropy-repeats", type=int, default=None, help="default 25 (quick 3)")
    p.add_argument("--sampler-repeats", type=int, default=None, help="default 150 (quick 15)")
    p.add_argument("--estimator-repeats", type=int, default=None, help="default 30 (quick 5)")
    p.add_argument("--estimator-dim", type=int, default=100)
    p.add_argument("--estimator-steps", type=int, default=200, help="steps per estimate() call (default 200)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="per section: stop measuring after the repeat that passes this many seconds (default 240; quick 30)",
    )
    p.add_argument(
        "--max-other-cores",
        type=float,
        default=None,
        help="drop (and retake, within --max-seconds) a measurement during which other processes used more than "
        "this many cores (default: CPUs - threads + 0.3, i.e. 0.3 with 2 threads on 2 CPUs: any competition for our "
        "cores; a negative value keeps everything)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each section, wait up to this many seconds for other processes to use < 0.3 cores (default 0)",
    )
    args = p.parse_args(argv)
    quick = args.quick
    defaults = {
        "warmup": (3, 1),
        "entropy_repeats": (25, 3),
        "sampler_repeats": (150, 15),
        "estimator_repeats": (30, 5),
        "max_seconds": (240.0, 30.0),
    }
    for key, (full, short) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, short if quick else full)
    if args.max_other_cores is None:
        args.max_other_cores = max(0.3, (os.cpu_count() or 1) - args.threads + 0.3)
    elif args.max_other_cores < 0:
        args.max_other_cores = None
    args.sections = tuple(s.strip() for s in args.sections.split(",") if s.strip())
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    if (
        min(
            args.threads,
            args.hidden,
            args.batch,
            args.entropy_repeats,
            args.sampler_repeats,
            args.estimator_repeats,
            args.estimator_dim,
            args.estimator_steps,
        )
        < 1
        or args.warmup < 0
    ):
        p.error("sizes, threads and repeats must be >= 1 and --warmup >= 0")
    if not args.max_seconds > 0:
        p.error("--max-seconds must be > 0")
    return args


def run(argv: list[str] | None = None, *, command: str = COMMAND, default_json: Path = DEFAULT_JSON) -> dict[str, Any]:
    """The whole benchmark: measure the sections asked for, print the tables, write the JSON with ``--json``.
    ``command`` is how it was invoked (recorded), ``default_json`` where a bare ``--json`` writes."""
    args = parse_args(argv, default_json, None if command.endswith(".py") else command)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but CUDA is not available")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    n_params = sum(p.numel() for p in make_mlp(args.hidden).parameters())
    report: dict[str, Any] = {
        "command": f"{command} " + " ".join(sys.argv[1:] if argv is None else argv),
        "model": f"MLP 784-{args.hidden}-{args.hidden}-10 (ReLU), {n_params} parameters, batch {args.batch}",
        "machine": {**machine_info(device, args.threads), "loadavg_1min_before": load_average()},
        "versions": versions(),
        "quick": args.quick,
    }
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("samplers", lambda: samplers_section(args, device)),
        ("entropy", lambda: entropy_section(args, device)),
        ("estimator", lambda: estimator_section(args, device)),
    ]
    try:
        for name, fn in steps:
            if name in args.sections:
                quiet = wait_for_quiet(args.quiet_wait)
                report[name] = {**fn(), "quiet_wait": quiet}
    finally:
        torch.set_num_threads(previous)
    if "samplers" in report:
        report["peers"] = peers_section(report["samplers"])
    if "entropy" in report:
        report["floor"] = floor_section(report["entropy"])
    report["targets"] = targets(report)
    print_report(report, args)
    return finish_report(report, args.json)


def versions() -> dict[str, str]:
    out = {"torch": torch.__version__}
    try:
        import importlib.metadata as md

        for pkg in ("localentropy", "posteriors"):
            try:
                out[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                out[pkg] = "not installed"
    except ImportError:  # pragma: no cover
        pass
    return out
