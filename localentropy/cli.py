"""The ``localentropy`` command line. ``main(argv)`` runs in-process for tests and returns an exit status.

Exit status: 0 done (or skipped: already complete), 2 bad input (usage, config, run directory), 1 a failure
while running, 130 interrupted (rerun the same command to resume). A traceback is printed only with --debug.
"""

from __future__ import annotations

import argparse
import inspect
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from localentropy import __version__
from localentropy.cli_values import non_negative_int, non_negative_seconds, positive_seconds
from localentropy.cli_values import out_dir as _out_dir
from localentropy.cli_values import positive_int as _positive_int
from localentropy.experiments.core.progress import bars_allowed
from localentropy.experiments.core.shipped import resolve_config


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
            traits += [
                text for flag, text in ((cls.accepts_force, "takes force="), (cls.needs_potential, "needs U")) if flag
            ]
        print(f"{name:<10} {params}\n           {summary}\n           ({', '.join(traits)})")
    return 0


def _report_outcome(path: Path, state: str) -> int:
    """The one line every run-directory command prints: skipped, completed or resumed."""
    if state == "skip":
        print(f"{path} is complete: skipped (use --force to run again)")
    else:
        print(f"{'resumed and completed' if state == 'resume' else 'completed'}: {path / 'report.md'}")
    return 0


def _out_is_free(args: argparse.Namespace) -> None:
    """A directory in use is refused before the config is read and checked (which can take seconds)."""
    if args.out:
        from localentropy.experiments.core.rundir import RunDirectory

        RunDirectory(args.out).check_free()


def _cmd_run(args: argparse.Namespace) -> int:
    # the run directory is checked once, under its lock, by run_comparison (its config is read and checked in
    # well under a second: no earlier look is needed)
    from localentropy.experiments.comparison.runner import run_comparison

    return _report_outcome(*run_comparison(resolve_config(args.config), args.out, force=args.force))


def _device_name(text: str) -> str:
    from localentropy.experiments.training.precision import DEVICE_PATTERN, DEVICE_RULE

    if not DEVICE_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected {DEVICE_RULE}, got {text!r}")
    return text


def _cmd_train(args: argparse.Namespace) -> int:
    from localentropy.experiments.training.parallel import PREPARED_ENV, under_launcher

    overrides = {key: value for key in ("device", "precision") if (value := getattr(args, key)) is not None}
    options = {"force": args.force, "drift_every": args.drift_check, "timeout": args.dist_timeout}
    if under_launcher():  # one rank of a data-parallel run (started by --nproc or by torchrun)
        from localentropy.experiments.training.launch import run_rank

        path, state, writer = run_rank(resolve_config(args.config), args.out, overrides=overrides, **options)
        return _report_outcome(path, state) if writer and PREPARED_ENV not in os.environ else 0
    # the run directory: probed by run_training / launch_training before the data load, then prepared under its lock
    if args.nproc > 1:
        from localentropy.experiments.training.launch import launch_training

        config = resolve_config(args.config)
        return _report_outcome(*launch_training(config, args.out, args.nproc, overrides=overrides, **options))
    from localentropy.experiments.training.config import load_train_config
    from localentropy.experiments.training.trainer import run_training

    config = resolve_config(args.config)
    if overrides:  # the values were checked by their option types
        config = load_train_config(config).model_copy(update=overrides)
    return _report_outcome(*run_training(config, args.out, force=args.force))


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.address and args.executor != "ray":
        print("localentropy sweep: error: --address is for --executor ray", file=sys.stderr)
        return 2
    _out_is_free(args)
    from localentropy.experiments.sweeps.runner import run_sweep

    path, state, results = run_sweep(
        resolve_config(args.config),
        args.out,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        force=args.force,
        quiet_wait=args.quiet_wait,
    )
    if state == "skip":
        print(f"{path} is complete: skipped (use --force to run again)")
    else:
        counts = ", ".join(f"{n} {status}" for status, n in results["counts"].items() if n)
        print(f"{'completed' if state == 'fresh' else 'resumed and completed'} ({counts}): {path / 'report.md'}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from localentropy.experiments.reproduce.run import reproduce

    doc, mode = reproduce(
        quick=args.quick,
        out=args.out,
        doc=args.doc,
        workers=args.workers,
        force=args.force,
        configs=args.configs,
        steps=args.steps,
        fresh_seeds=args.fresh_seeds,
    )
    print(f"findings ({mode} run): {doc}" if doc is not None else f"steps done ({mode} run); findings not written yet")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from localentropy.experiments.reports import rebuild_report

    print(f"report: {rebuild_report(args.runs, args.out)}")
    return 0


def _cmd_docs(args: argparse.Namespace) -> int:
    from localentropy.experiments.core.shipped import shipped_doc, shipped_docs

    if args.name is None:
        for name, title in shipped_docs().items():
            print(f"{name:<22} {title}")
    else:
        sys.stdout.write(shipped_doc(args.name).read_text(encoding="utf-8"))
    return 0


def _cmd_configs(args: argparse.Namespace) -> int:
    from localentropy.experiments.core.shipped import copy_config, shipped_config, shipped_configs

    if args.action in (None, "list"):
        for config in shipped_configs():
            print(f"{config.name:<22} {config.kind:<6} {config.summary}")
        return 0
    if args.action == "schema":
        if args.json:
            import json

            from localentropy.experiments.schema import config_schemas

            print(json.dumps(config_schemas(), indent=2))
        else:
            sys.stdout.write(reference_markdown())
        return 0
    config = shipped_config(args.name)
    if args.action == "show":
        sys.stdout.write(config.path.read_text(encoding="utf-8"))
        return 0
    target = copy_config(config, args.path, force=args.force)
    print(f"copied {config.name} to {target}; run it with: localentropy {config.kind} {target}")
    return 0


DESCRIPTION = """Study Entropy-SGD: compare estimators of the local-entropy gradient against known truths,
train models with Entropy-SGD and its rivals, sweep their settings, and reproduce the project's findings.

Every command that takes CONFIG accepts a TOML file or the name of a shipped config
(`localentropy configs` lists them; `localentropy configs copy NAME` writes an editable copy)."""

EPILOG = """exit status: 0 done (or skipped: already complete), 2 bad input (usage, config, run directory in use
or not usable), 1 a failure while running, 130 interrupted (run the same command again to resume).

A run directory holds config.json, the results, report.md and a COMPLETE marker written last; one command at a
time may use it. Progress bars show on a terminal; elsewhere, or with --quiet, plain lines."""

CONFIG_HELP = "a TOML config file, or the name of a shipped config (see `localentropy configs`)"
FORCE_HELP = (
    "delete the run directory and start again (only a run of the same config name; an interrupted "
    "run resumes without it)"
)


def _add_run_options(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--out", type=_out_dir, help=f"{what} directory (default: runs/<config name>)")
    command.add_argument("--force", action="store_true", help=FORCE_HELP)
    command.add_argument("--quiet", action="store_true", help="no progress bars: plain lines only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localentropy",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"localentropy {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )

    def config_command(
        name: str, summary: str, description: str, func: object, what: str = "run"
    ) -> argparse.ArgumentParser:
        """A command that runs one config into a run directory: CONFIG, --out, --force, --quiet."""
        parser = command(name, summary, description)
        parser.add_argument("config", metavar="CONFIG", help=CONFIG_HELP)
        _add_run_options(parser, what)
        parser.set_defaults(func=func)
        return parser

    config_command(
        "run",
        "compare estimators of the local-entropy gradient (a comparison config)",
        "Estimate the local-entropy gradient on a problem whose answer is known, with every estimator of "
        "the config,\nat every budget, scope gamma and temperature, and write the errors (bias, variance, "
        "MSE), chain\ndiagnostics and a report. Example: localentropy run shootout",
        _cmd_run,
    )
    train = config_command(
        "train",
        "train a model with several optimizers (a training config)",
        "Train one model with each optimizer of the config on the same data, initial weights and "
        "batch order;\nrecord test error per epoch, time, gradient evaluations and the flatness of "
        "the final weights.\nWith --nproc N, data-parallel on N local processes (torch.distributed: "
        "gloo on the CPU,\nnccl with one GPU per rank); under torchrun, one rank of its run "
        "(`localentropy docs distributed`).\n"
        "Example: localentropy train train_digits_small --nproc 2",
        _cmd_train,
    )
    train.add_argument("--nproc", type=_positive_int, default=1, help="data-parallel processes here (default 1)")
    train.add_argument("--device", type=_device_name, help="override the config's device: auto, cpu, cuda, cuda:N, mps")
    train.add_argument(
        "--precision", choices=("32-true", "bf16-mixed", "16-mixed"), help="override the config's precision"
    )
    train.add_argument(
        "--drift-check",
        type=non_negative_int,
        default=100,
        metavar="K",
        help="data-parallel: check the replicas are equal every K steps (0: never; default 100)",
    )
    train.add_argument(
        "--dist-timeout",
        type=positive_seconds,
        default=60.0,
        metavar="SECONDS",
        help="data-parallel: how long a rank waits for the others at a collective (default 60)",
    )
    sweep = config_command(
        "sweep",
        "run a grid of training runs, on local processes or on Ray (a sweep config)",
        "Expand a sweep config (a base training config and the values to try) into training runs and "
        "run them,\nseveral at a time; completed runs are kept, failed ones retried on the next call.\n"
        "Example: localentropy sweep sweep_overhead --workers 2",
        _cmd_sweep,
        "sweep",
    )
    sweep.add_argument(
        "--executor", choices=("local", "ray"), default="local", help="local processes (default) or Ray tasks"
    )
    sweep.add_argument("--address", help="Ray cluster address (e.g. auto or ray://host:10001; default: a local Ray)")
    sweep.add_argument("--workers", type=_positive_int, help="runs at a time (local default 1; Ray: all CPUs)")
    from localentropy.experiments.sweeps.timing import QUIET_WAIT

    sweep.add_argument(
        "--quiet-wait",
        type=non_negative_seconds,
        default=QUIET_WAIT,
        metavar="SECONDS",
        help=f"runs one at a time on local processes start once other processes are quiet, after at most this "
        f"many seconds (default {QUIET_WAIT:.0f}; 0: do not wait)",
    )

    from localentropy.experiments.reproduce.steps import expected_minutes, registered_steps

    reproduce = command(
        "reproduce",
        "rerun every experiment behind the findings and write the findings document",
        f"Rerun every experiment behind the findings (about {expected_minutes(False):.0f} minutes on 2 cores; "
        f"--quick about {expected_minutes(True):.0f})\nand write the findings document. Complete steps are "
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
    reproduce.add_argument(
        "--configs", type=_out_dir, help="a folder of edited step configs to use instead of the shipped ones"
    )
    reproduce.add_argument("--force", action="store_true", help="delete the step runs and run everything again")
    reproduce.add_argument("--quiet", action="store_true", help="no progress bars: plain lines only")
    reproduce.add_argument(
        "--steps", help="comma-separated steps to run (default all): " + ", ".join(s.name for s in registered_steps())
    )
    reproduce.add_argument(
        "--fresh-seeds",
        type=_positive_int,
        metavar="K",
        help="then rerun the steps (default: those with claims) on K seeds never used before, into <out>/fresh, and "
        "say beside each claim whether the two batches are consistent or inconsistent and its estimate pooled over "
        "both (with --quick at most 3)",
    )
    reproduce.set_defaults(func=_cmd_reproduce)

    report = command(
        "report",
        "rebuild a run's report, or merge several comparison runs into one report",
        "Rebuild the report of one run directory (`localentropy run`, `train` or `sweep`) in place, "
        "or merge several\ncomparison runs into a new directory (default runs/report-<name>-<name>; the "
        "merged runs are never changed).",
    )
    report.add_argument(
        "runs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directories of `localentropy run` (or one of `localentropy train` or `sweep`)",
    )
    report.add_argument("--out", type=_out_dir, help="where to write the report")
    report.set_defaults(func=_cmd_report)

    docs = command(
        "docs",
        "list the documentation, or print one document",
        "The documentation installed with localentropy: `docs` lists it, `docs NAME` prints one document\n"
        "(NAME as listed; `samplers`, `samplers.md` and `docs/samplers.md` name the same one).",
    )
    docs.add_argument("name", metavar="NAME", nargs="?", help="the document to print")
    docs.set_defaults(func=_cmd_docs)

    configs = command(
        "configs",
        "list, show or copy the shipped configs; print the config reference",
        "The configs that ship with localentropy: `configs` lists them, `configs show NAME` prints "
        "one,\n`configs copy NAME [PATH]` writes an editable copy (a sweep's base config is found "
        "beside it or\namong the shipped ones), `configs schema` prints every field of every config "
        "kind\n(`--json`: their JSON Schemas, which editors use to check a config as it is "
        "typed).",
    )
    configs.set_defaults(func=_cmd_configs)
    actions = configs.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="one line per shipped config: name, command, what it does")
    show = actions.add_parser("show", help="print a shipped config")
    show.add_argument("name", metavar="NAME")
    copy = actions.add_parser("copy", help="write an editable copy of a shipped config")
    copy.add_argument("name", metavar="NAME")
    copy.add_argument("path", metavar="PATH", nargs="?", help="file or folder to write (default ./NAME.toml)")
    copy.add_argument("--force", action="store_true", help="overwrite an existing file")
    schema = actions.add_parser(
        "schema",
        help="every field of every config kind: type, default, allowed values "
        "(Markdown; --json: the JSON Schema of each kind, for editors)",
    )
    schema.add_argument("--json", action="store_true", help="print one JSON object: config kind -> its JSON Schema")

    samplers = command(
        "samplers",
        "list the registered samplers and their hyperparameters",
        "List the registered samplers, their hyperparameters and defaults; with --accuracy, measure "
        "how\naccurately each samples known targets as the step size grows (the accuracy atlas).",
    )
    samplers.add_argument("--accuracy", action="store_true", help="measure the accuracy atlas of every sampler")
    samplers.add_argument("--out", type=_out_dir, help="atlas output directory (default runs/atlas)")
    samplers.add_argument("--quick", action="store_true", help="a small atlas (under a minute)")
    samplers.add_argument("--doc", type=_out_dir, help="a Markdown file whose atlas section to rewrite")
    samplers.add_argument("--sampler", action="append", help="only this registered sampler (repeatable)")
    samplers.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    samplers.set_defaults(func=_cmd_samplers)

    demo = command(
        "demo",
        "sample a correlated 2-D Gaussian with every registered sampler",
        "Sample a correlated 2-D Gaussian with every registered sampler and print the error of the mean "
        "and\ncovariance with its Monte Carlo standard error: a quick check that the samplers work.",
    )
    demo.add_argument("--chains", type=_positive_int, default=32, help="independent chains (default 32)")
    demo.add_argument("--steps", type=_positive_int, default=10000, help="steps per chain, burn-in included")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_cmd_demo)

    digits = command(
        "digits",
        "train a small MLP on scikit-learn digits with SGD, Entropy-SGD and LPF-SGD",
        "Train a small MLP on scikit-learn's digits with SGD, Entropy-SGD (each published preset) and "
        "LPF-SGD\nat the same gradient budget and print their test errors (needs scikit-learn).",
    )
    digits.add_argument("--epochs", type=_positive_int, default=10, help="gradient budget in epochs (default 10)")
    digits.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    digits.set_defaults(func=_cmd_digits)
    return parser


def reference_markdown() -> str:
    """docs/configuration.md: every config field (from the config classes), then every command (from this parser)."""
    from localentropy.experiments.schema import commands_markdown, configuration_markdown

    return configuration_markdown() + commands_markdown(build_parser(), EPILOG)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a file (captured in a test): nothing to flush
        pass


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
        with bars_allowed(not getattr(args, "quiet", False) and _is_terminal(sys.stdout)):
            return args.func(args)
    except BrokenPipeError:  # the reader went away (`localentropy ... | head`): nothing more to say
        _silence_stdout()
        return 0
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
        print(
            f"localentropy {args.command}: failed: {type(exc).__name__}: {exc} (--debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
