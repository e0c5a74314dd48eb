"""Comparison configs (``localentropy run``): pydantic models of the TOML tables, validated whole.

Every field is listed in the configuration reference (``localentropy docs configuration``), its JSON Schema is
``localentropy configs schema --json``. A bad config raises :class:`ConfigError` listing every problem at once,
each with its field path, the value found and what is expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from localentropy.experiments.comparison.estimator import (
    EstimatorConfig,
    fill_default_labels,
    gradients_per_step,
    steps_per_chain,
    tuning_targets,
)
from localentropy.experiments.core.config import (
    MAX_NAME,
    ConfigError,
    Problem,
    Table,
    array,
    as_number,
    choice,
    fail,
    flag,
    got,
    integer,
    key_text,
    nonempty_text,
    number,
    one_or_many,
    read_toml,
    run_name,
    table,
    validate_named,
)
from localentropy.experiments.tuning.space import (
    ComparisonTuning,
    TuningConfig,
    check_names,
    tuned_labels,
)

LLC_PROBLEM_KINDS = ("regular", "crossing", "quartic", "deep-linear")  # problems with an LLC answer
PROBLEM_KINDS = ("quadratic", "double-well", "sharp-wide", "python", *LLC_PROBLEM_KINDS)
POINT_KINDS = ("random", "origin", "explicit", "minimum")
ESTIMANDS = ("gradient", "llc")
MAX_QUADRATIC_DIM = 10_000  # A is a dense d x d matrix
FACTORY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


class ProblemConfig(Table):
    """``[problem]``: the test problem whose exact answer is known."""

    kind: choice(PROBLEM_KINDS) = Field(
        description="quadratic: closed-form truth; double-well, sharp-wide: truth by quadrature; python: your own "
        "Problem. LLC problems: regular (w1^2 + w2^2), crossing ((w1 w2)^2), quartic (w1^2 + w2^4), whose LLC is "
        "exact by quadrature, and deep-linear (||W_M ... W_1 - P*||_F^2, scored at w* against the shipped "
        "finite-nbeta MALA reference for its widths, rank, seed, nbeta and localization when there is one, else "
        "against Aoyagi's coefficient)."
    )
    label: run_name() | None = Field(
        None, description="In `[[problems]]`: the problem's name, which names its run's subdirectory (default: kind)."
    )
    dim: integer(1, MAX_QUADRATIC_DIM) = Field(
        1,
        description="The dimension: required for a quadratic (at most 10000); double-well and sharp-wide: 1 or 2; "
        "regular, crossing, quartic: 2; deep-linear: its number of weights (set from `widths`).",
    )
    widths: list[integer(1, 64)] = Field(
        default_factory=list,
        description="Deep-linear: the layer widths H_1 (input), ..., H_{M+1} (output), at least two (required then).",
    )
    rank: integer(0, 64) = Field(0, description="Deep-linear: the rank r of the true map (at most the least width).")
    condition: number(1.0) = Field(
        10.0, description="Quadratic: the ratio of the largest to the smallest eigenvalue magnitude (1 in 1-D)."
    )
    n_negative: integer(0) = Field(0, description="Quadratic: how many eigenvalues are negative (saddle directions).")
    seed: integer(0) = Field(
        0, description="Quadratic: the seed of its random rotation; deep-linear: the seed of its true parameter w*."
    )
    factory: nonempty_text() | None = Field(
        None, description="Python: `package.module:function` returning a Problem of dimension `dim` (required then)."
    )
    options: table() = Field(
        default_factory=dict, description="Keyword arguments of the problem's constructor (not for a quadratic)."
    )

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        # a quadratic is built from its own fields: options would be ignored
        kind = data.get("kind") if data.get("kind") in PROBLEM_KINDS else "quadratic"
        own = {
            "quadratic": {"condition", "n_negative", "seed"},
            "python": {"factory", "options"},
            "deep-linear": {"widths", "rank", "seed"},
            **{toy: set() for toy in LLC_PROBLEM_KINDS[:3]},  # the toys take no options
        }
        return {"kind", "dim", "label"} | own.get(kind, {"options"})

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        kind = data.get("kind", "quadratic")
        problems: list[Problem] = []
        if kind == "quadratic" and "dim" not in data:
            problems.append((("dim",), "missing (required)"))
        if kind == "python" and "factory" not in data:
            problems.append((("factory",), "missing (required)"))
        if kind == "deep-linear" and "widths" not in data:
            problems.append((("widths",), "missing (required)"))
        return problems

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.kind in LLC_PROBLEM_KINDS:
            problems += self._check_llc()
        if self.kind in ("double-well", "sharp-wide") and self.dim > 2:
            problems.append((("dim",), got(self.dim, "an integer in [1, 2]")))
        if self.kind == "quadratic":
            if "condition" not in self.model_fields_set and self.dim == 1:
                self.condition = 1.0  # a 1-D quadratic has condition number 1
            if self.dim == 1 and self.condition != 1.0:
                problems.append((("condition",), got(self.condition, "1 for a 1-D quadratic")))
            if self.n_negative > self.dim:
                problems.append((("n_negative",), got(self.n_negative, f"an integer in [0, {self.dim}]")))
        if self.factory is not None and not FACTORY_PATTERN.fullmatch(self.factory):
            problems.append((("factory",), got(self.factory, "'package.module:function' returning a Problem")))
        return problems

    def _check_llc(self) -> list[Problem]:
        """The toys are 2-D; a deep linear network's dim is its number of weights, set from its widths."""
        if self.kind != "deep-linear":
            expected = 2
        elif not self.widths:  # missing: said once, by precheck
            return []
        elif len(self.widths) < 2 or self.rank > min(self.widths):
            wrong = ("widths",) if len(self.widths) < 2 else ("rank",)
            allowed = "at least two widths" if len(self.widths) < 2 else f"an integer in [0, {min(self.widths)}]"
            return [(wrong, got(getattr(self, wrong[0]), allowed))]
        else:
            expected = sum(a * b for a, b in zip(self.widths, self.widths[1:], strict=False))
        if "dim" in self.model_fields_set and self.dim != expected:
            return [(("dim",), got(self.dim, f"{expected} (the {self.kind} problem's number of parameters)"))]
        self.dim = expected
        return []

    def as_dict(self) -> dict[str, Any]:
        """The resolved table: an LLC problem's own fields; the others' as before LLC problems existed (every field
        but label, widths and rank), so that runs recorded then still match."""
        data = self.model_dump()
        if self.kind in LLC_PROBLEM_KINDS:
            return {k: v for k, v in data.items() if k in self.allowed(data) and (k != "label" or v is not None)}
        del data["label"], data["widths"], data["rank"]
        return data


class PointsConfig(Table):
    """``[points]``: where the gradient is estimated."""

    kind: choice(POINT_KINDS) = Field(
        "random",
        description="random: x = scale * N(0, I); origin: x = 0; explicit: the listed `values`; minimum: the "
        "problem's w* (LLC problems: 0 for the toys, the true parameter of a deep linear network; the default "
        "with estimand = 'llc').",
    )
    count: integer(1, 1000) = Field(1, description="Random: how many points.")
    scale: number(0.0) = Field(1.0, description="Random: the scale of the points.")
    values: list[Any] = Field(
        default_factory=list, description="Explicit: the points, each a list of `dim` numbers (required then)."
    )

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        return [(("values",), "missing (required)")] if data.get("kind") == "explicit" and "values" not in data else []

    @field_validator("values", mode="before")
    @classmethod
    def _rows(cls, values: Any) -> Any:
        if not isinstance(values, list):
            fail([((), got(values, "a non-empty list of points, each a list of numbers"))])
        return values


class RunConfig(Table):
    """A comparison config: estimators of the local-entropy gradient compared against its exact value."""

    name: run_name() = Field(
        "run",
        description="The run's name; the run directory defaults to runs/<name> (default: the config file's stem).",
    )
    seed: integer(0, 2**63 - 1) = Field(0, description="Every random number of the run derives from it.")
    replicates: integer(2, 100_000) = Field(10, description="R, independent estimates per record.")
    chains: integer(1, 100_000) = Field(4, description="Inner chains per local-entropy estimate.")
    gammas: one_or_many(
        {"type": "number", "exclusiveMinimum": 0},
        "a number or a non-empty list of numbers",
        lambda v: as_number(v, 0.0, None, True),
    ) = Field([1.0], alias="gamma", description="The scope(s) gamma: a number or a list; every estimator runs at each.")
    temperatures: one_or_many(
        {"type": "number", "exclusiveMinimum": 0},
        "a number or a non-empty list of numbers",
        lambda v: as_number(v, 0.0, None, True),
    ) = Field([1.0], alias="temperature", description="The temperature(s) T of the Gibbs measure: a number or a list.")
    estimand: choice(ESTIMANDS) = Field(
        "gradient",
        description="gradient: the local-entropy gradient g(x) (or the smoothed gradient); llc: the local learning "
        "coefficient at each point w*, nbeta (E_p[L] - L(w*)) with p the local-entropy Gibbs measure at w*, i.e. "
        "nbeta = 1 / temperature and localization = gamma / temperature.",
    )
    problem: ProblemConfig | None = Field(
        None, description="The test problem: `[problem]` below (or several, as `[[problems]]`)."
    )
    problems: Annotated[list[ProblemConfig], array("a non-empty array of [[problems]] tables")] | None = Field(
        None,
        description="Several test problems, each a `[problem]` table with its own `label`: each runs as its own "
        "comparison (tuned on its own) into `<run>/<label>/`, the run's report.md gathering their verdicts.",
    )
    points: PointsConfig = Field(default_factory=dict, description="Where the gradient is estimated: `[points]` below.")
    estimators: Annotated[list[EstimatorConfig], array("a non-empty array of [[estimators]] tables")] = Field(
        description="The estimators compared: `[[estimators]]` below."
    )
    keep_draws: flag() = Field(True, description="Save the first replicate's inner draws and plot their traces.")
    ksd: flag() = Field(True, description="Compute the kernel Stein discrepancy of the first replicate's draws.")
    threads: integer(1, 1024) = Field(1, description="Torch threads during the run (restored afterwards).")
    first_replicate: integer(0, 2**62) = Field(
        0,
        description="The index of the first replicate (replicate seeds are hashed from the index): `reproduce "
        "--fresh-seeds` sets it to draw replicates never used before.",
    )
    tuning: ComparisonTuning | None = Field(
        None, description="Search each estimator's hyperparameters alike before the run: `[tuning]` below."
    )

    @model_validator(mode="before")
    @classmethod
    def _one_problem_by_default(cls, data: Any) -> Any:
        """No [problem] and no [[problems]]: the [problem] table is the one missing (its required fields named)."""
        if isinstance(data, dict) and "problem" not in data and "problems" not in data:
            return {**data, "problem": {}}
        return data

    @field_validator("points")
    @classmethod
    def _points(cls, points: PointsConfig, info: ValidationInfo) -> PointsConfig:
        if points.kind != "explicit" or info.data.get("problem") is None:
            return points
        dim = info.data["problem"].dim
        problems: list[Problem] = []
        if not points.values:
            problems.append(
                (("values",), got(points.values, f"a non-empty list of points, each a list of {dim} numbers"))
            )
        rows = []
        for i, row in enumerate(points.values):
            if not isinstance(row, list) or len(row) != dim:
                problems.append((("values", i), got(row, f"a list of {dim} numbers (the problem's dim)")))
                continue
            for j, v in enumerate(row):
                try:
                    as_number(v)
                except ValueError as exc:
                    problems.append((("values", i, j), got(v, str(exc))))
            rows.append([as_number(v) for v in row] if not problems else [])
        if problems:
            fail(problems)
        return points.model_copy(update={"values": rows, "count": len(rows)})

    @field_validator("estimators")
    @classmethod
    def _estimators(cls, estimators: list[EstimatorConfig], info: ValidationInfo) -> list[EstimatorConfig]:
        problems: list[Problem] = []
        labels: set[str] = set()
        for i, est in enumerate(estimators):
            if est.label and est.label in labels:
                problems.append(((i, "label"), got(est.label, "a label not used by another estimator")))
            labels.add(est.label)
        fill_default_labels(estimators)
        chains = info.data.get("chains")
        for i, est in enumerate(estimators):
            if est.kind != "local-entropy" or chains is None:
                continue
            per_step = gradients_per_step(est)
            for b in est.budgets:
                n_steps = steps_per_chain(b, chains, per_step)
                if n_steps < 2 or int(est.burn_in_fraction * n_steps) >= n_steps:
                    problems.append(
                        (
                            (i, "budgets"),
                            got(
                                b, f"a budget of at least 2 steps per chain after burn-in (>= {2 * chains * per_step})"
                            ),
                        )
                    )
        if problems:
            fail(problems)
        return estimators

    @field_validator("tuning")
    @classmethod
    def _tuning(cls, tuning: TuningConfig | None, info: ValidationInfo) -> TuningConfig | None:
        if tuning is None or not {"estimators", "gammas", "temperatures", "chains"} <= set(info.data):
            return tuning
        problems = check_tuning(
            tuning, info.data["estimators"], info.data["gammas"], info.data["temperatures"], info.data["chains"]
        )
        if problems:
            fail(problems)
        return tuning

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        if (self.problem is None) == (self.problems is None):
            problems.append(((), "needs either a [problem] table or a [[problems]] array, not both"))
        tables = (
            [(("problem",), self.problem)]
            if self.problem is not None
            else [(("problems", i), spec) for i, spec in enumerate(self.problems or [])]
        )
        labels: set[str] = set()
        for where, spec in tables:
            if self.problems is not None:
                spec.label = spec.label or spec.kind
                if spec.label in labels:
                    problems.append(((*where, "label"), got(spec.label, "a label not used by another problem")))
                labels.add(spec.label)
            if self.estimand == "llc" and spec.kind not in LLC_PROBLEM_KINDS:
                allowed = f"one of {', '.join(map(repr, LLC_PROBLEM_KINDS))} (a problem with an LLC answer)"
                problems.append(((*where, "kind"), got(spec.kind, allowed)))
            if self.estimand == "gradient" and spec.kind == "deep-linear":
                problems.append(
                    (
                        (*where, "kind"),
                        got(spec.kind, "a problem with an exact gradient (estimand 'llc' for a deep linear network)"),
                    )
                )
        if self.problems is not None and self.points.kind == "explicit":
            problems.append((("points", "kind"), got("explicit", "random, origin or minimum with [[problems]]")))
        if self.estimand == "llc":
            problems += self._check_llc()
        return problems

    def _check_llc(self) -> list[Problem]:
        """The LLC averages L over every chain's kept draws at the measure's temperature: a local-entropy
        estimator with uniform averaging and no preset (a preset sets the temperature from its noise scale)."""
        if "points" not in self.model_fields_set:
            self.points = PointsConfig(kind="minimum")
        problems: list[Problem] = []
        for i, est in enumerate(self.estimators):
            if est.kind != "local-entropy":
                problems.append(
                    (("estimators", i, "kind"), got(est.kind, "'local-entropy' (estimand 'llc' needs chains)"))
                )
            elif est.preset is not None:
                problems.append(
                    (
                        ("estimators", i, "preset"),
                        got(est.preset, "no preset with estimand 'llc' (give sampler and step size)"),
                    )
                )
            elif min(_kept_steps(b, self.chains, est) for b in est.budgets) < 4:
                expected = "budgets of at least 4 kept steps per chain (the LLC's ESS and R-hat need 4 draws)"
                problems.append((("estimators", i, "budgets"), got(est.budgets, expected)))
            elif est.averaging != "uniform":
                problems.append(
                    (
                        ("estimators", i, "averaging"),
                        got(est.averaging, "'uniform' (the LLC is the uniform mean of L over the kept draws)"),
                    )
                )
        return problems

    def as_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"tuning", "problem", "problems"})
        if self.problem is not None:
            data["problem"] = self.problem.as_dict()
        if self.problems is not None:
            data["problems"] = [p.as_dict() for p in self.problems]
        # left out at their defaults, so the runs recorded before these fields existed still match
        if self.estimand == "gradient":
            del data["estimand"]
        if not self.first_replicate:
            del data["first_replicate"]
        if self.tuning is not None:
            data["tuning"] = self.tuning.as_dict()
        return data


def _kept_steps(budget: int, chains: int, estimator: EstimatorConfig) -> int:
    """The steps each chain keeps after burn-in on a budget."""
    n_steps = steps_per_chain(budget, chains, gradients_per_step(estimator))
    return n_steps - int(estimator.burn_in_fraction * n_steps)


def check_tuning(
    tuning: TuningConfig, estimators: list[EstimatorConfig], gammas: list[float], temperatures: list[float], chains: int
) -> list[Problem]:
    """Which estimators are tuned (all local-entropy ones by default), at which budget, over which names."""
    problems: list[Problem] = []
    if len(gammas) != 1 or len(temperatures) != 1:
        problems.append(
            (
                (),
                f"tunes at one gamma and one temperature; got {len(gammas)} gamma(s) and "
                f"{len(temperatures)} temperature(s) (tune each in its own config)",
            )
        )
    tunable = [e.label for e in estimators if e.kind == "local-entropy" and e.sampler is not None]
    labels, wrong = tuned_labels(
        tuning.estimators,
        tunable,
        "estimators",
        "a local-entropy estimator of this config (a smoothing estimator has nothing to tune)",
    )
    problems += wrong
    tuning.estimators = labels
    names, samplers = tuning_targets(estimators, labels)
    problems += check_names(tuning, names, samplers, "estimator")[1]
    budgets = [set(e.budgets) for e in estimators if e.label in labels]
    if tuning.budget is None and budgets:
        shared = sorted(set.intersection(*budgets))
        if not shared:
            problems.append(
                (
                    ("budget",),
                    "missing, and the tuned estimators share no budget; give the gradient "
                    "evaluations of one trial's estimate",
                )
            )
        else:
            tuning.budget = shared[(len(shared) - 1) // 2]  # the middle one: the chosen values serve every budget
    per_step = max((gradients_per_step(e) for e in estimators if e.label in labels), default=1)
    if tuning.budget is not None and steps_per_chain(tuning.budget, chains, per_step) < 2:
        problems.append((("budget",), got(tuning.budget, f"at least 2 steps per chain (>= {2 * chains * per_step})")))
    return problems


def parse_config(data: dict[str, Any], *, name: str = "run", source: str | None = None) -> RunConfig:
    """Validate a config given as a dict (as read from TOML); raise ConfigError listing every problem."""
    return validate_named(RunConfig, data, name, source)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a TOML config; its name defaults to the file's stem."""
    return parse_config(read_toml(path), name=Path(path).stem, source=str(path))


__all__ = ["MAX_NAME", "ConfigError", "EstimatorConfig", "RunConfig", "key_text", "load_config", "parse_config"]
