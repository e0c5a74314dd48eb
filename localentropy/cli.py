"""The ``localentropy`` command line. ``main(argv)`` runs in-process for tests and returns an exit status."""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

from localentropy import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    from localentropy.experiments.demo import print_demo, run_demo

    rows = run_demo(n_chains=args.chains, n_steps=args.steps, burn_in=args.steps // 5, seed=args.seed)
    print_demo(rows, sys.stdout)
    return 0


def _cmd_digits(args: argparse.Namespace) -> int:
    from localentropy.experiments.digits import print_digits, run_digits

    print_digits(run_digits(epochs=args.epochs, seed=args.seed), sys.stdout)
    return 0


def _cmd_samplers(args: argparse.Namespace) -> int:
    from localentropy.samplers import available_samplers, sampler_class, sampler_hyperparameters

    for name in available_samplers():
        params = ", ".join(
            k if d is inspect.Parameter.empty else f"{k}={d!r}" for k, d in sampler_hyperparameters(name).items()
        )
        summary = (inspect.getdoc(sampler_class(name)) or "").splitlines()[0]
        print(f"{name:<8} {params}\n         {summary}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localentropy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"localentropy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="sample a correlated 2-D Gaussian with every registered sampler")
    demo.add_argument("--chains", type=_positive_int, default=32, help="independent chains (default 32)")
    demo.add_argument("--steps", type=_positive_int, default=10000, help="steps per chain, burn-in included")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    digits = sub.add_parser(
        "digits", help="train a small MLP on scikit-learn digits with SGD, Entropy-SGD (each preset) and LPF-SGD"
    )
    digits.add_argument("--epochs", type=_positive_int, default=10, help="gradient budget in epochs (default 10)")
    digits.add_argument("--seed", type=int, default=0)
    digits.set_defaults(func=_cmd_digits)

    samplers = sub.add_parser("samplers", help="list the registered samplers and their hyperparameters")
    samplers.set_defaults(func=_cmd_samplers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
