"""The plan of a comparison run: the problem, the points and every (estimator, point, gamma, temperature,
budget) record, with each estimator built once up front so that a config that validates also runs."""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from localentropy.entropy import GaussianSmoothingEstimator, LocalEntropyEstimator
from localentropy.entropy.presets import inner_loop_settings
from localentropy.entropy.problems import Problem, Quadratic
from localentropy.entropy.problems.lowdim import DoubleWell, SharpWide
from localentropy.experiments.comparison.config import LLC_PROBLEM_KINDS, RunConfig
from localentropy.experiments.comparison.estimator import EstimatorConfig, gradients_per_step, steps_per_chain
from localentropy.experiments.core.config import ConfigError, constructor_problem, key_text, shown
from localentropy.experiments.core.files import slug
from localentropy.experiments.core.seeds import stable_seed
from localentropy.llc.problems import DeepLinearProblem, minimum
from localentropy.llc.toys import toy
from localentropy.samplers import make_sampler, sampler_class, sampler_hyperparameters


def record_id(key: dict[str, Any]) -> str:
    return slug(f"{key['estimator']}__p{key['point']}__g{key['gamma']:g}__T{key['temperature']:g}__b{key['budget']}")


def build_problem(config: RunConfig) -> Problem:
    p = config.problem
    try:
        if p.kind == "quadratic":
            return Quadratic.random(p.dim, p.condition, p.n_negative, p.seed)
        if p.kind == "double-well":
            return DoubleWell(dim=p.dim, **p.options)
        if p.kind == "sharp-wide":
            return SharpWide(dim=p.dim, **p.options)
        if p.kind in LLC_PROBLEM_KINDS:  # checked with the config: the toys take no options, widths and rank fit
            return DeepLinearProblem(p.widths, p.rank, p.seed) if p.kind == "deep-linear" else toy(p.kind)
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


def build_points(config: RunConfig, dim: int, problem: Problem | None = None) -> Tensor:
    """The points of ``[points]`` ([count, dim]); ``problem`` gives w* for ``kind = "minimum"``."""
    pts = config.points
    if pts.kind == "explicit":
        return torch.tensor(pts.values, dtype=torch.float64)
    if pts.kind == "origin":
        return torch.zeros(1, dim, dtype=torch.float64)
    if pts.kind == "minimum":
        try:
            return minimum(problem)[None]  # type: ignore[arg-type]
        except ValueError as exc:
            raise ConfigError([f"points.kind: {exc}"]) from None
    generator = torch.Generator().manual_seed(stable_seed(config.seed, "points"))
    return pts.scale * torch.randn(pts.count, dim, generator=generator, dtype=torch.float64)


def replicate_seed(config_seed: int, point: int, replicate: int) -> int:
    """Replicate r of every estimator at a point draws from one seed (common random numbers): never from the
    estimator's label or place, so that identical estimators give identical numbers and paired comparisons
    cancel the noise the estimators share."""
    return stable_seed(config_seed, "replicate", point, replicate)


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


def step_size_for(spec: EstimatorConfig, problem: Problem, gamma: float) -> float | None:
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


def local_entropy_estimator(task: Task, problem: Problem, chains: int) -> LocalEntropyEstimator:
    spec, gamma = task.spec, task.gamma
    n_steps = steps_per_chain(task.key["budget"], chains, gradients_per_step(spec))
    burn_in = int(spec.burn_in_fraction * n_steps)
    step_size = step_size_for(spec, problem, gamma)
    if spec.preset is not None:
        return LocalEntropyEstimator.from_preset(
            spec.preset,
            problem.grad,
            gamma,
            step_size=step_size,
            noise_scale=spec.noise_scale or 0.0,
            n_steps=n_steps,
            burn_in=burn_in,
        )
    cls = sampler_class(spec.sampler or "")
    accepted = sampler_hyperparameters(spec.sampler or "")
    hyper = dict(spec.hyperparameters)
    if cls.wraps_sampler:  # a wrapper (cyclical): the step size is the wrapped sampler's
        if isinstance(hyper.get("sampler"), dict) and step_size is not None:
            hyper["sampler"] = {**hyper["sampler"], "step_size": step_size}
    elif "step_size" in accepted:
        hyper["step_size"] = step_size
    if "total_steps" in accepted and "total_steps" not in hyper:  # schedules span the inner loop
        hyper["total_steps"] = n_steps
    if cls.needs_potential:  # exact samplers (MALA) need U itself
        hyper["potential"] = InnerPotential(problem, gamma, task.x)
    sampler = make_sampler(spec.sampler or "", **hyper)
    return LocalEntropyEstimator(
        problem.grad,
        gamma,
        sampler,
        n_steps,
        temperature=task.temperature,
        burn_in=burn_in,
        averaging=spec.averaging,
    )


def smoothing_estimator(task: Task, problem: Problem) -> GaussianSmoothingEstimator:
    """The Gaussian smoothing estimator of a record; sigma = sqrt(T / gamma) when the config says "matched"."""
    spec = task.spec
    sigma = math.sqrt(task.temperature / task.gamma) if spec.sigma == "matched" else float(spec.sigma)
    return GaussianSmoothingEstimator(
        sigma, task.key["budget"], grad_fn=problem.grad, loss_fn=problem.loss, order=spec.order
    )


def _estimator_fields(spec: EstimatorConfig, path: str) -> dict[str, str]:
    """The config fields that set each argument of the estimator (and its sampler) built from ``spec``."""
    fields = {key: f"{path}.hyperparameters.{key_text(key)}" for key in spec.hyperparameters}
    fields |= {
        "averaging": f"{path}.averaging",
        "burn_in": f"{path}.burn_in_fraction",
        "n_steps": f"{path}.budgets",
        "n_samples": f"{path}.budgets",
        "sigma": f"{path}.sigma",
        "order": f"{path}.order",
        "noise_scale": f"{path}.noise_scale",
        "gamma": "gamma",
        "temperature": "temperature",
    }
    if spec.step_size_fraction is not None:
        fields["step_size"] = f"{path}.step_size_fraction"
    return fields


def _check_estimators(config: RunConfig, problem: Problem, points: Tensor, tasks: list[Task]) -> list[str]:
    """Build every estimator the run will build (each estimator at each gamma, temperature and budget; the
    samplers included) so that a config that validates runs; the constructors' errors come back under the
    config field they name, once per field."""
    problems: list[str] = []
    built: set[tuple[Any, ...]] = set()
    for task in tasks:
        ei = next(i for i, spec in enumerate(config.estimators) if spec is task.spec)
        path, spec = f"estimators[{ei}]", task.spec
        which = (ei, task.gamma, task.temperature, task.key["budget"])
        if which in built or any(p.startswith(path) for p in problems):
            continue
        built.add(which)
        probe = Task(task.key, spec, points[0], task.gamma, task.temperature)
        try:
            if spec.kind == "smoothing":
                smoothing_estimator(probe, problem)
            else:
                local_entropy_estimator(probe, problem, config.chains)
        except ArithmeticError as exc:  # an integer beyond the float range: say where it was
            problems.append(f"{path}.hyperparameters: {exc} (in {shown(spec.hyperparameters)})")
        except (TypeError, ValueError) as exc:
            problems.append(constructor_problem(f"{path}.hyperparameters", exc, _estimator_fields(spec, path)))
    return problems


def plan(config: RunConfig, problem: Problem, points: Tensor) -> list[Task]:
    """Every (estimator, point, gamma, temperature, budget) to run, with problems checked up front: every
    estimator is built once before anything runs."""
    problems, tasks = [], []
    for gi, gamma in enumerate(config.gammas if config.estimand == "gradient" else []):
        try:
            problem.gibbs_cov(gamma, config.temperatures[0], points[0])
        except ValueError as exc:
            problems.append(f"gamma[{gi}] = {gamma:g}: {exc}")
    for ei, spec in enumerate(config.estimators):
        if spec.step_size_fraction is not None and not hasattr(problem, "max_stable_step"):
            problems.append(
                f"estimators[{ei}].step_size_fraction: needs a quadratic problem; give hyperparameters.step_size"
            )
    if problems:
        raise ConfigError(problems)
    for spec in config.estimators:
        temperatures = config.temperatures
        if spec.preset is not None:  # the preset's noise scale fixes the temperature
            preset_t = inner_loop_settings(spec.preset, spec.noise_scale or 0.0)["temperature"]
            temperatures = [float(f"{preset_t:.12g}")]  # 0.1**2 / 2 is 0.005000000000000001: group it with 5e-3
        for pi, x in enumerate(points):
            for gamma in config.gammas:
                for temperature in temperatures:
                    for budget in spec.budgets:
                        key = {
                            "estimator": spec.label,
                            "point": pi,
                            "gamma": gamma,
                            "temperature": temperature,
                            "budget": budget,
                        }
                        tasks.append(Task(key, spec, x, gamma, temperature))
    problems = _check_estimators(config, problem, points, tasks)  # hyperparameter values: refused now, not mid-run
    if problems:
        raise ConfigError(problems)
    seen: dict[str, dict[str, Any]] = {}
    for task in tasks:  # a record's file name must identify it: 1.0 and 1.0000001 both print as "1" with :g
        if task.id in seen and seen[task.id] != task.key:
            problems.append(
                f"records {seen[task.id]} and {task.key} share the file name {task.id!r}: make the "
                "labels, gammas, temperatures or budgets more distinct"
            )
        elif task.id in seen:
            problems.append(
                f"record {task.key} is listed twice: remove the repeated label, gamma, temperature or budget"
            )
        seen.setdefault(task.id, task.key)
    if problems:
        raise ConfigError(sorted(set(problems), key=problems.index))
    return tasks
