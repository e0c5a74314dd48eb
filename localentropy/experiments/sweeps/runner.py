"""``localentropy sweep``: many training runs from one sweep config, on local processes or on Ray.

The config (:mod:`localentropy.experiments.sweeps.config`) expands into runs; each run is one ``localentropy train``
run in its own run directory under ``<sweep>/runs/<run id>``, executed by :func:`run_one` either in a
``ProcessPoolExecutor`` (spawn) or as a Ray task: the same function either way. Completed runs are skipped on a
re-run; a failed run is recorded with its error and does not stop the others. Executors and outputs:
docs/sweeps.md.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, TextIO

from localentropy.experiments.core.cpuload import LoadMeter, load_average
from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.lifeline import die_with_parent
from localentropy.experiments.core.progress import Progress
from localentropy.experiments.core.rundir import MARKER, RunDirectory, environment, finite_or_none
from localentropy.experiments.sweeps.config import (
    EXECUTORS,
    RAY_EXTRA,
    SCHEMA,
    SweepConfig,
    load_sweep_config,
    parse_sweep_config,
)
from localentropy.experiments.sweeps.paths import STAR, format_path, parse_path
from localentropy.experiments.sweeps.timing import QUIET_WAIT, timing_record, wait_until_quiet
from localentropy.experiments.sweeps.tuning import job_key, sweep_objective, tune_one, tuning_jobs, with_chosen
from localentropy.experiments.tuning.record import tuned_line

# ------------------------------------------------------------------------------------------------ execution


def _curve(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("epoch", "effective_epochs", "seconds", "grad_evals", "test_error", "val_error", "train_loss")
    text = ("val_bits_per_char", "test_bits_per_char")  # language models' rows only
    return {k: row.get(k) for k in keys} | {k: row[k] for k in text if k in row}


def summarise_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-optimizer part of a training run's results.json that the sweep report needs."""
    return [
        {
            "label": rec["label"],
            "kind": rec["kind"],
            "status": rec["status"],
            "message": rec.get("message"),
            "final": rec.get("final"),
            "curve": [_curve(row) for row in rec.get("rows", [])],
        }
        for rec in results["records"]
    ]


def run_one(run_config: dict[str, Any], run_dir: str, nproc: int = 1) -> dict[str, Any]:
    """Train one expanded config into ``run_dir``: what the process pool and the Ray task both execute.

    Never raises for a failure of the run itself: returns {"status": "ok" | "diverged" | "failed", "message",
    "state", "wall_seconds", "other_cores", "records", "log", "traceback"}; ``other_cores``: the cores' worth of CPU
    that processes other than this one (and its children: the launcher and its ranks) used while it ran (None
    without /proc/stat). The torch thread count is the config's ``threads`` (1 unless configured). ``nproc`` > 1:
    the run is ``localentropy train --nproc nproc`` (torch's launcher, one process per rank; their output goes to
    the log).
    """
    import torch

    from localentropy.experiments.training.config import parse_train_config
    from localentropy.experiments.training.trainer import run_training

    log = io.StringIO()
    outcome: dict[str, Any] = {"status": "failed", "message": None, "state": None, "records": [], "traceback": None}
    with LoadMeter(children=True) as meter:
        try:
            config = parse_train_config(copy.deepcopy(run_config), name=str(run_config.get("name", "run")))
            torch.set_num_threads(config.threads)
            path, state = (
                run_training(config, run_dir, progress=log) if nproc == 1 else _launch(run_config, run_dir, nproc, log)
            )
            records = summarise_results(json.loads((path / "results.json").read_text()))
            bad = [r for r in records if r["status"] != "ok"]
            outcome.update(
                status="diverged" if bad else "ok",
                state=state,
                records=records,
                message="; ".join(str(r["message"]) for r in bad) or None,
            )
        except Exception as exc:  # the run failed: record it, let the others go on
            outcome.update(message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    outcome["wall_seconds"] = meter.wall
    outcome["other_cores"] = meter.other_cores
    outcome["log"] = log.getvalue()
    return outcome


def _launch(run_config: dict[str, Any], run_dir: str, nproc: int, log: io.StringIO) -> tuple[Path, str]:
    """The run through ``localentropy train --nproc``: its config handed to the ranks as TOML."""
    from localentropy.experiments.training.launch import launch_table

    return launch_table(run_config, run_dir, nproc, log)


def _failed(message: str) -> dict[str, Any]:
    return {
        "status": "failed",
        "message": message,
        "state": None,
        "records": [],
        "traceback": None,
        "wall_seconds": None,
        "other_cores": None,
        "log": "",
    }


Job = tuple[str, dict[str, Any], str]  # run id, training config, run directory
Done = Callable[[str, dict[str, Any]], None]


Work = Callable[..., dict[str, Any]]  # run_one (config, directory[, nproc]), or tune_one for a tuning job


def _extra(nproc: int) -> tuple[int, ...]:
    """The ``nproc`` argument of run_one and tune_one when runs go through the launcher."""
    return (nproc,) if nproc > 1 else ()


def _execute_inline(jobs: list[Job], done: Done, work: Work = run_one, nproc: int = 1) -> None:
    for run, config, directory in jobs:
        done(run, work(config, directory, *_extra(nproc)))


def _execute_local(jobs: list[Job], workers: int, done: Done, work: Work = run_one, nproc: int = 1) -> None:
    context = multiprocessing.get_context("spawn")
    size = max(1, min(workers, len(jobs)))
    # a worker whose sweep is killed (SIGKILL: no chance to stop it) dies too, as does the resource tracker then
    pool = ProcessPoolExecutor(size, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),))
    futures = {pool.submit(work, config, directory, *_extra(nproc)): run for run, config, directory in jobs}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker process died (BrokenProcessPool) or could not unpickle
                    outcome = _failed(f"{type(exc).__name__}: {exc}")
                done(futures[future], outcome)
    except BaseException:  # ^C or SIGTERM: stop the workers now (their runs resume from their checkpoints)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _execute_ray(
    jobs: list[Job], workers: int | None, address: str | None, done: Done, work: Work = run_one, nproc: int = 1
) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"--executor ray needs Ray: pip install 'localentropy[{RAY_EXTRA}]' (or pip install 'ray>=2.40')"
        ) from exc
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers or None, **options)
        started = True
    pending: dict[Any, str] = {}
    try:
        task = ray.remote(work)
        cap = workers if workers else len(jobs)
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < cap:
                run, config, directory = queue.pop(0)
                cpus = int(config.get("threads", 1)) * nproc
                pending[task.options(num_cpus=cpus, max_retries=0).remote(config, directory, *_extra(nproc))] = run
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the worker died or the task could not run (ray.exceptions.RayError)
                    outcome = _failed(f"{type(exc).__name__}: {exc}")
                done(run, outcome)
    except BaseException:  # ^C or SIGTERM: cancel the tasks in flight (their runs resume from their checkpoints)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _outcome_from_run_dir(run_dir: Path) -> dict[str, Any] | None:
    try:
        records = summarise_results(json.loads((run_dir / "results.json").read_text()))
    except (OSError, json.JSONDecodeError, KeyError):
        return None
    bad = [r for r in records if r["status"] != "ok"]
    return {
        "status": "diverged" if bad else "ok",
        "message": "; ".join(str(r["message"]) for r in bad) or None,
        "state": "skip",
        "records": records,
        "traceback": None,
        "wall_seconds": None,
        "other_cores": None,
        "log": "",
    }


def default_out(config: SweepConfig) -> Path:
    return Path("runs") / config.name


def _one_line(run: str, outcome: dict[str, Any]) -> str:
    finals = [
        f"{r['label']} {100 * r['final']['test_error']:.2f} %"
        for r in outcome["records"]
        if r.get("final") and r["final"].get("test_error") is not None
    ]
    wall = outcome.get("wall_seconds")
    text = f"{run}: {outcome['status']}"
    if finals:
        text += " (test error " + ", ".join(finals) + ")"
    if outcome["status"] != "ok" and outcome.get("message"):
        text += f": {outcome['message'].splitlines()[0][:200]}"
    return text + (f" [{wall:.0f} s]" if wall is not None else "")


def run_sweep(
    config: SweepConfig | str | Path,
    out: str | Path | None = None,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    force: bool = False,
    progress: TextIO | None = None,
    tuning_from: str | Path | None = None,
    tuning_workers: int | None = None,
    quiet_wait: float = QUIET_WAIT,
) -> tuple[Path, str, dict[str, Any]]:
    """Run a sweep into a directory; returns (directory, "fresh" | "resume" | "retry" | "skip", results).

    ``executor``: "local" (a spawn ``ProcessPoolExecutor`` of ``workers`` processes, default 1), "ray" (tasks on
    ``ray.init(address=address)``, or on a local instance of ``workers`` CPUs), or "inline" (this process, one
    run after another: for debugging). Runs whose directory is complete are not redone; runs that failed before
    are retried (also when the sweep itself is complete). ``tuning_from``: another sweep's ``tuning`` folder whose
    searches are taken instead of rerun where they are the same job (same base, space, trials and tuning seeds):
    the same sweep on other evaluation seeds (``reproduce --fresh-seeds``) then trains at the values already chosen.
    ``tuning_workers``: how many searches run at once (default ``workers``): a sweep whose runs are timed one at a
    time can still search in parallel, since no trial's seconds are reported. ``quiet_wait``: before runs that go
    one at a time on local processes (their seconds can be timed alone), wait up to this many seconds until other
    processes are quiet (0: do not wait); the runs' timing record says how long it waited and how busy the machine
    was (:mod:`localentropy.experiments.sweeps.timing`).
    """
    if executor not in (*EXECUTORS, "inline"):
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    for name, value in (("workers", workers), ("tuning_workers", tuning_workers)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if not quiet_wait >= 0:
        raise ValueError(f"quiet_wait must be a non-negative number of seconds, got {quiet_wait}")
    config = config if isinstance(config, SweepConfig) else load_sweep_config(config)
    progress = progress if progress is not None else sys.stderr
    out_dir = RunDirectory(out if out is not None else default_out(config))
    out_dir.check_free()
    resolved = config.resolved()
    state = out_dir.prepare(resolved, force=force)
    try:  # this process holds the sweep directory's lock while its workers run
        tuning = (tuning_from, tuning_workers if tuning_workers is not None else workers)
        return _run_prepared(config, out_dir, state, executor, workers, address, progress, tuning, quiet_wait)
    finally:
        out_dir.release()


def _run_prepared(
    config: SweepConfig,
    out_dir: RunDirectory,
    state: str,
    executor: str,
    workers: int | None,
    address: str | None,
    progress: TextIO,
    tuning: tuple[str | Path | None, int | None] = (None, None),
    quiet_wait: float = 0.0,
) -> tuple[Path, str, dict[str, Any]]:
    """The sweep in its prepared directory; ``tuning``: (``tuning_from``, ``tuning_workers``) and ``quiet_wait`` of
    :func:`run_sweep`."""
    from localentropy.experiments.sweeps.report import write_sweep_report

    runs_dir = out_dir.path / "runs"
    todo = [run for run in config.runs if not (runs_dir / run.id / MARKER).is_file()]
    if state == "skip":
        if not todo:
            return out_dir.path, "skip", json.loads((out_dir.path / "results.json").read_text())
        (out_dir.path / MARKER).unlink(missing_ok=True)  # a complete sweep with failed runs: retry them
        state = "retry"
    total = len(config.runs)
    where = f"Ray at {address}" if executor == "ray" and address else executor
    tuning_from, tuning_workers = tuning
    if executor == "local" and config.nproc > 1:  # workers count processes: a run of nproc ranks takes nproc
        workers = max(1, (workers or 1) // config.nproc)
        tuning_workers = max(1, (tuning_workers or 1) // config.nproc)
        where += f", {config.nproc} processes per run"
    print(
        f"sweep {config.name}: {total} runs, {total - len(todo)} already complete, {len(todo)} to run "
        f"({where}, {workers or ('all' if executor == 'ray' else 1)} worker(s)) -> {out_dir.path}",
        file=progress,
        flush=True,
    )
    outcomes: dict[str, dict[str, Any]] = {}
    counter = itertools.count(total - len(todo) + 1)
    # the bar lives in this process: it moves as each run's result arrives, from a worker process or from Ray
    bar = Progress(progress, total, desc=f"sweep {config.name}", unit="run", done=total - len(todo))

    def done(run: str, outcome: dict[str, Any]) -> None:
        log = outcome.pop("log", "") or ""
        if outcome.get("traceback"):
            log += "\n" + outcome["traceback"]
        if log:
            atomic_write_bytes(out_dir.path / "logs" / f"{run}.log", log.encode())
        out_dir.save_record(run, outcome)
        outcomes[run] = outcome
        bar.advance()
        bar.line(f"[{next(counter)}/{total}] {_one_line(run, outcome)} ({bar.times()})")

    tuning = None
    if config.tuning is not None:
        tuning = _tune(config, out_dir, executor, tuning_workers, address, progress, tuning_from)
    chosen = {label: r["chosen"] for label, r in (tuning or {}).get("optimizers", {}).items() if r["chosen"]}
    jobs = [(run.id, with_chosen(run.config, chosen), str(runs_dir / run.id)) for run in todo]
    at_once = min(workers or 1, len(jobs)) if executor != "ray" else (workers or len(jobs))
    waited = None
    if jobs and executor == "local" and at_once == 1 and quiet_wait > 0:  # timed one at a time: start them alone
        waited = wait_until_quiet(quiet_wait)
        if waited >= 5:
            print(f"waited {waited:.0f} s for other processes to go quiet", file=progress, flush=True)
    load_start = load_average()
    with bar:
        _execute(jobs, executor, workers, address, done, nproc=config.nproc)
    results = collect_results(config, out_dir, outcomes)
    if tuning is not None:
        results["tuning"] = tuning
    if jobs:  # how the runs of this call were timed (a sweep that ran nothing keeps the record it had)
        other = [outcomes[run].get("other_cores") for run, _, _ in jobs if run in outcomes]
        results["timing"] = timing_record(at_once, load_start, load_average(), other, waited)
    elif (out_dir.path / "results.json").is_file():
        previous = json.loads((out_dir.path / "results.json").read_text()).get("timing")
        if previous is not None:
            results["timing"] = previous
    atomic_write_json(out_dir.path / "results.json", results)
    write_sweep_report(out_dir.path, results)
    out_dir.mark_complete()
    return out_dir.path, state, results


def _execute(
    jobs: list[Job],
    executor: str,
    workers: int | None,
    address: str | None,
    done: Done,
    work: Work = run_one,
    nproc: int = 1,
) -> None:
    if jobs and executor == "inline":
        _execute_inline(jobs, done, work, nproc)
    elif jobs and executor == "local":
        _execute_local(jobs, workers or 1, done, work, nproc)
    elif jobs:
        _execute_ray(jobs, workers, address, done, work, nproc)


def _tune(
    config: SweepConfig,
    out_dir: RunDirectory,
    executor: str,
    workers: int | None,
    address: str | None,
    progress: TextIO,
    tuning_from: str | Path | None = None,
) -> dict[str, Any]:
    """Each tuned optimizer's search, one job each (saved records are reused, and so are ``tuning_from``'s records
    of the same job); results.json's ``tuning``."""
    assert config.tuning is not None
    folder = out_dir.path / "tuning"
    jobs = tuning_jobs(config.base, config.tuning, config.spaces, config.nproc)
    keys = {label: job_key(payload) for label, payload, _ in jobs}
    objective = sweep_objective(config.base)
    records: dict[str, dict[str, Any]] = {}
    for label, _, name in jobs:
        if (folder / name).is_file():
            records[label] = json.loads((folder / name).read_text())
        elif tuning_from is not None and (Path(tuning_from) / name).is_file():
            record = json.loads((Path(tuning_from) / name).read_text())
            if record.get("job") == keys[label]:
                atomic_write_json(folder / name, record)
                records[label] = record
                print(f"tuning {label}: the same search as {Path(tuning_from) / name}, reused", file=progress)
    names = {label: name for label, _, name in jobs}

    def done(label: str, record: dict[str, Any]) -> None:
        if "history" not in record:  # the job failed (a worker died): the sweep cannot go on without its values
            raise RuntimeError(f"tuning {label!r} failed: {record.get('message')}")
        record = {**record, "job": keys[label]}
        atomic_write_json(folder / names[label], finite_or_none(record))
        records[label] = record
        reached = f"{objective.name} {objective.show(record['objective'] or 0)}"
        print(tuned_line(label, record, reached), file=progress, flush=True)

    todo = [(label, payload, str(folder)) for label, payload, _ in jobs if label not in records]
    if todo:
        print(
            f"tuning {len(todo)} optimizer(s) alike: {config.tuning.trials} trials each, "
            f"{config.tuning.seeds} tuning seed(s) per trial",
            file=progress,
            flush=True,
        )
    _execute(todo, executor, workers, address, done, tune_one, nproc=config.nproc)
    seeds = list(range(config.tuning.seed_offset, config.tuning.seed_offset + config.tuning.seeds))
    return {
        **config.tuning_dict(),
        "objective": objective.name,
        "tuning_seeds": seeds,
        "evaluation_seeds": sorted({int(run.config.get("seed", 0)) for run in config.runs}),
        "optimizers": {label: records[label] for label, _, _ in jobs},
    }


def collect_results(config: SweepConfig, out_dir: RunDirectory, outcomes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sweep's results.json: the axes and, per run, its overrides, status and per-optimizer summaries."""
    runs = []
    for run in config.runs:
        outcome = outcomes.get(run.id) or out_dir.load_record(run.id)
        run_dir = out_dir.path / "runs" / run.id
        if (run_dir / MARKER).is_file() and (outcome is None or outcome.get("status") == "failed"):
            outcome = _outcome_from_run_dir(run_dir)
        if outcome is None:
            outcome = _failed("no outcome recorded (the run never finished)")
        if run.id not in outcomes and outcome.get("status") != "failed":
            outcome = {**outcome, "state": "skip"}
        runs.append(
            {
                "id": run.id,
                "dir": f"runs/{run.id}",
                "overrides": run.overrides,
                "touched": run.touched,
                **{k: outcome.get(k) for k in ("status", "message", "state", "wall_seconds", "other_cores", "records")},
            }
        )
    statuses = [r["status"] for r in runs]
    return {
        "schema": SCHEMA,
        "name": config.name,
        "config": config.resolved(),
        "axes": [
            {"key": a.key, "path": None if a.path is None else format_path(a.path), "values": a.values}
            for a in config.axes
        ],
        "counts": {s: statuses.count(s) for s in ("ok", "diverged", "failed")},
        "meta": environment("cpu"),
        "runs": runs,
    }


# the config API, importable from here as before the split
__all__ = [
    "STAR",
    "SweepConfig",
    "collect_results",
    "load_sweep_config",
    "parse_path",
    "parse_sweep_config",
    "run_one",
    "run_sweep",
]
