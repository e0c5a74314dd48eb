"""The ``localentropy`` command line. ``main(argv)`` runs in-process for tests and returns an exit status.

Exit status: 0 done (or skipped: already complete), 2 bad input (usage, config, run directory), 1 a failure
while running, 130 interrupted (rerun the same command to resume). A traceback is printed only with --debug.
"""

from __future__ import annotations

import argparse
import inspect
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

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

    if args.accuracy:
        from localentropy.experiments.atlas.cli import accuracy_command

        return accuracy_command(args.out, quick=args.quick, doc=args.doc, samplers=args.sampler, seed=args.seed)
    if args.out or args.quick or args.doc or args.sampler:
        print("localentropy samplers: error: --out, --quick, --doc and --sampler go with --accuracy", file=sys.stderr)
        return 2

    for name in available_samplers():
        params = ", ".join(
            k if d is inspect.Parameter.empty else f"{k}={d!r}" for k, d in sampler_hyperparameters(name).items()
        )
        cls = sampler_class(name)
        summary = (inspect.getdoc(cls) or "").splitlines()[0]
        if cls.wraps_sampler:  # its capabilities are the wrapped sampler's, known once it is built
            traits = ["wraps a sampler: its gradients per step, noises and force= are the wrapped sampler's"]
        else:
            traits = [f"{cls.gradients_per_step} gradient(s) per step", f"noise {'/'.join(cls.noises)}"]
            traits += [text for flag, text in ((cls.accepts_force, "takes force="), (cls.needs_potential, "needs U"))
                       if flag]  # fmt: skip
        print(f"{name:<10} {params}\n           {summary}\n           ({', '.join(traits)})")
    return 0


def _report_outcome(path: Path, state: str) -> int:
    """The one line every run-directory command prints: skipped, completed or resumed."""
    if state == "skip":
        print(f"{path} is complete: skipped (use --force to run again)")
    else:
        print(f"{'resumed and completed' if state == 'resume' else 'completed'}: {path / 'report.md'}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from localentropy.experiments.comparison.runner import run_comparison

    return _report_outcome(*run_comparison(args.config, args.out, force=args.force))


def _cmd_train(args: argparse.Namespace) -> int:
    from localentropy.experiments.training.trainer import run_training

    return _report_outcome(*run_training(args.config, args.out, force=args.force))


def _cmd_sweep(args: argparse.Namespace) -> int:
    from localentropy.experiments.sweeps.runner import run_sweep

    if args.address and args.executor != "ray":
        print("localentropy sweep: error: --address is for --executor ray", file=sys.stderr)
        return 2
    path, state, results = run_sweep(args.config, args.out, executor=args.executor, workers=args.workers,
                                     address=args.address, force=args.force)  # fmt: skip
    if state == "skip":
        print(f"{path} is complete: skipped (use --force to run again)")
    else:
        counts = ", ".join(f"{n} {status}" for status, n in results["counts"].items() if n)
        print(f"{'completed' if state == 'fresh' else 'resumed and completed'} ({counts}): {path / 'report.md'}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from localentropy.experiments.reproduce.run import reproduce

    doc, mode = reproduce(quick=args.quick, out=args.out, doc=args.doc, workers=args.workers, force=args.force,
                          configs=args.configs, steps=args.steps)  # fmt: skip
    print(f"findings ({mode} run): {doc}" if doc is not None else f"steps done ({mode} run); findings not written yet")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from localentropy.experiments.comparison.report import load_run, write_report
    from localentropy.experiments.core.rundir import RunDirectoryError

    for run in args.runs:  # a missing or unreadable results.json is bad input (exit 2), not a failure
        try:
            load_run(run)
        except ValueError as exc:
            raise RunDirectoryError(str(exc)) from None
    out = Path(args.out) if args.out else Path(args.runs[0])
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"--out {out}: cannot create the report directory: {exc.strerror or exc}") from None
    print(f"report: {write_report([Path(r) for r in args.runs], out)}")
    return 0


def _out_dir(text: str) -> str:
    if not text.strip():  # an unset shell variable (--out "$OUT") would write into the current directory
        raise argparse.ArgumentTypeError("expected a directory, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character, got {text!r}")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localentropy", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"localentropy {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="compare estimators of the local-entropy gradient from a TOML config")
    run.add_argument("config", help="the TOML config (see docs/configuration.md)")
    run.add_argument("--out", type=_out_dir, help="run directory (default runs/<config name>)")
    run.add_argument("--force", action="store_true", help="run again even if the directory is complete")
    run.set_defaults(func=_cmd_run)

    train = sub.add_parser("train", help="train a model with several optimizers from a TOML config")
    train.add_argument("config", help="the TOML training config (see docs/training.md)")
    train.add_argument("--out", type=_out_dir, help="run directory (default runs/<config name>)")
    train.add_argument("--force", action="store_true", help="run again even if the directory is complete")
    train.set_defaults(func=_cmd_train)

    sweep = sub.add_parser("sweep", help="run a grid of training runs, locally or on Ray (see docs/sweeps.md)")
    sweep.add_argument("config", help="the TOML sweep config (see docs/sweeps.md)")
    sweep.add_argument("--out", type=_out_dir, help="sweep directory (default runs/<config name>)")
    sweep.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="local processes (default) or Ray tasks")  # fmt: skip
    sweep.add_argument("--address", help="Ray cluster address (e.g. auto or ray://host:10001; default: a local Ray)")
    sweep.add_argument("--workers", type=_positive_int, help="runs at a time (local default 1; Ray: all CPUs)")
    sweep.add_argument("--force", action="store_true", help="delete the sweep directory and run everything again")
    sweep.set_defaults(func=_cmd_sweep)

    from localentropy.experiments.reproduce.steps import expected_minutes, registered_steps

    reproduce = sub.add_parser(
        "reproduce",
        help="rerun every experiment behind docs/findings.md and regenerate it",
        description=f"Rerun every experiment behind docs/findings.md (about {expected_minutes(False):.0f} minutes on "
        f"2 cores; --quick about {expected_minutes(True):.0f}) and write the findings document. Complete steps are "
        "skipped, so an interrupted run resumes.",
    )
    reproduce.add_argument(
        "--quick", action="store_true", help="fewer seeds, replicates and epochs: checks the pipeline, not the findings"
    )
    reproduce.add_argument(
        "--out", type=_out_dir, help="directory of the step runs (default runs/reproduce, or runs/reproduce-quick)"
    )
    reproduce.add_argument("--doc", type=_out_dir, help="the document to write (default <out>/findings.md)")
    reproduce.add_argument("--workers", type=_positive_int, help="sweep runs at a time (default 2, at most the CPUs)")
    reproduce.add_argument("--configs", type=_out_dir, help="the experiments/configs directory (default: found)")
    reproduce.add_argument("--force", action="store_true", help="delete the step runs and run everything again")
    reproduce.add_argument(
        "--steps", help="comma-separated steps to run (default all): " + ", ".join(s.name for s in registered_steps())
    )
    reproduce.set_defaults(func=_cmd_reproduce)

    report = sub.add_parser("report", help="rebuild a run's report, or merge several runs into one")
    report.add_argument("runs", nargs="+", help="run directories")
    report.add_argument("--out", type=_out_dir,
                        help="where to write the merged report (default: the first run directory)")  # fmt: skip
    report.set_defaults(func=_cmd_report)

    samplers = sub.add_parser("samplers", help="list the registered samplers and their hyperparameters")
    samplers.add_argument("--accuracy", action="store_true",
                          help="measure the accuracy atlas of every registered sampler (docs/samplers.md)")  # fmt: skip
    samplers.add_argument("--out", type=_out_dir, help="atlas output directory (default runs/atlas)")
    samplers.add_argument("--quick", action="store_true", help="a small atlas (under a minute)")
    samplers.add_argument("--doc", type=_out_dir, help="a Markdown file whose atlas section to rewrite")
    samplers.add_argument("--sampler", action="append", help="only this registered sampler (repeatable)")
    samplers.add_argument("--seed", type=int, default=0)
    samplers.set_defaults(func=_cmd_samplers)

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
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    from localentropy.experiments.core.config import ConfigError
    from localentropy.experiments.core.rundir import RunDirectoryError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return int(exc.code or 0)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _terminate)  # a killed run stops like ^C: complete records stay
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return args.func(args)
    except (ConfigError, RunDirectoryError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"localentropy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"localentropy {args.command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # report every other failure as one readable line
        if args.debug:
            traceback.print_exc()
        print(f"localentropy {args.command}: failed: {type(exc).__name__}: {exc} (--debug for the traceback)",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
