"""``[tuning]`` in a comparison: each estimator's step size and own hyperparameters searched alike before the run.

Every tuned estimator gets the same search (:mod:`localentropy.experiments.tuning.search`): the same number of
trials, each trial ``replicates`` estimates at the same gradient budget (``tuning.budget``, one of the config's
budgets: the chosen values then serve at every budget). The objective is the mean squared error against the
truth, which every comparison problem has (a Problem must give its Gibbs mean). The trials run on points other
than the reported ones (random points: fresh draws; fixed points of a quadratic: the same spectrum under another
rotation, problem seed + ``seed_offset``) and draw their replicates from the seeds of config seed +
``seed_offset``, apart from the evaluation's; both are recorded in results.json under ``tuning``.

Stability is scored where it matters: each replicate of a trial also runs at the estimator's largest budget
(when larger than ``tuning.budget``; its gradient evaluations are counted in the trial's), and the trial has
**diverged** (+inf, :mod:`localentropy.experiments.tuning.search`) when any replicate at either budget raises,
is not finite or runs away: a squared error above :data:`TUNING_RUNAWAY` x ||truth||^2. The reference is the
truth's scale, because a trial has no other estimator on its point to compare with: an estimator that barely
moves returns about 0, a relative squared error of about 1, so one of 100 (an error 10x the truth's norm) is
reached only by moving away from the truth, never by sampling noise of a chain that stays put. A pSGLD trial
whose mean squared error was 2.4e258 once counted as complete, and values tuned at budget 1600 alone ran away
at 6400.
"""

from __future__ import annotations

import copy
import math
from typing import Any, TextIO

import torch
from torch import Tensor

from localentropy.entropy.problems import Problem, Quadratic
from localentropy.experiments.comparison import estimand
from localentropy.experiments.comparison.config import RunConfig
from localentropy.experiments.comparison.estimator import EstimatorConfig, tuning_targets
from localentropy.experiments.comparison.plan import Task, local_entropy_estimator, replicate_seed, step_size_for
from localentropy.experiments.core.config import ConfigError, constructor_problem, key_text
from localentropy.experiments.core.files import json_digest
from localentropy.experiments.core.seeds import stable_seed
from localentropy.experiments.tuning.record import tuned_line
from localentropy.experiments.tuning.search import search
from localentropy.experiments.tuning.space import Space, check_names, default_space, hard_limits, wrapped_sampler
from localentropy.samplers import SamplerDivergenceError, sampler_class, sampler_hyperparameters

TUNING_RUNAWAY = 100.0  # a squared error above 100 x ||truth||^2 ran away


def ran_away(squared_error: float, truth_squared_norm: float, factor: float = TUNING_RUNAWAY) -> bool:
    """Not finite, or above ``factor`` x the truth's squared norm (where that is positive)."""
    if not math.isfinite(squared_error):
        return True
    return truth_squared_norm > 0 and squared_error > factor * truth_squared_norm


def tuned_specs(config: RunConfig) -> list[EstimatorConfig]:
    labels = config.tuning.estimators or [] if config.tuning else []
    return [e for e in config.estimators if e.label in labels]


def _center(spec: EstimatorConfig, problem: Problem, gamma: float) -> float | None:
    """The configured step size: the default space is a log range around it."""
    step = step_size_for(spec, problem, gamma)
    if step is None and spec.sampler and sampler_class(spec.sampler).wraps_sampler:
        inner = spec.hyperparameters.get("sampler")
        step = inner.get("step_size") if isinstance(inner, dict) else None
    return float(step) if isinstance(step, int | float) else None


def spaces(config: RunConfig, problem: Problem) -> dict[str, Space]:
    """The space each tuned estimator searches: its own (or its sampler's) from the config, else the default."""
    assert config.tuning is not None
    specs = tuned_specs(config)
    names, samplers = tuning_targets(config.estimators, [e.label for e in specs])
    given, _ = check_names(config.tuning, names, samplers, "estimator")  # checked when the config was read
    out = {}
    for spec in specs:
        wrapped = wrapped_sampler(spec.sampler, spec.hyperparameters)
        out[spec.label] = given.get(spec.label) or default_space(
            names[spec.label], wrapped or spec.sampler, _center(spec, problem, config.gammas[0])
        )
    return out


def with_values(spec: EstimatorConfig, values: dict[str, Any]) -> EstimatorConfig:
    """The estimator with the searched hyperparameters set (a wrapper's sampler's ones in its sampler table)."""
    new = copy.deepcopy(spec)
    own = set(sampler_hyperparameters(spec.sampler)) if spec.sampler else set()
    wraps = spec.sampler is not None and sampler_class(spec.sampler).wraps_sampler
    for name, value in values.items():
        if name == "step_size":
            new.step_size_fraction = None
        if wraps and name not in own:
            new.hyperparameters["sampler"] = {**new.hyperparameters["sampler"], name: value}
        else:
            new.hyperparameters[name] = value
    return new


def _corners(space: Space) -> list[dict[str, Any]]:
    low = {n: d.choices[0] if d.choices is not None else d.low for n, d in space.items()}
    high = {n: d.choices[-1] if d.choices is not None else d.high for n, d in space.items()}
    return [low, high]


def check(config: RunConfig, problem: Problem, points: Tensor) -> None:
    """Refuse, before anything runs, a space whose ends do not build the estimator."""
    tuning = config.tuning
    assert tuning is not None and tuning.budget is not None
    problems = []
    for label, space in spaces(config, problem).items():
        spec = next(e for e in config.estimators if e.label == label)
        key = label if label in tuning.space else (spec.sampler if spec.sampler in tuning.space else None)
        path = f"tuning.space.{key_text(key)}" if key else f"tuning (the default space of {label!r})"
        for values in _corners(space):
            task = Task(
                {"budget": tuning.budget},
                with_values(spec, values),
                points[0],
                config.gammas[0],
                config.temperatures[0],
            )
            try:
                local_entropy_estimator(task, problem, config.chains)
            except (TypeError, ValueError, ArithmeticError) as exc:
                problems.append(constructor_problem(path, exc, {n: f"{path}.{key_text(n)}" for n in space}))
                break
    if problems:
        raise ConfigError(problems)


def tuning_problem(config: RunConfig, problem: Problem, points: Tensor) -> tuple[Problem, Tensor, str]:
    """The problem and points the trials run on, apart from the reported ones, and how they differ."""
    assert config.tuning is not None
    if config.points.kind == "random":
        generator = torch.Generator().manual_seed(stable_seed(config.seed, "tuning points"))
        fresh = config.points.scale * torch.randn(points.shape, generator=generator, dtype=torch.float64)
        return problem, fresh, "fresh random points (the same count and scale as the reported ones)"
    if isinstance(problem, Quadratic) and config.problem.kind == "quadratic":
        p, seed = config.problem, config.problem.seed + config.tuning.seed_offset
        other = Quadratic.random(p.dim, p.condition, p.n_negative, seed)
        return other, points, f"the reported points on the quadratic of problem seed {seed} (another rotation)"
    return problem, points, "the reported points (fixed points of a problem without a seed): only the seeds differ"


def search_key(config: RunConfig) -> str:
    """The fingerprint of a config's search: everything but which replicates are evaluated (``replicates`` and
    ``first_replicate``), which the search never sees. Equal keys run the same search."""
    data = config.as_dict()
    for evaluated in ("replicates", "first_replicate"):
        data.pop(evaluated, None)
    return json_digest(data)


def evaluation_seeds(config: RunConfig, n_points: int) -> list[list[int]]:
    """The seeds of the replicates the evaluation runs, per point (never those of the search)."""
    first = config.first_replicate
    return [[replicate_seed(config.seed, p, first + r) for r in range(config.replicates)] for p in range(n_points)]


def reused(record: dict[str, Any] | None, config: RunConfig, n_points: int) -> dict[str, Any] | None:
    """Another run's search ``record`` when it is this config's search (the same :func:`search_key`: the run on
    other replicates that ``reproduce --fresh-seeds`` makes), with this run's evaluation seeds; else None."""
    if record is None or record.get("job") != search_key(config):
        return None
    return {**record, "evaluation_seeds": evaluation_seeds(config, n_points)}


def tune(config: RunConfig, problem: Problem, points: Tensor, progress: TextIO) -> dict[str, Any]:
    """Search every tuned estimator's space; returns results.json's ``tuning``."""
    tuning = config.tuning
    assert tuning is not None and tuning.budget is not None
    gamma, temperature = config.gammas[0], config.temperatures[0]
    trial_problem, trial_points, where = tuning_problem(config, problem, points)
    truths = [estimand.truth(config.estimand, trial_problem, x, gamma, temperature) for x in trial_points]
    seeds = [
        [replicate_seed(config.seed + tuning.seed_offset, p, r) for r in range(tuning.replicates)]
        for p in range(len(trial_points))
    ]
    estimators, searched = {}, spaces(config, problem)
    for spec in tuned_specs(config):
        space = searched[spec.label]

        budgets = tuple(dict.fromkeys((tuning.budget, max([tuning.budget, *spec.budgets]))))

        def evaluate(
            values: dict[str, Any], unit: int, spec: EstimatorConfig = spec, budgets: tuple[int, ...] = budgets
        ) -> tuple[float, int]:
            """The squared error of replicate ``unit``'s estimate at the tuning budget, averaged over the tuning
            points; +inf when the replicate diverged or ran away there or at the largest budget."""
            total, evals = 0.0, 0
            for p, x in enumerate(trial_points):
                for budget in budgets:
                    task = Task({"budget": budget}, with_values(spec, values), x, gamma, temperature)
                    try:
                        estimator = local_entropy_estimator(task, trial_problem, config.chains)
                        generator = torch.Generator().manual_seed(seeds[p][unit])
                        result = estimand.estimate(
                            config.estimand, estimator, trial_problem, x, config.chains, generator
                        )
                    except (SamplerDivergenceError, ValueError, ArithmeticError):
                        return math.inf, evals
                    evals += int(result.grad_evals)
                    error = float(((result.grad - truths[p]) ** 2).sum())
                    if ran_away(error, float((truths[p] ** 2).sum())):
                        return math.inf, evals
                    total += error if budget == tuning.budget else 0.0
            return total / len(trial_points), evals

        samplers = (spec.sampler, wrapped_sampler(spec.sampler, spec.hyperparameters))
        limits = {name: hard_limits(name, samplers) for name in space}
        record = search(space, evaluate, tuning, tuning.replicates, limits)
        estimators[spec.label] = record
        print(tuned_line(spec.label, record, f"MSE {record['objective'] or 0:.4g}"), file=progress, flush=True)
    return {
        "objective": "mse",
        "method": tuning.method,
        "trials": tuning.trials,
        "seed": tuning.seed,
        "pruner": tuning.pruner,
        "max_extensions": tuning.max_extensions,
        "budget": tuning.budget,
        "replicates": tuning.replicates,
        "chains": config.chains,
        "gamma": gamma,
        "temperature": temperature,
        "seed_offset": tuning.seed_offset,
        "points": where,
        "runaway": f"squared error above {TUNING_RUNAWAY:g} x ||truth||^2, or not finite, at the tuning budget or "
        "the estimator's largest (every replicate runs at both)",
        "point_values": trial_points.tolist(),
        "replicate_seeds": seeds,
        "evaluation_seeds": evaluation_seeds(config, len(points)),
        "estimators": estimators,
        "job": search_key(config),
    }


def tuned_config(config: RunConfig, tuning: dict[str, Any]) -> RunConfig:
    """The config the evaluation runs: each tuned estimator at its chosen values (configured ones if none finished)."""
    chosen = {label: record["chosen"] for label, record in tuning["estimators"].items() if record["chosen"]}
    estimators = [with_values(e, chosen[e.label]) if e.label in chosen else e for e in config.estimators]
    return config.model_copy(update={"estimators": estimators})
