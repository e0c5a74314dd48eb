"""The search of one method's hyperparameters: a seeded Optuna study, run sequentially, in rounds.

Each trial evaluates the objective on ``units`` independent units (replicates of an estimate, or training seeds)
and its value is their mean; with ``pruner = "successive-halving"`` the running mean is reported after each unit
to Optuna's SuccessiveHalvingPruner, which stops trials that trail the others at the same number of units. A
trial whose objective is not finite (a diverged sampler, or a replicate the evaluation judged to have run away:
see :mod:`localentropy.experiments.comparison.tuned`) has diverged: it stops at that unit and scores +inf.

The ``trials`` are split into ``max_extensions + 1`` rounds. After each round but the last, a log-scaled range
whose best value so far lies in its outer tenth (:data:`EDGE`) is widened by ``extension_factor`` on that side
(never past the hyperparameter's hard limits); the next round searches the widened space, knowing the earlier
trials that fall inside it. A best value still at an edge after the last round is reported as "at edge". Every
method gets the same number of trials and the same units (so the same gradient evaluations) per trial.

Methods: ``tpe`` (Optuna's TPESampler, seeded), ``sobol`` (a scrambled Sobol sequence from scipy.stats.qmc, one
sequence continued across rounds) and ``grid`` (the product of evenly spaced levels per range, on the log scale
for log ranges, the smallest with at least the round's trials, in a seeded order). Same config, same seed: the
same trials, the same chosen values.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from localentropy.experiments.core.seeds import stable_seed
from localentropy.experiments.tuning.space import Dimension, Space, TuningConfig

EDGE = 0.1  # a best value in the outer tenth of its (log) range is "at the edge"
Evaluate = Callable[[dict[str, Any], int], tuple[float, int]]  # (values, unit) -> (objective, gradient evaluations)


def round_sizes(trials: int, rounds: int) -> list[int]:
    return [trials // rounds + (1 if i < trials % rounds else 0) for i in range(rounds)]


def _value(dim: Dimension, u: float) -> Any:
    """The value at ``u`` in [0, 1) of a dimension (on the log scale for a log range)."""
    if dim.choices is not None:
        return dim.choices[min(int(u * len(dim.choices)), len(dim.choices) - 1)]
    low, high = float(dim.low), float(dim.high)  # type: ignore[arg-type]
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if dim.log else low + u * (high - low)
    return float(min(max(value, low), high))  # exp(log(high)) may round above high


def _grid(space: Space, size: int, seed: int) -> list[dict[str, Any]]:
    names = list(space)
    floats = [n for n in names if space[n].choices is None]
    fixed = math.prod(len(space[n].choices or []) for n in names if space[n].choices is not None)
    levels = 1
    while fixed * levels ** len(floats) < size and floats:
        levels += 1
    axes = [
        [_value(space[n], i / (levels - 1) if levels > 1 else 0.5) for i in range(levels)]
        if space[n].choices is None
        else list(space[n].choices or [])
        for n in names
    ]
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes)]
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order[:size]]


def _inside(params: dict[str, Any], space: Space) -> bool:
    for name, dim in space.items():
        value = params.get(name)
        if dim.choices is not None:
            if value not in dim.choices:
                return False
        elif value is None or not dim.low <= value <= dim.high:  # type: ignore[operator]
            return False
    return set(params) == set(space)


def _distributions(space: Space) -> dict[str, Any]:
    import optuna

    return {
        n: optuna.distributions.CategoricalDistribution(d.choices)
        if d.choices is not None
        else optuna.distributions.FloatDistribution(d.low, d.high, log=d.log)
        for n, d in space.items()
    }  # type: ignore[arg-type]


def _edges(
    space: Space, params: dict[str, Any] | None, limits: dict[str, tuple[float | None, float | None]]
) -> list[dict[str, Any]]:
    """The ranges whose chosen value lies in their outer tenth: the optimum may lie beyond (unless at a limit)."""
    out = []
    for name, dim in space.items():
        position = dim.position(params[name]) if params else None
        if position is None or EDGE < position < 1 - EDGE:
            continue
        side = "low" if position <= EDGE else "high"
        bound = dim.low if side == "low" else dim.high
        limit = limits.get(name, (None, None))[0 if side == "low" else 1]
        out.append({"name": name, "side": side, "bound": bound, "hard_limit": limit is not None and bound == limit})
    return out


def _extend(
    space: Space, params: dict[str, Any], factor: float, limits: dict[str, tuple[float | None, float | None]]
) -> list[dict[str, Any]]:
    """Widen each log range whose best value is at its edge, by ``factor`` on that side, within its limits."""
    done = []
    for edge in _edges(space, params, limits):
        dim = space[edge["name"]]
        if not dim.log or edge["hard_limit"]:
            continue
        low_limit, high_limit = limits.get(edge["name"], (None, None))
        if edge["side"] == "low":
            new = dim.low / factor  # type: ignore[operator]
            dim.low = max(new, low_limit) if low_limit is not None and low_limit > 0 else new
        else:
            new = dim.high * factor  # type: ignore[operator]
            dim.high = min(new, high_limit) if high_limit is not None else new
        done.append({"name": edge["name"], "side": edge["side"], "low": dim.low, "high": dim.high})
    return done


class _Search:
    """One method's study: the trials run so far and the objective Optuna calls."""

    def __init__(self, evaluate: Evaluate, units: int, prune: bool) -> None:
        self.evaluate, self.units, self.prune = evaluate, units, prune
        self.history: list[dict[str, Any]] = []
        self.round = 0

    def objective(self, trial: Any, space: Space) -> float:
        import optuna

        params = {
            n: trial.suggest_categorical(n, d.choices)
            if d.choices is not None
            else trial.suggest_float(n, d.low, d.high, log=d.log)
            for n, d in space.items()
        }  # type: ignore[arg-type]
        values: list[float] = []
        evals, state = 0, "complete"
        for unit in range(self.units):
            value, spent = self.evaluate(params, unit)
            evals += int(spent)
            values.append(float(value))
            if not math.isfinite(values[-1]):
                state = "diverged"
                break
            trial.report(float(np.mean(values)), unit + 1)
            if self.prune and unit + 1 < self.units and trial.should_prune():
                state = "pruned"
                break
        mean = float(np.mean(values)) if state != "diverged" else math.inf
        self.history.append(
            {
                "number": len(self.history),
                "round": self.round,
                "params": params,
                "state": state,
                "objective": mean if math.isfinite(mean) else None,
                "units": len(values),
                "grad_evals": evals,
            }
        )
        if state == "pruned":
            raise optuna.TrialPruned()
        return mean

    def best(self) -> dict[str, Any] | None:
        complete = [t for t in self.history if t["state"] == "complete"]
        return min(complete, key=lambda t: (t["objective"], t["number"])) if complete else None


def search(
    space: Space,
    evaluate: Evaluate,
    config: TuningConfig,
    units: int,
    limits: dict[str, tuple[float | None, float | None]] | None = None,
) -> dict[str, Any]:
    """Search ``space`` for the values of lowest mean objective over ``units`` units; returns the tuning record:
    the space searched (after extensions) and the one given, the trials, gradient evaluations, chosen values,
    the objective they reached, the ranges at an edge, and every trial."""
    import optuna
    from scipy.stats import qmc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    limits = limits or {}
    initial = {n: d.as_dict() for n, d in space.items()}
    space = copy.deepcopy(space)
    rounds = config.max_extensions + 1
    run = _Search(evaluate, units, config.pruner == "successive-halving")
    sobol = (
        qmc.Sobol(d=max(len(space), 1), scramble=True, seed=stable_seed(config.seed, "sobol"))
        if config.method == "sobol"
        else None
    )
    extensions: list[dict[str, Any]] = []
    for run.round, size in enumerate(round_sizes(config.trials, rounds)):
        if size == 0:
            continue
        seed = stable_seed(config.seed, "tuning", config.method, run.round) % 2**32  # Optuna takes 32-bit seeds
        sampler = (
            optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, config.trials // 3))
            if config.method == "tpe"
            else optuna.samplers.RandomSampler(seed=seed)
        )
        pruner = (
            optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
            if run.prune
            else optuna.pruners.NopPruner()
        )
        study = optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)
        distributions = _distributions(space)
        for t in run.history:  # what the earlier rounds learnt, where it lies in this round's space
            if t["state"] != "pruned" and _inside(t["params"], space):
                value = t["objective"] if t["objective"] is not None else math.inf
                study.add_trial(optuna.trial.create_trial(params=t["params"], distributions=distributions, value=value))
        if sobol is not None:
            with warnings.catch_warnings():  # the balance of a Sobol sequence at other than 2^m points
                warnings.simplefilter("ignore", UserWarning)
                for u in sobol.random(size):
                    study.enqueue_trial({n: _value(d, float(x)) for (n, d), x in zip(space.items(), u, strict=False)})
        elif config.method == "grid":
            for params in _grid(space, size, seed):
                study.enqueue_trial(params)
        study.optimize(lambda trial: run.objective(trial, space), n_trials=size)
        best = run.best()
        if run.round < rounds - 1 and best is not None:
            extensions += [
                {"round": run.round, **e} for e in _extend(space, best["params"], config.extension_factor, limits)
            ]
    best = run.best()
    counts = {s: sum(t["state"] == s for t in run.history) for s in ("complete", "pruned", "diverged")}
    return {
        "space": {n: d.as_dict() for n, d in space.items()},
        "initial_space": initial,
        "trials": len(run.history),
        **counts,
        "units_per_trial": units,
        "grad_evals": sum(t["grad_evals"] for t in run.history),
        "grad_evals_per_trial": max((t["grad_evals"] for t in run.history if t["state"] == "complete"), default=None),
        "chosen": None if best is None else best["params"],
        "objective": None if best is None else best["objective"],
        "at_edge": _edges(space, None if best is None else best["params"], limits),
        "extensions": extensions,
        "history": run.history,
    }
