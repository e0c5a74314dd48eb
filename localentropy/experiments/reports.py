"""``localentropy report``: the report of any finished run rebuilt from its directory, or several comparison runs
merged into one report.

This is the one place a run is loaded back from disk: a comparison run's results.json is checked by
:func:`~localentropy.experiments.comparison.loading.load_run`, a training run's by
:func:`~localentropy.experiments.training.report.check_train_results`, and a sweep's report is drawn again from
its results.json (:func:`~localentropy.experiments.sweeps.report.write_sweep_report`); a file that is none of these
is bad input (:class:`RunDirectoryError`, exit 2) naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from localentropy.experiments.comparison.loading import load_run
from localentropy.experiments.comparison.report import render_report
from localentropy.experiments.comparison.suite import SUITE_FILE, suite_markdown
from localentropy.experiments.core.files import atomic_write_bytes, slug
from localentropy.experiments.core.rundir import RunDirectory, RunDirectoryError
from localentropy.experiments.sweeps.report import write_sweep_report
from localentropy.experiments.training.report import check_train_results, is_train_results, write_train_outputs


def _results_data(run: Path) -> Any:
    """The parsed results.json of ``run``, or None when it cannot be read (load_run then says what is wrong)."""
    try:
        return json.loads((run / "results.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _is_sweep(data: Any) -> bool:
    """Whether parsed results are a sweep's (its runs over a grid of axes)."""
    return isinstance(data, dict) and isinstance(data.get("axes"), list) and isinstance(data.get("runs"), list)


def _rebuild_sweep(run: Path, results: dict, out: str | None) -> Path:
    """A sweep's report and figures drawn again from its results.json (in place, or in ``out``)."""
    target = Path(out) if out is not None else run
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"--out {target}: cannot create the report directory: {exc.strerror or exc}") from None
    with RunDirectory(target).locked():
        try:
            return write_sweep_report(target, results)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise RunDirectoryError(f"{run / 'results.json'}: not a complete sweep's results ({problem})") from None


def _rebuild_suite(run: Path, out: str | None) -> Path:
    """A comparison of several problems (suite.json): each problem's report rebuilt in its own directory, then the
    suite's report.md from suite.json, in place (a suite is rebuilt alone, never merged or moved)."""
    if out is not None and Path(out).resolve() != run.resolve():
        raise RunDirectoryError(f"--out {out}: a run of several problems ({run}) has its report rebuilt in place")
    try:
        summary = json.loads((run / SUITE_FILE).read_text(encoding="utf-8"))
        labels = [str(problem["label"]) for problem in summary["problems"]]
        loaded = [(run / label, load_run(run / label)) for label in labels]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise RunDirectoryError(f"{run / SUITE_FILE}: not a readable run of several problems: {exc}") from None
    with RunDirectory(run).locked():
        for problem_dir, results in loaded:
            render_report([(problem_dir, results)], problem_dir)
        report = run / "report.md"
        atomic_write_bytes(report, suite_markdown(summary).encode())
    return report


def rebuild_report(runs: list[str], out: str | None = None) -> Path:
    """Rebuild one run's report (in place, or in ``out``) or merge several comparison runs (into ``out``, by default
    ``runs/report-<name>-<name>``; the merged runs are never changed). A run of several problems (``suite.json``)
    is rebuilt in place, alone. Returns the report's path."""
    dirs = [Path(r).parent if Path(r).name in ("results.json", SUITE_FILE) else Path(r) for r in runs]
    suites = [d for d in dirs if (d / SUITE_FILE).is_file() and not (d / "results.json").is_file()]
    if suites:
        if len(dirs) > 1:
            raise RunDirectoryError(
                f"{suites[0]}: a run of several problems has its report rebuilt alone; to merge problems, give "
                "their directories (<run>/<problem>)"
            )
        return _rebuild_suite(suites[0], out)
    data = [_results_data(d) for d in dirs]  # each results.json read once here
    sweeps = [d for d, results in zip(dirs, data, strict=True) if _is_sweep(results)]
    if sweeps:
        if len(dirs) > 1:
            raise RunDirectoryError(f"{sweeps[0]}: a sweep's report is rebuilt alone: give one sweep directory")
        return _rebuild_sweep(dirs[0], data[0], out)
    try:  # a missing or unreadable results.json is bad input (exit 2), not a failure
        trained = [
            check_train_results(results, d / "results.json") if is_train_results(results) else None
            for d, results in zip(dirs, data, strict=True)
        ]
        if any(t is not None for t in trained) and len(dirs) > 1:
            raise ValueError("a training run's report is rebuilt alone: give one training run directory")
        loaded = [(d, load_run(d)) for d, t in zip(dirs, trained, strict=True) if t is None]
    except ValueError as exc:
        raise RunDirectoryError(str(exc)) from None
    if out is not None:
        target = Path(out)
    elif len(dirs) == 1:
        target = dirs[0]  # one run: its own report, rebuilt in place
    else:  # several runs: a new directory, never one of theirs
        target = Path("runs") / ("report-" + "-".join(slug(r.resolve().name) for r in dirs))[:120]
    if len(dirs) > 1 and any(target.resolve() == r.resolve() for r in dirs):
        raise RunDirectoryError(
            f"--out {target}: a merged report goes into a directory of its own, not into one of the runs it merges"
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirectoryError(f"--out {target}: cannot create the report directory: {exc.strerror or exc}") from None
    with RunDirectory(target).locked():
        if trained[0] is not None:
            return write_train_outputs(target, trained[0])
        return render_report(loaded, target)  # the runs as loaded and checked above, not read again
