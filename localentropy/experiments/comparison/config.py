"""Comparison configs (``localentropy run``): TOML files read with the standard library, validated whole.

Every field is listed in docs/configuration.md (``localentropy configs schema``). A bad config raises
:class:`ConfigError` listing every problem at once, each with its field path, the value found and what is expected.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localentropy.entropy.presets import ESTIMATOR_PRESETS, INNER_LOOP_PRESETS, RENAMED
from localentropy.experiments.core.config import (
    MISSING,
    ConfigError,
    FieldReader,
    key_text,
    read_toml,
    type_name,
)
from localentropy.experiments.core.labels import default_labels, lying_label
from localentropy.experiments.tuning.space import (
    TuningConfig,
    check_names,
    parse_tuning,
    tunable_names,
    tuned_labels,
    wrapped_sampler,
)
from localentropy.samplers import available_samplers, sampler_class, sampler_hyperparameters

PROBLEM_KINDS = ("quadratic", "double-well", "sharp-wide", "python")
POINT_KINDS = ("random", "origin", "explicit")
ESTIMATOR_KINDS = ("local-entropy", "smoothing")
PRESETS = ESTIMATOR_PRESETS
MAX_QUADRATIC_DIM = 10_000  # A is a dense d x d matrix
FACTORY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


@dataclass
class ProblemConfig:
    kind: str
    dim: int
    condition: float = 10.0
    n_negative: int = 0
    seed: int = 0
    factory: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PointsConfig:
    kind: str = "random"
    count: int = 1
    scale: float = 1.0
    values: list[list[float]] = field(default_factory=list)


@dataclass
class EstimatorConfig:
    label: str
    kind: str
    budgets: list[int]
    sampler: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    step_size_fraction: float | None = None
    burn_in_fraction: float = 0.2
    averaging: str | float = "uniform"
    preset: str | None = None
    noise_scale: float | None = None
    sigma: float | str = "matched"
    order: int = 1


@dataclass
class RunConfig:
    name: str
    seed: int
    replicates: int
    chains: int
    gammas: list[float]
    temperatures: list[float]
    problem: ProblemConfig
    points: PointsConfig
    estimators: list[EstimatorConfig]
    keep_draws: bool = True
    ksd: bool = True
    threads: int = 1
    first_replicate: int = 0
    tuning: TuningConfig | None = None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        # left out at their defaults, so the runs recorded before these fields existed still match
        if not self.first_replicate:
            del data["first_replicate"]
        if self.tuning is None:
            del data["tuning"]
        else:
            data["tuning"] = self.tuning.as_dict()
        return data


def _problem(r: FieldReader, raw: Any) -> ProblemConfig:
    t = r.table(raw, "problem")
    kind = r.choice(r.get(t, "kind", "problem.kind"), "problem.kind", PROBLEM_KINDS) or "quadratic"
    allowed = {"kind", "dim"} | {  # a quadratic is built from its own fields: options would be ignored
        "quadratic": {"condition", "n_negative", "seed"}, "python": {"factory", "options"}
    }.get(kind, {"options"})  # fmt: skip
    r.unknown(t, allowed, "problem")
    max_dim = {"double-well": 2, "sharp-wide": 2, "quadratic": MAX_QUADRATIC_DIM}.get(kind)
    dim = r.integer(r.get(t, "dim", "problem.dim", 1 if kind != "quadratic" else MISSING), "problem.dim", 1, max_dim)
    config = ProblemConfig(kind=kind, dim=dim or 1, options=r.table(t.get("options", {}), "problem.options"))
    if kind == "quadratic":
        default_condition = 1.0 if dim == 1 else 10.0  # a 1-D quadratic has condition number 1
        config.condition = r.number(t.get("condition", default_condition), "problem.condition", 1.0) or 1.0
        if dim == 1 and config.condition != 1.0:
            r.problem("problem.condition", config.condition, "1 for a 1-D quadratic")
        config.n_negative = r.integer(t.get("n_negative", 0), "problem.n_negative", 0, dim) or 0
        config.seed = r.integer(t.get("seed", 0), "problem.seed", 0) or 0
    if kind == "python":
        factory = r.string(r.get(t, "factory", "problem.factory"), "problem.factory")
        if factory is not None and not FACTORY_PATTERN.fullmatch(factory):
            r.problem("problem.factory", factory, "'package.module:function' returning a Problem")
            factory = None
        config.factory = factory
    return config


def _points(r: FieldReader, raw: Any, dim: int) -> PointsConfig:
    t = r.table(raw, "points")
    kind = r.choice(t.get("kind", "random"), "points.kind", POINT_KINDS) or "random"
    r.unknown(t, {"kind", "count", "scale", "values"}, "points")
    config = PointsConfig(kind=kind)
    if kind == "random":
        config.count = r.integer(t.get("count", 1), "points.count", 1, 1000) or 1
        config.scale = r.number(t.get("scale", 1.0), "points.scale", 0.0) or 0.0
    if kind == "explicit":
        values = r.get(t, "values", "points.values")
        rows = values if isinstance(values, list) and values else None
        if rows is None:
            r.problem("points.values", values, f"a non-empty list of points, each a list of {dim} numbers")
        for i, row in enumerate(rows or []):
            if not isinstance(row, list) or len(row) != dim:
                r.problem(f"points.values[{i}]", row, f"a list of {dim} numbers (the problem's dim)")
                continue
            checked = [r.number(v, f"points.values[{i}][{j}]") for j, v in enumerate(row)]
            if all(v is not None for v in checked):
                config.values.append(checked)  # type: ignore[arg-type]
        config.count = len(config.values)
    return config


def _estimator(r: FieldReader, raw: Any, i: int, labels: set[str]) -> EstimatorConfig | None:
    path = f"estimators[{i}]"
    t = r.table(raw, path)
    chosen = r.choice(t.get("kind", "local-entropy"), f"{path}.kind", ESTIMATOR_KINDS)
    kind = chosen or "local-entropy"
    common = {"label", "kind", "budgets"}
    local_entropy = {"sampler", "hyperparameters", "step_size_fraction", "burn_in_fraction", "averaging", "preset",
                     "noise_scale"}  # fmt: skip
    smoothing = {"sigma", "order"}
    if chosen is None:  # an unknown kind: only the fields of some kind can be checked
        allowed = common | local_entropy | smoothing
    else:
        allowed = common | (local_entropy if kind == "local-entropy" else smoothing)
    r.unknown(t, allowed, path)
    label = ""  # left out: a default built from what runs, given in parse_config once every estimator is read
    if "label" in t:
        label = r.label(t["label"], f"{path}.label") or f"estimator{i}"
        if label in labels:
            r.problem(f"{path}.label", label, "a label not used by another estimator")
        labels.add(label)
    budgets_raw = r.get(t, "budgets", f"{path}.budgets")
    budgets_list = budgets_raw if isinstance(budgets_raw, list) else [budgets_raw]
    if not budgets_list:
        r.problem(f"{path}.budgets", budgets_raw, "a positive integer or a non-empty list of them")
    budgets = [r.integer(b, f"{path}.budgets", 1, 10_000_000) for b in budgets_list]
    config = EstimatorConfig(label=label, kind=kind, budgets=[b for b in budgets if b is not None])
    if chosen is None:
        return None
    if kind == "smoothing":
        sigma = t.get("sigma", "matched")
        config.sigma = sigma if sigma == "matched" else (r.number(sigma, f"{path}.sigma", 0.0, low_open=True) or 1.0)
        config.order = r.integer(t.get("order", 1), f"{path}.order", 0, 1) or 0
        _check_label(r, config, path)
        return config
    # the estimator's former name of a preset: say what it is called now
    if isinstance(t.get("preset"), str) and t["preset"] in RENAMED:
        r.problem(f"{path}.preset", t["preset"], f"one of {', '.join(map(repr, PRESETS))} (the estimator's "
                  f"{t['preset']!r} is now {RENAMED[t['preset']]!r}; {t['preset']!r} names the optimizer's preset)")
        config.preset = None
    else:
        config.preset = r.choice(t["preset"], f"{path}.preset", PRESETS) if "preset" in t else None
    if "preset" in t:  # even a misspelt preset: its sampler and noise_scale rules apply
        config.sampler = INNER_LOOP_PRESETS[config.preset].sampler if config.preset else "sgld"
        config.noise_scale = r.number(r.get(t, "noise_scale", f"{path}.noise_scale"), f"{path}.noise_scale", 0.0,
                                      low_open=True)  # fmt: skip
        if "sampler" in t:
            r.problem(f"{path}.sampler", t["sampler"], "no sampler: a preset runs SGLD (remove one of the two)")
        if "averaging" in t:
            r.problem(f"{path}.averaging", t["averaging"], "no averaging: the preset sets it (remove one of the two)")
    else:
        config.sampler = r.choice(r.get(t, "sampler", f"{path}.sampler"), f"{path}.sampler",
                                  tuple(available_samplers()))  # fmt: skip
        if "noise_scale" in t:
            r.problem(f"{path}.noise_scale", t["noise_scale"], "no noise_scale without a preset (use temperature)")
    config.hyperparameters = dict(r.table(t.get("hyperparameters", {}), f"{path}.hyperparameters"))
    if "preset" in t:  # a preset builds SGLD from the step size alone: any other hyperparameter would be ignored
        for key in sorted(set(config.hyperparameters) - {"step_size"}):
            r.problems.append(f"{path}.hyperparameters.{key_text(key)}: unknown for a preset; allowed: step_size")
    elif config.sampler is not None:
        # the temperature comes from the grid, and an exact sampler's potential from the problem
        given = {"temperature"} | ({"potential"} if sampler_class(config.sampler).needs_potential else set())
        accepted = set(sampler_hyperparameters(config.sampler)) - given
        for key in sorted(set(config.hyperparameters) - accepted):
            r.problems.append(
                f"{path}.hyperparameters.{key_text(key)}: unknown for sampler {config.sampler!r}; "
                f"allowed: {', '.join(sorted(accepted))} (temperature comes from the config's temperature)"
            )
    if "step_size_fraction" in t:
        config.step_size_fraction = r.number(t["step_size_fraction"], f"{path}.step_size_fraction", 0.0, 1.0,
                                             low_open=True)  # fmt: skip
        if "step_size" in config.hyperparameters:
            r.problem(f"{path}.step_size_fraction", t["step_size_fraction"], "either it or hyperparameters.step_size")
    elif "step_size" not in config.hyperparameters and not (
        config.sampler is not None
        and sampler_class(config.sampler).wraps_sampler
        and isinstance(config.hyperparameters.get("sampler"), dict)
        and "step_size" in config.hyperparameters["sampler"]
    ):
        # a wrapper (cyclical) takes its step size in the wrapped sampler's table
        r.problems.append(f"{path}: needs hyperparameters.step_size or step_size_fraction")
    config.burn_in_fraction = r.number(t.get("burn_in_fraction", 0.2), f"{path}.burn_in_fraction", 0.0, 0.9) or 0.0
    averaging = t.get("averaging", "uniform")
    if averaging != "uniform":
        averaging = r.number(averaging, f"{path}.averaging", 0.0, 1.0, low_open=True) or 1.0
    config.averaging = averaging
    _check_label(r, config, path)
    return config


def gradients_per_step(config: EstimatorConfig) -> int:
    """Gradient evaluations per inner step of the estimator's sampler (MALA: 2), so that a budget of gradient
    evaluations buys every sampler the same cost: budget // (chains * this) steps per chain."""
    names = [config.sampler, wrapped_sampler(config.sampler, config.hyperparameters)]
    counts = [getattr(sampler_class(n), "gradients_per_step", 1) for n in names if n in available_samplers()]
    return max([c for c in counts if isinstance(c, int)], default=1)  # a wrapper's count is its sampler's


def samplers_used(config: EstimatorConfig) -> set[str]:
    """The samplers an estimator runs: its own and, for a wrapper (cyclical), the one it wraps."""
    used = {config.sampler} if config.sampler else set()
    wrapped = config.hyperparameters.get("sampler")
    if isinstance(wrapped, dict) and isinstance(wrapped.get("name"), str):
        used.add(wrapped["name"])
    return used


def _check_label(r: FieldReader, config: EstimatorConfig, path: str) -> None:
    """A given label may not name a registered sampler the estimator does not run."""
    if not config.label or (config.kind == "local-entropy" and config.sampler is None):
        return  # no label to check, or the sampler itself is in error
    used = samplers_used(config) if config.kind == "local-entropy" else set()
    runs = (f"sampler {config.sampler!r}" if config.kind == "local-entropy" and config.sampler
            else "a smoothing estimator (no sampler)")  # fmt: skip
    reason = lying_label(config.label, used, available_samplers(), runs)
    if reason is not None:
        r.problems.append(f"{path}.label: {reason}")


def default_label_base(config: EstimatorConfig) -> str:
    """What an estimator runs, in a few words: its sampler, its preset, or its kind of smoothing."""
    if config.kind == "smoothing":
        return f"smoothing order {config.order}"
    if config.preset is not None:
        return f"preset {config.preset}"
    return config.sampler or config.kind


def _label_settings(config: EstimatorConfig) -> dict[str, Any]:
    if config.kind == "smoothing":
        return {"sigma": config.sigma}
    return {"step_size_fraction": config.step_size_fraction, **config.hyperparameters,
            "burn_in_fraction": config.burn_in_fraction, "averaging": config.averaging,
            "noise_scale": config.noise_scale}  # fmt: skip


def fill_default_labels(estimators: list[EstimatorConfig]) -> None:
    """Give every estimator without a label a unique one built from what it runs (and what sets it apart)."""
    unlabelled = [e for e in estimators if not e.label]
    taken = {e.label for e in estimators if e.label}
    names = default_labels([default_label_base(e) for e in unlabelled], [_label_settings(e) for e in unlabelled],
                           taken)  # fmt: skip
    for estimator, name in zip(unlabelled, names, strict=True):
        estimator.label = name


def tuning_targets(estimators: list[EstimatorConfig], labels: list[str]) -> tuple[dict[str, list[str]],
                                                                                 dict[str, str | None]]:  # fmt: skip
    """The names each tuned estimator's space may search, and the sampler each runs."""
    specs = {e.label: e for e in estimators}
    names = {label: tunable_names(specs[label].sampler, wrapped_sampler(specs[label].sampler,
                                                                        specs[label].hyperparameters),
                                  preset=specs[label].preset is not None) for label in labels}  # fmt: skip
    return names, {label: specs[label].sampler for label in labels}


def _check_tuning(r: FieldReader, tuning: TuningConfig, estimators: list[EstimatorConfig], gammas: list[float],
                  temperatures: list[float], chains: int) -> None:  # fmt: skip
    """Which estimators are tuned (all local-entropy ones by default), at which budget, over which names."""
    if len(gammas) != 1 or len(temperatures) != 1:
        r.problems.append(f"tuning: tunes at one gamma and one temperature; got {len(gammas)} gamma(s) and "
                          f"{len(temperatures)} temperature(s) (tune each in its own config)")  # fmt: skip
    tunable = [e.label for e in estimators if e.kind == "local-entropy" and e.sampler is not None]
    labels = tuned_labels(r, tuning.estimators, tunable, "tuning.estimators", "a local-entropy estimator of this "
                          "config (a smoothing estimator has nothing to tune)")  # fmt: skip
    tuning.estimators = labels
    names, samplers = tuning_targets(estimators, labels)
    check_names(r, tuning, names, samplers, "estimator")
    budgets = [set(e.budgets) for e in estimators if e.label in labels]
    if tuning.budget is None and budgets:
        shared = sorted(set.intersection(*budgets))
        if not shared:
            r.problems.append("tuning.budget: missing, and the tuned estimators share no budget; give the gradient "
                              "evaluations of one trial's estimate")  # fmt: skip
        else:
            tuning.budget = shared[(len(shared) - 1) // 2]  # the middle one: the chosen values serve every budget
    per_step = max((gradients_per_step(e) for e in estimators if e.label in labels), default=1)
    if tuning.budget is not None and tuning.budget // (chains * per_step) < 2:
        r.problem("tuning.budget", tuning.budget, f"at least 2 steps per chain (>= {2 * chains * per_step})")


def parse_config(data: dict[str, Any], *, name: str = "run", source: str | None = None) -> RunConfig:
    """Validate a config given as a dict (as read from TOML); raise ConfigError listing every problem."""
    r = FieldReader()
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a table of fields, got {type_name(data)}"], source)
    top = {"name", "seed", "replicates", "chains", "gamma", "temperature", "problem", "points", "estimators",
           "keep_draws", "ksd", "threads", "first_replicate", "tuning"}  # fmt: skip
    r.unknown(data, top, "")
    run_name = r.name(data.get("name", name), "name" if "name" in data else "name (the config file's stem)", "run")
    seed = r.integer(data.get("seed", 0), "seed", 0, 2**63 - 1) or 0
    replicates = r.integer(data.get("replicates", 10), "replicates", 2, 100_000) or 2
    first_replicate = r.integer(data.get("first_replicate", 0), "first_replicate", 0, 2**62) or 0
    chains = r.integer(data.get("chains", 4), "chains", 1, 100_000) or 1
    gammas = r.grid(r.get(data, "gamma", "gamma", 1.0), "gamma", 0.0, True)
    temperatures = r.grid(r.get(data, "temperature", "temperature", 1.0), "temperature", 0.0, True)
    problem = _problem(r, r.get(data, "problem", "problem", {}))
    points = _points(r, data.get("points", {}), problem.dim)
    raw_estimators = r.get(data, "estimators", "estimators")
    if not isinstance(raw_estimators, list) or not raw_estimators:
        r.problem("estimators", raw_estimators, "a non-empty array of [[estimators]] tables")
        raw_estimators = []
    labels: set[str] = set()
    indexed = [(i, e) for i, raw in enumerate(raw_estimators) if (e := _estimator(r, raw, i, labels)) is not None]
    estimators = [e for _, e in indexed]
    fill_default_labels(estimators)
    for e_index, est in indexed:
        if est.kind == "local-entropy":
            per_step = gradients_per_step(est)
            for b in est.budgets:
                n_steps = b // (chains * per_step)
                if n_steps < 2 or int(est.burn_in_fraction * n_steps) >= n_steps:
                    r.problem(f"estimators[{e_index}].budgets", b, "a budget of at least 2 steps per chain after "
                              f"burn-in (>= {2 * chains * per_step})")  # fmt: skip
    tuning = parse_tuning(r, data.get("tuning"), "comparison")
    if tuning is not None:
        _check_tuning(r, tuning, estimators, gammas, temperatures, chains)
    threads = r.integer(data.get("threads", 1), "threads", 1, 1024) or 1
    flags = {key: data.get(key, True) for key in ("keep_draws", "ksd")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            r.problem(key, value, "true or false")
    if r.problems:
        raise ConfigError(r.problems, source)
    return RunConfig(
        name=run_name, seed=seed, replicates=replicates, chains=chains, gammas=gammas, temperatures=temperatures,
        problem=problem, points=points, estimators=estimators, keep_draws=bool(flags["keep_draws"]),
        ksd=bool(flags["ksd"]), threads=threads, first_replicate=first_replicate, tuning=tuning,
    )  # fmt: skip


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML config; its name defaults to the file's stem."""
    return parse_config(read_toml(path), name=Path(path).stem, source=str(path))
