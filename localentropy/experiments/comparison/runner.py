"""``localentropy run``: compare estimators of the local-entropy and smoothed gradients against the truth."""

from __future__ import annotations

import copy
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor

from localentropy.diagnostics import chain_summary, estimator_quality, imq_ksd, to_datatree
from localentropy.entropy import LocalEntropyEstimator
from localentropy.entropy.problems import Problem
from localentropy.experiments.comparison import estimand, tuned
from localentropy.experiments.comparison.config import RunConfig, load_config
from localentropy.experiments.comparison.loading import load_run
from localentropy.experiments.comparison.plan import (
    Task,
    build_points,
    build_problem,
    local_entropy_estimator,
    plan,
    replicate_seed,
    smoothing_estimator,
    step_size_for,
)
from localentropy.experiments.comparison.results import (
    SCHEMA,
    SCHEMA_VERSION,
    Chains,
    EstimatorInfo,
    Meta,
    Metrics,
    Record,
    RecordKey,
    Results,
    Timing,
)
from localentropy.experiments.comparison.suite import SUITE_FILE, single_configs, suite_markdown, suite_summary
from localentropy.experiments.comparison.verdicts import comparison_verdicts
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.files import atomic_path, atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.progress import Progress
from localentropy.experiments.core.rundir import RunDirectory, environment, finite_or_none
from localentropy.samplers import SamplerDivergenceError, sampler_class

MAX_KEPT_DRAWS = 500  # per chain, in draws.nc
MAX_KSD_POINTS = 1000


def _draws_bytes(draws: Tensor) -> bytes:
    buffer = io.BytesIO()
    stride = max(1, math.ceil(draws.shape[1] / MAX_KEPT_DRAWS))
    np.save(buffer, draws[:, ::stride].reshape(draws.shape[0], -1, draws.shape[-1]).cpu().numpy())
    return buffer.getvalue()


def run_task(task: Task, problem: Problem, config: RunConfig) -> tuple[Record, Tensor | None]:
    """Run one record: R replicate estimates, their quality against the truth, chain diagnostics, KSD."""
    spec, x, gamma, temperature = task.spec, task.x, task.gamma, task.temperature
    if spec.kind == "smoothing":
        estimator: Any = smoothing_estimator(task, problem)
        sigma = estimator.sigma
        truth = problem.smoothed_grad(x, sigma)
        settings: dict[str, Any] = {"sigma": sigma, "order": spec.order}
        gibbs_cov = None
    else:
        estimator = local_entropy_estimator(task, problem, config.chains)
        truth = estimand.truth(config.estimand, problem, x, gamma, temperature)
        settings = {
            "sampler": repr(estimator.sampler),
            "n_steps": estimator.n_steps,
            "burn_in": estimator.burn_in,
            "averaging": estimator.averaging,
            "chains": config.chains,
            "preset": spec.preset,
        }
        if config.estimand == "llc":
            settings["truth"] = estimand.truth_text(problem, x, gamma, temperature)
        gibbs_cov = problem.gibbs_cov(gamma, temperature, x) if config.estimand == "gradient" else None
    record = Record(
        key=RecordKey(**task.key),
        status="ok",
        estimator=EstimatorInfo(kind=spec.kind, sampler=spec.sampler, settings=finite_or_none(settings)),
    )
    # a local-entropy budget is split over the chains; a smoothing budget is its n_samples, drawn as one block
    chains = config.chains if spec.kind == "local-entropy" else 1
    estimates, seconds, evals, first_draws, llcs = [], 0.0, 0, None, []
    start = time.perf_counter()
    for r in range(config.replicates):
        seed = replicate_seed(config.seed, task.key["point"], config.first_replicate + r)
        try:
            result = estimand.estimate(
                config.estimand, estimator, problem, x, chains, torch.Generator().manual_seed(seed)
            )
            finite, runaway = bool(torch.isfinite(result.grad).all()), None
        except SamplerDivergenceError as exc:
            finite, runaway = False, exc if config.estimand == "llc" else None  # the LLC's rule names its cause
        if not finite:
            replicate = config.first_replicate + r
            record.status = "diverged"
            record.error = (
                f"diverged in replicate {replicate}: {runaway}"
                if runaway is not None
                else divergence_message(task, problem, estimator, replicate, config.chains, seed)
            )
            break
        estimates.append(result.grad)
        llcs += [result.llc] if isinstance(result, estimand.LLCEstimate) else []
        seconds += result.seconds
        evals = result.grad_evals
        if r == 0 and spec.kind == "local-entropy":
            first_draws = result.draws
    timing = {"seconds_per_replicate": seconds / max(len(estimates), 1), "seconds_total": time.perf_counter() - start}
    record.timing = Timing.model_validate(finite_or_none(timing))
    if record.status != "ok":
        return record, None
    quality = estimator_quality(
        torch.stack(estimates),
        truth,
        grad_evals=evals,
        gamma=gamma if gibbs_cov is not None else None,
        gibbs_cov=gibbs_cov,
        independent_draws=spec.kind == "smoothing" and spec.order == 1,
    )
    metrics = quality.as_dict()
    metrics.pop("seconds")
    # JSON has no NaN: a non-finite number (e.g. R-hat of a single chain) is null, never a result
    record.metrics = Metrics.model_validate(finite_or_none(metrics))
    if first_draws is not None:
        if llcs:  # the LLC's own MCSE, and the chain diagnostics of the trace of L it averages
            metrics |= estimand.llc_metrics(llcs, float(truth[0]))
            record.metrics = Metrics.model_validate(finite_or_none(metrics))
            record.chains = Chains.model_validate(finite_or_none(estimand.llc_chains(llcs[0])))
        elif first_draws.shape[1] >= 4:
            record.chains = Chains.model_validate(finite_or_none(chain_summary(first_draws).as_dict()))
        if config.ksd:
            pooled = first_draws.reshape(-1, x.shape[-1])
            pooled = pooled[:: max(1, math.ceil(pooled.shape[0] / MAX_KSD_POINTS))]
            score = -(problem.grad(pooled) + gamma * (pooled - x)) / temperature
            record.ksd = finite_or_none(imq_ksd(pooled, score))
    return record, first_draws


def first_nonfinite_step(estimator: LocalEntropyEstimator, x: Tensor, chains: int, seed: int) -> int | None:
    """The first inner step (1-based) at which a chain left the finite range, by replaying the replicate.

    The replay uses the replicate's own generator seed and keeps every iterate (burn-in included), so it
    follows the same trajectory as the estimate that diverged.
    """
    probe = copy.copy(estimator)
    probe.burn_in, probe.keep_draws, probe.warm_start = 0, True, False
    try:
        draws = probe.estimate(x, chains, torch.Generator().manual_seed(seed)).draws
    except SamplerDivergenceError as exc:
        return exc.first_step
    if draws is None:
        return None
    finite = torch.isfinite(draws.reshape(draws.shape[0], draws.shape[1], -1)).all(-1).all(0)
    bad = torch.nonzero(~finite)
    return int(bad[0, 0]) + 1 if bad.numel() else None


def divergence_message(task: Task, problem: Problem, estimator: Any, replicate: int, chains: int, seed: int) -> str:
    """Why a record diverged: the replicate, the inner step, the sampler and the likely cause."""
    spec, gamma = task.spec, task.gamma
    if spec.kind == "smoothing":
        return (
            f"diverged in replicate {replicate}: the smoothing estimate is not finite (NaN or inf); likely "
            f"cause: the problem's gradient or loss overflows at x + sigma xi (sigma {estimator.sigma:g}): use a "
            "smaller sigma"
        )
    step = first_nonfinite_step(estimator, task.x, chains, seed)
    n = estimator.n_steps
    where = f"at inner step {step} of {n}" if step is not None else f"within {n} inner steps"
    step_size = step_size_for(spec, problem, gamma)
    wrapped = spec.hyperparameters.get("sampler")
    if step_size is None and sampler_class(spec.sampler or "").wraps_sampler and isinstance(wrapped, dict):
        step_size = wrapped.get("step_size")  # a wrapper (cyclical): the wrapped sampler's step size
    if isinstance(step_size, int | float) and hasattr(problem, "max_stable_step"):
        limit = problem.max_stable_step(gamma)
        relation = "at or above" if step_size >= limit else "below"
        cause = (
            f"step size {step_size:g} is {relation} the SGLD stability limit 2 / lambda_max(A + gamma I) = "
            f"{limit:.4g} of this quadratic at gamma {gamma:g}; use a smaller step size (step_size_fraction < 1)"
        )
    else:
        size = f" {step_size:g}" if isinstance(step_size, int | float) else ""
        cause = (
            f"the step size{size} is too large for the curvature of U(x') = f(x') + gamma/2 ||x' - x||^2 "
            "(SGLD needs step_size < 2 / (curvature + gamma)); use a smaller step size"
        )
    return (
        f"diverged in replicate {replicate}: the chains left the finite range (NaN or inf) {where} "
        f"of sampler {estimator.sampler!r}; likely cause: {cause}"
    )


def _progress_line(index: int, total: int, record: Record, resumed: bool) -> str:
    k, seconds = record.key, record.timing.seconds_total if record.timing is not None else None
    status = "resumed" if resumed or seconds is None else f"{seconds:.2f}s"
    mse, mcse, relative = record.metric("mse"), record.metric("mse_mcse"), record.metric("relative_mse")
    detail = str(record.error or record.status)
    if mse is not None:
        detail = f"MSE {mse:.3g} ± {mcse:.2g}" if mcse is not None else f"MSE {mse:.3g}"
        if not record.metric("truth_near_zero") and relative is not None:
            detail += f" (rel. {relative:.3g})"
    return (
        f"[{index}/{total}] {k.estimator} x{k.point} gamma={k.gamma:g} T={k.temperature:g} "
        f"budget={k.budget}: {detail} ({status})"
    )


def default_out(config: RunConfig) -> Path:
    return Path("runs") / config.name


def checked_plan(config: RunConfig, source: str | None = None) -> tuple[Problem, Tensor, list[Task]]:
    """The problem, the points and every record of a one-problem config, each estimator (and the tuning space's
    ends) built once: a config that passes runs. Problems raise :class:`ConfigError` naming ``source``."""
    try:
        problem = build_problem(config)
        points = build_points(config, problem.dim, problem)
        tasks = plan(config, problem, points)
        if config.tuning is not None:
            tuned.check(config, problem, points)
    except ConfigError as exc:
        raise ConfigError(exc.problems, exc.source or source) from None
    return problem, points, tasks


def run_comparison(
    config: RunConfig | str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: TextIO | None = None,
    tuning_from: str | Path | None = None,
) -> tuple[Path, str]:
    """Run a comparison config into a run directory; returns (directory, "fresh" | "resume" | "skip").

    ``tuning_from``: another run directory whose search is taken instead of rerun when it is this config's (the
    same config on other replicates, as ``reproduce --fresh-seeds`` runs it)."""
    source = None if isinstance(config, RunConfig) else str(config)
    config = config if isinstance(config, RunConfig) else load_config(config)
    if config.problems is not None:  # one comparison per problem, each in its own subdirectory
        return _run_suite(config, out, force=force, progress=progress, source=source, tuning_from=tuning_from)
    out_dir = RunDirectory(out if out is not None else default_out(config))
    problem, points, tasks = checked_plan(config, source)
    resolved = config.as_dict()
    state = out_dir.prepare(resolved, force=force)  # the one check of the directory, under its lock
    threads = torch.get_num_threads()
    try:
        if state == "skip":
            return out_dir.path, state
        progress = progress if progress is not None else sys.stderr
        torch.manual_seed(config.seed)
        # Test problems are small: extra threads only add synchronisation (100x slower on a loaded machine).
        torch.set_num_threads(config.threads)
        tuning = None
        if config.tuning is not None:  # the search first (saved: a resumed run reuses it), then the tuned plan
            tuning = out_dir.load_record("tuning") or _reused_search(tuning_from, config, len(points), progress)
            tuning = tuning or tuned.tune(config, problem, points, progress)
            out_dir.save_record("tuning", finite_or_none(tuning))
            config = tuned.tuned_config(config, tuning)
            tasks = plan(config, problem, points)
        _run_tasks(config, problem, tasks, out_dir, resolved, progress, tuning)
    finally:
        torch.set_num_threads(threads)
        out_dir.release()
    return out_dir.path, state


def _run_tasks(
    config: RunConfig,
    problem: Problem,
    tasks: list[Task],
    out_dir: RunDirectory,
    resolved: dict[str, Any],
    progress: TextIO,
    tuning: dict[str, Any] | None = None,
) -> None:
    records = []
    with Progress(progress, len(tasks), desc=f"run {config.name}", unit="record") as bar:
        for i, task in enumerate(tasks, 1):
            outcome = _run_task_once(config, problem, task, out_dir)
            records.append(outcome.record)
            bar.advance()
            bar.line(_progress_line(i, len(tasks), outcome.record, outcome.resumed))
    _finish_run(config, tasks, out_dir, resolved, records, tuning)


class Outcome(NamedTuple):
    """A task's record and whether it was resumed from the run directory rather than computed now."""

    record: Record
    resumed: bool


def _saved_record(out_dir: RunDirectory, task: Task) -> Record | None:
    """The record saved under the task's name, or None when there is none or it is not this task's (a torn, foreign
    or hand-edited file: redone)."""
    saved = out_dir.load_record(task.id)
    try:
        record = Record.model_validate(saved) if saved is not None else None
    except ValidationError:
        return None
    if record is None or record.key != RecordKey(**task.key) or record.status not in ("ok", "diverged"):
        return None
    return record


def _run_task_once(config: RunConfig, problem: Problem, task: Task, out_dir: RunDirectory) -> Outcome:
    """The per-record cache around :func:`run_task`: the saved record (resumed), or computed and saved now."""
    record = _saved_record(out_dir, task)
    if record is not None:
        return Outcome(record, True)
    record, draws = run_task(task, problem, config)
    if draws is not None and config.keep_draws:
        atomic_write_bytes(out_dir.records / f"{task.id}.npy", _draws_bytes(draws))
    out_dir.save_record(task.id, record.model_dump())
    return Outcome(record, False)


def _finish_run(
    config: RunConfig,
    tasks: list[Task],
    out_dir: RunDirectory,
    resolved: dict[str, Any],
    records: list[Record],
    tuning: dict[str, Any] | None = None,
) -> None:
    """results.json, draws.nc and the report from the records in hand; the verdicts are computed here, once."""
    # a runaway estimate (finite, near the float range) can overflow a derived number: stored as null, never as inf
    results = Results(
        schema=SCHEMA,
        schema_version=SCHEMA_VERSION,
        name=config.name,
        config=finite_or_none(resolved),
        meta=Meta.model_validate(finite_or_none({"seed": config.seed, **environment("cpu")})),
        records=records,
        verdicts=comparison_verdicts(records),
        tuning=finite_or_none(tuning),
    )
    atomic_write_json(out_dir.path / "results.json", results.dump())
    if config.keep_draws:
        write_draws(out_dir, tasks)
    from localentropy.experiments.comparison.report import render_report

    render_report([(out_dir.path, results)], out_dir.path)  # from the results in hand, not read back
    out_dir.mark_complete()


def write_draws(out_dir: RunDirectory, tasks: list[Task]) -> None:
    """Collect the saved first-replicate draws into one netCDF DataTree, one node per record."""
    import xarray as xr

    tree = xr.DataTree()
    for task in tasks:
        path = out_dir.records / f"{task.id}.npy"
        if path.is_file():
            node = to_datatree(np.load(path), attrs={k: str(v) for k, v in task.key.items()})
            tree[task.id] = node
    if not tree.children:
        return
    with atomic_path(out_dir.path / "draws.nc") as tmp:
        tree.to_netcdf(tmp, engine="h5netcdf")


def _reused_search(
    tuning_from: str | Path | None, config: RunConfig, n_points: int, progress: TextIO
) -> dict[str, Any] | None:
    """``tuning_from``'s saved search, if it is this config's (:func:`tuned.reused`)."""
    if tuning_from is None:
        return None
    path = RunDirectory(tuning_from).records / "tuning.json"
    record = tuned.reused(json.loads(path.read_text()) if path.is_file() else None, config, n_points)
    if record is not None:
        print(f"tuning: the same search as {path}, reused", file=progress, flush=True)
    return record


def _run_suite(
    config: RunConfig,
    out: str | Path | None,
    *,
    force: bool = False,
    progress: TextIO | None = None,
    source: str | None = None,
    tuning_from: str | Path | None = None,
) -> tuple[Path, str]:
    """Run every problem's comparison into ``out/<label>`` (:mod:`localentropy.experiments.comparison.suite`);
    returns (directory, "fresh" | "resume" | "skip")."""
    out_dir = RunDirectory(out if out is not None else default_out(config))
    singles = single_configs(config)
    for _, single in singles:  # every problem checked before anything runs
        checked_plan(single, source)
    state = out_dir.prepare(config.as_dict(), force=force)  # the one check of the directory, under its lock
    try:
        if state == "skip":
            return out_dir.path, state
        progress = progress if progress is not None else sys.stderr
        runs = []
        for label, single in singles:
            problem_from = Path(tuning_from) / label if tuning_from is not None else None
            path, _ = run_comparison(single, out_dir.path / label, progress=progress, tuning_from=problem_from)
            runs.append((label, load_run(path).dump()))  # a problem's run may have been skipped: read it back
        summary = suite_summary(config, runs)
        atomic_write_json(out_dir.path / SUITE_FILE, summary)
        atomic_write_bytes(out_dir.path / "report.md", suite_markdown(summary).encode())
        out_dir.mark_complete()
    finally:
        out_dir.release()
    return out_dir.path, state
