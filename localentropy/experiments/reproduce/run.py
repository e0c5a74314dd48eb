"""``localentropy reproduce [--quick]``: rerun every experiment behind docs/findings.md, then regenerate it.

The findings answer the review's questions of Entropy-SGD from the registered steps, each an ordinary ``localentropy
run`` / ``sweep`` of a shipped config (``localentropy configs``) or a computation of this package (the ``atlas``
step is the samplers' accuracy atlas of docs/samplers.md, which the findings do not use), each in its own
directory under ``--out`` (default ``runs/reproduce``; ``runs/reproduce-quick`` with ``--quick``).
A step whose directory is complete is not run again, so an interrupted reproduction resumes where it stopped;
``--force`` reruns everything. The document (``--doc``, default ``<out>/findings.md``) and its figures and
numbers (``<doc stem>/``) are written only when every step has finished, each file atomically.

The steps are registered in :mod:`localentropy.experiments.reproduce.steps`; ``--steps a,b`` runs a subset (the
document is written once every step is complete). ``--quick`` runs the same steps smaller (fewer seeds,
replicates, budgets and epochs: each step's ``quick`` overrides, collected in :data:`QUICK`) into its own
directory, in under 10 minutes on 2 cores; the full run takes about 60, 80 with five fresh seeds per claim step
(:func:`expected_minutes` adds up the steps' measured minutes, registered with each step). The two never share a
directory: each refuses the other's.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.core.config import ConfigError, read_toml
from localentropy.experiments.core.files import atomic_path, atomic_write_json
from localentropy.experiments.core.lifeline import lifeline_command
from localentropy.experiments.core.progress import Progress
from localentropy.experiments.core.rundir import MARKER, RunDirectory, environment, git_commit
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.reproduce.fresh import fresh_config, fresh_dir, record_fresh
from localentropy.experiments.reproduce.steps import Step, registered_steps, select_steps
from localentropy.experiments.reproduce.steps import expected_minutes as expected_minutes  # the module's public name

SCHEMA = 1
STEPS: tuple[Step, ...] = registered_steps()
# What --quick changes, per step (declared with each step): fewer seeds / replicates / budgets / epochs.
QUICK: dict[str, dict[str, Any]] = {s.name: s.quick for s in STEPS}
SPEED_ARGS = ["--sections", "entropy,samplers"]


def find_configs(configs: str | Path | None = None) -> Path:
    """The folder of the steps' configs: ``--configs DIR`` when given, else the configs shipped with the package."""
    if configs is None:
        return shipped_dir()
    path = Path(configs).expanduser()
    if not path.is_dir():
        raise ConfigError([f"--configs {path}: not a directory"])
    return path.resolve()


# ------------------------------------------------------------------------------------------------ the plan


def _quick_tuning(data: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    """A smaller search (fewer trials, replicates or seeds per trial) for a config that tunes."""
    if "tuning" in data and "tuning" in quick:
        data["tuning"] = {**data["tuning"], **quick["tuning"]}
    return data


def _quick_run(data: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    data["replicates"] = min(int(data.get("replicates", 10)), quick["replicates"])
    for est in data.get("estimators", []):
        est["budgets"] = list(est["budgets"])[: quick["budgets"]]
    data |= quick.get("set", {})  # top-level fields (more chains: shorter chains on the same budget)
    return _quick_tuning(data, quick)


def _quick_sweep(data: dict[str, Any], quick: dict[str, Any]) -> dict[str, Any]:
    grid = data.setdefault("grid", {})
    if "seed" in grid:
        grid["seed"] = list(grid["seed"])[: quick["seeds"]]
    data["set"] = {**data.get("set", {}), **quick.get("set", {})}
    return _quick_tuning(data, quick)


def step_config(step: Step, configs: Path, quick: bool) -> dict[str, Any]:
    """The step's config as run: the file's table (with --quick, reduced) or the computation's arguments."""
    if step.kind in ("run", "sweep"):
        data = read_toml(configs / str(step.config))
        if quick:
            data = (_quick_run if step.kind == "run" else _quick_sweep)(copy.deepcopy(data), QUICK[step.name])
        return data
    if step.kind == "targets":
        return {"n_grid": QUICK[step.name]["n_grid"] if quick else 601}
    if step.kind == "accuracy":
        return dict(QUICK[step.name]) if quick else {}
    if step.kind == "atlas":
        return {"quick": False, **(QUICK[step.name] if quick else {})}
    if step.kind == "compute":  # the sweep config whose model is timed (a changed file reruns the measurement)
        return {"sweep": read_toml(configs / str(step.config))} | (dict(QUICK[step.name]) if quick else {})
    speed: dict[str, Any] = {"args": SPEED_ARGS + (QUICK[step.name]["args"] if quick else [])}
    return speed


def plan(configs: Path, quick: bool) -> dict[str, Any]:
    """Every step's resolved config: what the run directory records, and what a rerun must match."""
    return {
        "schema": SCHEMA,
        "mode": "quick" if quick else "full",
        "steps": [
            {
                "name": s.name,
                "kind": s.kind,
                "question": s.question,
                "file": s.config,
                "config": step_config(s, configs, quick),
            }
            for s in STEPS
        ],
    }


# ------------------------------------------------------------------------------------------------ running


def _changed(out: Path, resolved: dict[str, Any]) -> bool:
    """Whether ``out`` holds a run of another config (the step's file was edited since): then it is rerun."""
    return RunDirectory(out).holds_other_config(resolved)


def _run_step(
    step: Step,
    config: dict[str, Any],
    configs: Path,
    out: Path,
    workers: int,
    progress: TextIO,
    tuned_in: Path | None = None,
) -> str:
    """Run one step into ``out``; returns "fresh", "resume", "skip" or "rerun" (its config changed).

    ``tuned_in``: the original step's directory, for a fresh-seed rerun of a tuned sweep or comparison, whose
    searches (on the same tuning seeds) it reuses: the rerun evaluates the values the original chose, on seeds or
    replicates neither saw."""
    source = str(configs / str(step.config))
    if step.kind == "run":
        from localentropy.experiments.comparison.runner import run_comparison

        run_config = parse_config(copy.deepcopy(config), name=Path(source).stem, source=source)
        force = _changed(out, run_config.as_dict())
        state = run_comparison(run_config, out, force=force, progress=progress, tuning_from=tuned_in)[1]
        return "rerun" if force else state
    if step.kind == "sweep":
        from localentropy.experiments.sweeps.runner import parse_sweep_config, run_sweep
        from localentropy.experiments.sweeps.timing import QUIET_WAIT

        sweep = parse_sweep_config(copy.deepcopy(config), name=Path(source).stem, source=source)
        force = _changed(out, sweep.resolved())
        tuning_from = tuned_in / "tuning" if tuned_in is not None else None
        state = run_sweep(  # a timed step's runs one at a time, once the machine is quiet; its searches are not timed
            sweep,
            out,
            workers=1 if step.timed else workers,
            force=force,
            progress=progress,
            tuning_from=tuning_from,
            tuning_workers=workers,
            quiet_wait=QUIET_WAIT if step.timed else 0.0,
        )[1]
        return "rerun" if force else state
    with RunDirectory(out).locked() as run_dir:
        return _run_computation(step, config, run_dir, progress)


def _run_computation(step: Step, config: dict[str, Any], run_dir: RunDirectory, progress: TextIO) -> str:
    out = run_dir.path
    force = _changed(out, config)
    state = run_dir.prepare(config, force=force)
    if state == "skip":
        return state
    if step.kind == "targets":
        from localentropy.experiments.targets import compute_targets, plot_targets

        result = compute_targets(n_grid=config["n_grid"])
        atomic_write_json(out / "targets.json", result)
        plot_targets(result, out / "targets.png")
    elif step.kind == "accuracy":
        from localentropy.experiments.overhead import trajectory_accuracy

        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        atomic_write_json(out / "accuracy.json", trajectory_accuracy(**kwargs))
    elif step.kind == "atlas":
        from localentropy.experiments.atlas.run import run_atlas

        run_atlas(
            out,
            quick=config["quick"],
            samplers=config.get("samplers"),
            targets=config.get("targets"),
            progress=lambda line: print(f"  {line}", file=progress, flush=True),
        )
    elif step.kind == "compute":
        from localentropy.experiments.reproduce.scale import measure_sweep_compute

        atomic_write_json(out / "compute.json", measure_sweep_compute(**config))
    else:
        _run_speed(out, config["args"], progress)
    run_dir.mark_complete()
    return "rerun" if force else state


SPEED_MODULE = "localentropy.experiments.speed"  # the package's benchmark, so an installed wheel runs it too


def _run_speed(out: Path, args: list[str], progress: TextIO) -> None:
    # Its own process: the benchmark sets torch's thread count, and its output goes to speed.log. It imports this
    # very package (first on its path; the working directory is the step's, which holds no other copy).
    package_root = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with atomic_path(out / "speed.json") as tmp:  # the benchmark writes its JSON, moved into place if it succeeds
        args = [*args, "--json", str(tmp)]
        print("  " + " ".join(["-m", SPEED_MODULE, *args]), file=progress, flush=True)
        command = lifeline_command(SPEED_MODULE, args)  # it dies with this process, killed or not
        with open(out / "speed.log", "w") as log:
            done = subprocess.run(command, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the speed benchmark failed with status {done.returncode}; see {out / 'speed.log'}")


def reproduce(
    *,
    quick: bool = False,
    out: str | Path | None = None,
    doc: str | Path | None = None,
    workers: int | None = None,
    force: bool = False,
    configs: str | Path | None = None,
    progress: TextIO | None = None,
    steps: tuple[Step, ...] | str | None = None,
    runner: Callable[..., str] = _run_step,
    fresh_seeds: int | None = None,
    fresh_round: int = 0,
) -> tuple[Path | None, str]:
    """Run the steps (all, or a subset: Step objects or names ``"a,b"``), skipping complete ones, then write the
    findings once every registered step is complete; returns (document path, or None when steps remain, mode).

    With ``fresh_seeds`` K (:mod:`localentropy.experiments.reproduce.fresh`): the steps (default: every one) run as
    usual, then those with claims (or the ones asked for, each of which must have claims) again on K fresh seeds
    (at most ``QUICK_FRESH_CAP`` with ``quick``) into ``<out>/fresh/<step>``, and every claim is compared
    (``<out>/fresh/replication.md``). So one call from an empty directory writes the whole document."""
    from localentropy.experiments.reproduce.findings import write_findings
    from localentropy.experiments.reproduce.findings.replication import write_replication
    from localentropy.experiments.reproduce.fresh import QUICK_FRESH_CAP

    replicated_steps: tuple[Step, ...] = ()
    if fresh_seeds is not None:  # every step runs; those with claims (or the ones asked for) again on fresh seeds
        replicated_steps = _claim_steps(steps)
        steps = replicated_steps if steps is not None else None
        fresh_seeds = min(fresh_seeds, QUICK_FRESH_CAP) if quick else fresh_seeds
    steps = (
        tuple(steps) if isinstance(steps, tuple) and all(isinstance(s, Step) for s in steps) else (select_steps(steps))
    )
    progress = progress if progress is not None else sys.stderr
    configs_dir = find_configs(configs)
    mode = "quick" if quick else "full"
    out_dir = RunDirectory(out if out is not None else Path("runs") / ("reproduce-quick" if quick else "reproduce"))
    out_dir.check_free()
    doc_path = Path(doc) if doc is not None else out_dir.path / "findings.md"
    workers = workers if workers is not None else max(1, min(2, os.cpu_count() or 1))
    resolved = plan(configs_dir, quick)
    resolved["steps"] = [s for s in resolved["steps"] if s["name"] in {step.name for step in steps}]
    for entry in resolved["steps"]:  # every config is checked before anything runs
        _validate(entry, configs_dir)
    jobs = [
        _Job(
            step.name,
            step,
            entry["config"],
            out_dir.path / step.name,
            step.quick_minutes if quick else step.full_minutes,
            "timings",
        )
        for step, entry in zip(steps, resolved["steps"], strict=True)
    ]
    if fresh_seeds is not None:
        originals = [job for job in jobs if job.step in replicated_steps]
        jobs += _fresh_jobs(originals, fresh_seeds, fresh_round, configs_dir, out_dir.path)
    state = out_dir.prepare({"schema": SCHEMA, "mode": mode}, force=force)
    try:  # the reproduction directory stays locked while its steps run
        total = sum(job.minutes for job in jobs)
        print(
            f"reproduce ({mode}): {len(jobs)} steps, about {total:.0f} minutes on 2 cores -> {out_dir.path}",
            file=progress,
            flush=True,
        )
        records = {"timings": {}, "fresh_timings": {}}
        with Progress(progress, total, desc=f"reproduce ({mode})", weighted=True) as bar:
            for i, job in enumerate(jobs, 1):
                saved = out_dir.load_record(job.record) or {}
                step = job.step
                bar.line(
                    f"[{i}/{len(jobs)}] {job.name} ({step.question}, {step.kind}"
                    f"{', ' + str(step.config) if step.config else ''})"
                )
                start = time.perf_counter()
                step_state = runner(step, job.config, configs_dir, job.where, workers, progress, job.tuned_in)
                seconds = time.perf_counter() - start
                if job.fresh is not None:
                    record_fresh(job.where, job.fresh)
                ran = {  # the provenance of the step's numbers: how long, at which commit, when
                    "seconds": seconds,
                    "state": step_state,
                    "commit": git_commit(),
                    "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                records[job.record][step.name] = (
                    saved.get(step.name) if step_state == "skip" and (step.name in saved) else ran
                )
                out_dir.save_record(job.record, {**saved, **records[job.record]})
                bar.advance(job.minutes)
                bar.line(f"[{i}/{len(jobs)}] {job.name}: {step_state} in {seconds:.0f} s ({bar.times()})")
        timings = records["timings"]
        meta = {
            "mode": mode,
            "workers": workers,
            "timings": timings,
            "expected_minutes": total,
            "cpu_count": os.cpu_count(),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            **environment("cpu"),
        }
        if fresh_seeds is not None:
            replicated = write_replication(out_dir.path)
            print(
                f"replication on {fresh_seeds} fresh seeds: "
                + "; ".join(
                    f"{name}: {r['consistent']} of {r['total']} claims consistent" for name, r in replicated.items()
                )
                + (f" ({out_dir.path / 'fresh' / 'replication.md'})"),
                file=progress,
                flush=True,
            )
            meta["fresh"] = {"k": fresh_seeds, "round": fresh_round, "timings": records["fresh_timings"]}
        saved = out_dir.load_record("timings") or {}
        remaining = [s.name for s in STEPS if s not in steps and not (out_dir.path / s.name / MARKER).is_file()]
        if remaining:  # a subset ran: the document needs every step's results
            print(
                f"findings not written: step(s) {', '.join(remaining)} not complete in {out_dir.path} (run them with "
                f"--steps {','.join(remaining)}, or run every step)",
                file=progress,
                flush=True,
            )
            return None, mode
        if len(steps) < len(STEPS):  # the plan and timings of the whole reproduction, as a full call records them
            resolved = plan(configs_dir, quick)
            meta["timings"] = {s.name: saved.get(s.name) for s in STEPS} | timings
        atomic_write_json(out_dir.path / "reproduce.json", {"plan": resolved, "meta": meta})
        if state != "skip":
            out_dir.mark_complete()
        write_findings(out_dir.path, doc_path, resolved, meta)
        return doc_path, mode
    finally:
        out_dir.release()


@dataclass
class _Job:
    """One step to run: an original (timings in the ``timings`` record) or a fresh-seed rerun."""

    name: str
    step: Step
    config: dict[str, Any]
    where: Path
    minutes: float
    record: str
    fresh: dict[str, Any] | None = None
    tuned_in: Path | None = None  # a fresh rerun: the original's directory, whose tuning it reuses


def _claim_steps(steps: tuple[Step, ...] | str | None) -> tuple[Step, ...]:
    """The steps --fresh-seeds reruns: those asked for (each must carry claims), else every step with claims."""
    from localentropy.experiments.reproduce.findings.replication import claim_steps

    with_claims = claim_steps()
    chosen = select_steps(with_claims if steps is None else steps) if not isinstance(steps, tuple) else steps
    without = [s.name for s in chosen if s.name not in with_claims]
    if without:
        raise ConfigError(
            [
                f"--fresh-seeds: step(s) {', '.join(without)} state no claims to replicate; steps with "
                f"claims: {', '.join(with_claims)}"
            ]
        )
    return chosen


def _fresh_jobs(jobs: list[_Job], k: int, round_: int, configs: Path, out: Path) -> list[_Job]:
    """The fresh-seed rerun of each job, checked (seeds disjoint, config valid) before anything runs."""
    fresh = []
    for job in jobs:
        config, record = fresh_config(job.step, job.config, k, round_)
        _validate({"kind": job.step.kind, "file": job.step.config, "config": config}, configs)
        minutes = job.minutes * k / max(len(record["evaluation_seeds"]), 1)
        fresh.append(
            _Job(
                f"fresh/{job.name}",
                job.step,
                config,
                fresh_dir(out, job.step),
                minutes,
                "fresh_timings",
                record,
                job.where,
            )
        )
    return fresh


def _validate(entry: dict[str, Any], configs: Path) -> None:
    source = str(configs / str(entry["file"]))
    if entry["kind"] == "run":  # built as the run builds it: the problem, the points, every estimator
        from localentropy.experiments.comparison.runner import checked_plan
        from localentropy.experiments.comparison.suite import single_configs

        run_config = parse_config(copy.deepcopy(entry["config"]), source=source)
        for _, single in single_configs(run_config):  # each problem of a [[problems]] config
            checked_plan(single, source)
    elif entry["kind"] in ("sweep", "compute"):
        from localentropy.experiments.sweeps.runner import parse_sweep_config

        sweep = entry["config"]["sweep"] if entry["kind"] == "compute" else entry["config"]
        parse_sweep_config(copy.deepcopy(sweep), name=Path(source).stem, source=source)


def load_plan(out: str | Path) -> dict[str, Any]:
    """The plan and meta of a finished reproduction (``reproduce.json``)."""
    path = Path(out) / "reproduce.json"
    if not (Path(out) / MARKER).is_file() or not path.is_file():
        raise ConfigError([f"{out}: not a finished reproduction (no {MARKER} or reproduce.json)"])
    return json.loads(path.read_text())
