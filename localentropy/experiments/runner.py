"""``localentropy run``: compare estimators of the local-entropy and smoothed gradients against the truth."""

from __future__ import annotations

import copy
import importlib
import io
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import Tensor

from localentropy.diagnostics import chain_summary, estimator_quality, imq_ksd, to_datatree
from localentropy.entropy import GaussianSmoothingEstimator, LocalEntropyEstimator
from localentropy.entropy.problems import Problem, Quadratic
from localentropy.entropy.problems.lowdim import DoubleWell, SharpWide
from localentropy.experiments.config import ConfigError, EstimatorConfig, RunConfig, _shown, load_config
from localentropy.experiments.rundir import (
    RunDirectory,
    atomic_write_bytes,
    atomic_write_json,
    environment,
    finite_or_none,
    stable_seed,
)
from localentropy.samplers import SamplerDivergenceError, make_sampler, sampler_hyperparameters

SCHEMA = 1
MAX_KEPT_DRAWS = 500  # per chain, in draws.nc
MAX_KSD_POINTS = 1000


def record_id(key: dict[str, Any]) -> str:
    raw = f"{key['estimator']}__p{key['point']}__g{key['gamma']:g}__T{key['temperature']:g}__b{key['budget']}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", raw)


def build_problem(config: RunConfig) -> Problem:
    p = config.problem
    try:
        if p.kind == "quadratic":
            return Quadratic.random(p.dim, p.condition, p.n_negative, p.seed)
        if p.kind == "double-well":
            return DoubleWell(dim=p.dim, **p.options)
        if p.kind == "sharp-wide":
            return SharpWide(dim=p.dim, **p.options)
        module_name, _, attribute = (p.factory or "").partition(":")
        factory = getattr(importlib.import_module(module_name), attribute)
        problem = factory(**p.options)
    except (ImportError, AttributeError) as exc:
        raise ConfigError([f"problem.factory: cannot import {p.factory!r}: {exc}"]) from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # OverflowError: an integer beyond a float
        raise ConfigError([f"{'problem.options' if p.options or p.kind == 'python' else 'problem'}: {exc}"]) from None
    if not isinstance(problem, Problem) or problem.dim != p.dim:
        raise ConfigError([f"problem.factory: {p.factory!r} must return a Problem of dim {p.dim}, got {problem!r}"])
    return problem


def build_points(config: RunConfig, dim: int) -> Tensor:
    pts = config.points
    if pts.kind == "explicit":
        return torch.tensor(pts.values, dtype=torch.float64)
    if pts.kind == "origin":
        return torch.zeros(1, dim, dtype=torch.float64)
    generator = torch.Generator().manual_seed(stable_seed(config.seed, "points"))
    return pts.scale * torch.randn(pts.count, dim, generator=generator, dtype=torch.float64)


@dataclass
class Task:
    key: dict[str, Any]
    spec: EstimatorConfig
    x: Tensor
    gamma: float
    temperature: float

    @property
    def id(self) -> str:
        return record_id(self.key)


def _step_size(spec: EstimatorConfig, problem: Problem, gamma: float) -> float | None:
    if spec.step_size_fraction is None:
        return spec.hyperparameters.get("step_size")
    return spec.step_size_fraction * problem.max_stable_step(gamma)  # type: ignore[attr-defined]


class InnerPotential:
    """U(x') = f(x') + gamma/2 ||x' - x||^2, for exact samplers; its repr is stable (no memory address), so that
    the sampler's repr recorded in results.json is the same in every run."""

    def __init__(self, problem: Problem, gamma: float, x: Tensor) -> None:
        self.problem, self.gamma, self.x = problem, gamma, x

    def __call__(self, y: Tensor) -> Tensor:
        return self.problem.loss(y) + 0.5 * self.gamma * ((y - self.x) ** 2).sum(-1)

    def __repr__(self) -> str:
        return f"U(x') = f(x') + {self.gamma:g}/2 ||x' - x||^2"


def _local_entropy_estimator(task: Task, problem: Problem, chains: int) -> LocalEntropyEstimator:
    spec, gamma = task.spec, task.gamma
    n_steps = task.key["budget"] // chains
    burn_in = int(spec.burn_in_fraction * n_steps)
    step_size = _step_size(spec, problem, gamma)
    if spec.preset is not None:
        return LocalEntropyEstimator.from_preset(
            spec.preset, problem.grad, gamma, step_size=step_size, noise_scale=spec.noise_scale or 0.0,
            n_steps=n_steps, burn_in=burn_in,
        )  # fmt: skip
    accepted = sampler_hyperparameters(spec.sampler or "")
    hyper = dict(spec.hyperparameters)
    if "step_size" in accepted:
        hyper["step_size"] = step_size
    elif isinstance(hyper.get("sampler"), dict) and step_size is not None:  # a wrapper: the wrapped sampler's
        hyper["sampler"] = {**hyper["sampler"], "step_size": step_size}
    if "total_steps" in accepted and "total_steps" not in hyper:  # schedules span the inner loop
        hyper["total_steps"] = n_steps
    if "potential" in accepted:  # exact samplers (MALA) need U itself
        hyper["potential"] = InnerPotential(problem, gamma, task.x)
    sampler = make_sampler(spec.sampler or "", **hyper)
    return LocalEntropyEstimator(
        problem.grad, gamma, sampler, n_steps, temperature=task.temperature, burn_in=burn_in,
        averaging=spec.averaging,
    )  # fmt: skip


def plan(config: RunConfig, problem: Problem, points: Tensor) -> list[Task]:
    """Every (estimator, point, gamma, temperature, budget) to run, with problems checked up front."""
    problems, tasks = [], []
    for gi, gamma in enumerate(config.gammas):
        try:
            problem.gibbs_cov(gamma, config.temperatures[0], points[0])
        except ValueError as exc:
            problems.append(f"gamma[{gi}] = {gamma:g}: {exc}")
    for ei, spec in enumerate(config.estimators):
        if spec.step_size_fraction is not None and not hasattr(problem, "max_stable_step"):
            problems.append(
                f"estimators[{ei}].step_size_fraction: needs a quadratic problem; give hyperparameters.step_size"
            )
        elif spec.kind == "local-entropy" and not problems:  # hyperparameter values: refused now, not mid-run
            key = {"estimator": spec.label, "point": 0, "gamma": config.gammas[0],
                   "temperature": config.temperatures[0], "budget": spec.budgets[0]}  # fmt: skip
            try:
                _local_entropy_estimator(Task(key, spec, points[0], key["gamma"], key["temperature"]), problem,
                                         config.chains)  # fmt: skip
            except (TypeError, ValueError, ArithmeticError) as exc:
                which = f" (in {_shown(spec.hyperparameters)})" if isinstance(exc, ArithmeticError) else ""
                problems.append(f"estimators[{ei}].hyperparameters: {exc}{which}")
    if problems:
        raise ConfigError(problems)
    for spec in config.estimators:
        temperatures = config.temperatures
        if spec.preset is not None:  # the preset's noise scale fixes the temperature
            from localentropy.entropy.presets import inner_loop_settings

            preset_t = inner_loop_settings(spec.preset, spec.noise_scale or 0.0)["temperature"]
            temperatures = [float(f"{preset_t:.12g}")]  # 0.1**2 / 2 is 0.005000000000000001: group it with 5e-3
        for pi, x in enumerate(points):
            for gamma in config.gammas:
                for temperature in temperatures:
                    for budget in spec.budgets:
                        key = {"estimator": spec.label, "point": pi, "gamma": gamma, "temperature": temperature,
                               "budget": budget}  # fmt: skip
                        tasks.append(Task(key, spec, x, gamma, temperature))
    seen: dict[str, dict[str, Any]] = {}
    for task in tasks:  # a record's file name must identify it: 1.0 and 1.0000001 both print as "1" with :g
        if task.id in seen and seen[task.id] != task.key:
            problems.append(f"records {seen[task.id]} and {task.key} share the file name {task.id!r}: make the "
                            "labels, gammas, temperatures or budgets more distinct")  # fmt: skip
        elif task.id in seen:
            problems.append(f"record {task.key} is listed twice: remove the repeated label, gamma, temperature "
                            "or budget")  # fmt: skip
        seen.setdefault(task.id, task.key)
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return tasks


def _draws_bytes(draws: Tensor) -> bytes:
    buffer = io.BytesIO()
    stride = max(1, math.ceil(draws.shape[1] / MAX_KEPT_DRAWS))
    np.save(buffer, draws[:, ::stride].reshape(draws.shape[0], -1, draws.shape[-1]).cpu().numpy())
    return buffer.getvalue()


def run_task(task: Task, problem: Problem, config: RunConfig) -> tuple[dict[str, Any], Tensor | None]:
    """Run one record: R replicate estimates, their quality against the truth, chain diagnostics, KSD."""
    spec, x, gamma, temperature = task.spec, task.x, task.gamma, task.temperature
    record: dict[str, Any] = {
        "key": task.key, "status": "ok", "error": None, "metrics": None, "chains": None, "ksd": None,
        "estimator": {"kind": spec.kind, "sampler": spec.sampler, "settings": {}},
    }  # fmt: skip
    if spec.kind == "smoothing":
        sigma = math.sqrt(temperature / gamma) if spec.sigma == "matched" else float(spec.sigma)
        estimator: Any = GaussianSmoothingEstimator(
            sigma, task.key["budget"], grad_fn=problem.grad, loss_fn=problem.loss, order=spec.order
        )
        truth = problem.smoothed_grad(x, sigma)
        record["estimator"]["settings"] = {"sigma": sigma, "order": spec.order}
        gibbs_cov = None
    else:
        estimator = _local_entropy_estimator(task, problem, config.chains)
        truth = problem.local_entropy_grad(x, gamma, temperature)
        record["estimator"]["settings"] = {
            "sampler": repr(estimator.sampler), "n_steps": estimator.n_steps, "burn_in": estimator.burn_in,
            "averaging": estimator.averaging, "chains": config.chains, "preset": spec.preset,
        }  # fmt: skip
        gibbs_cov = problem.gibbs_cov(gamma, temperature, x)
    estimates, seconds, evals, first_draws = [], 0.0, 0, None
    start = time.perf_counter()
    for r in range(config.replicates):
        generator = torch.Generator().manual_seed(stable_seed(config.seed, task.id, r))
        try:
            if spec.kind == "smoothing":
                result = estimator.estimate(x, generator)
            else:
                result = estimator.estimate(x, config.chains, generator)
            finite = bool(torch.isfinite(result.grad).all())
        except SamplerDivergenceError:
            finite = False
        if not finite:
            record["status"] = "diverged"
            seed = stable_seed(config.seed, task.id, r)
            record["error"] = divergence_message(task, problem, estimator, r, config.chains, seed)
            break
        estimates.append(result.grad)
        seconds += result.seconds
        evals = result.grad_evals
        if r == 0 and spec.kind == "local-entropy":
            first_draws = result.draws
    record["timing"] = {
        "seconds_per_replicate": seconds / max(len(estimates), 1), "seconds_total": time.perf_counter() - start
    }  # fmt: skip
    if record["status"] != "ok":
        return record, None
    quality = estimator_quality(
        torch.stack(estimates), truth, grad_evals=evals, gamma=gamma if gibbs_cov is not None else None,
        gibbs_cov=gibbs_cov,
    )  # fmt: skip
    metrics = quality.as_dict()
    metrics.pop("seconds")
    record["metrics"] = metrics
    if first_draws is not None:
        if first_draws.shape[1] >= 4:
            record["chains"] = chain_summary(first_draws).as_dict()
        if config.ksd:
            pooled = first_draws.reshape(-1, x.shape[-1])
            pooled = pooled[:: max(1, math.ceil(pooled.shape[0] / MAX_KSD_POINTS))]
            score = -(problem.grad(pooled) + gamma * (pooled - x)) / temperature
            record["ksd"] = imq_ksd(pooled, score)
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
        return (f"diverged in replicate {replicate}: the smoothing estimate is not finite (NaN or inf); likely "
                f"cause: the problem's gradient or loss overflows at x + sigma xi (sigma {estimator.sigma:g}): use a "
                "smaller sigma")  # fmt: skip
    step = first_nonfinite_step(estimator, task.x, chains, seed)
    n = estimator.n_steps
    where = f"at inner step {step} of {n}" if step is not None else f"within {n} inner steps"
    step_size = _step_size(spec, problem, gamma)
    wrapped = spec.hyperparameters.get("sampler")
    if step_size is None and isinstance(wrapped, dict):  # a wrapper (cyclical): the wrapped sampler's step size
        step_size = wrapped.get("step_size")
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
    return (f"diverged in replicate {replicate}: the chains left the finite range (NaN or inf) {where} "
            f"of sampler {estimator.sampler!r}; likely cause: {cause}")  # fmt: skip


def _progress(out: TextIO, index: int, total: int, task: Task, record: dict[str, Any], resumed: bool) -> None:
    k = task.key
    status = "resumed" if resumed else f"{record['timing']['seconds_total']:.2f}s"
    mse = record["metrics"]["relative_mse"] if record.get("metrics") else None
    detail = f"rel. MSE {mse:.3g}" if mse is not None else str(record.get("error") or record["status"])
    print(
        f"[{index}/{total}] {k['estimator']} x{k['point']} gamma={k['gamma']:g} T={k['temperature']:g} "
        f"budget={k['budget']}: {detail} ({status})",
        file=out,
        flush=True,
    )


def default_out(config: RunConfig) -> Path:
    return Path("runs") / config.name


def run_comparison(
    config: RunConfig | str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: TextIO | None = None,
) -> tuple[Path, str]:
    """Run a comparison config into a run directory; returns (directory, "fresh" | "resume" | "skip")."""
    source = None if isinstance(config, RunConfig) else str(config)
    config = config if isinstance(config, RunConfig) else load_config(config)
    out_dir = RunDirectory(out if out is not None else default_out(config))
    try:
        problem = build_problem(config)
        points = build_points(config, problem.dim)
        tasks = plan(config, problem, points)
    except ConfigError as exc:
        raise ConfigError(exc.problems, exc.source or source) from None
    resolved = config.as_dict()
    state = out_dir.prepare(resolved, force=force)
    if state == "skip":
        return out_dir.path, state
    progress = progress if progress is not None else sys.stderr
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    # Test problems are small: extra threads only add synchronisation (100x slower on a loaded machine).
    torch.set_num_threads(config.threads)
    try:
        _run_tasks(config, problem, tasks, out_dir, resolved, progress)
    finally:
        torch.set_num_threads(threads)
    return out_dir.path, state


def _run_tasks(
    config: RunConfig, problem: Problem, tasks: list[Task], out_dir: RunDirectory, resolved: dict[str, Any],
    progress: TextIO,
) -> None:  # fmt: skip
    records = []
    for i, task in enumerate(tasks, 1):
        record = out_dir.load_record(task.id)
        if record is not None and (record.get("key") != task.key or record.get("status") not in ("ok", "diverged")):
            record = None  # not this record's (a foreign or hand-edited file under its name): redo it
        resumed = record is not None
        if record is None:
            record, draws = run_task(task, problem, config)
            if draws is not None and config.keep_draws:
                atomic_write_bytes(out_dir.records / f"{task.id}.npy", _draws_bytes(draws))
            record = finite_or_none(record)
            out_dir.save_record(task.id, record)
        records.append(record)
        _progress(progress, i, len(tasks), task, record, resumed)
    meta = {"seed": config.seed, **environment("cpu")}
    results = {"schema": SCHEMA, "name": config.name, "config": resolved, "meta": meta, "records": records}
    atomic_write_json(out_dir.path / "results.json", results)
    if config.keep_draws:
        write_draws(out_dir, tasks)
    from localentropy.experiments.report import write_report

    write_report([out_dir.path], out_dir.path)
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
    tmp = out_dir.path / ".draws.nc.tmp"
    tree.to_netcdf(tmp, engine="h5netcdf")
    tmp.replace(out_dir.path / "draws.nc")
