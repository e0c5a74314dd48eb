"""The ``[[estimators]]`` table of comparison configs (``localentropy run``) and the rules an estimator's cost and
labels follow: a budget of gradient evaluations buys every sampler the same cost (:func:`steps_per_chain`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from localentropy.entropy.presets import ESTIMATOR_PRESETS, INNER_LOOP_PRESETS, RENAMED
from localentropy.experiments.core.config import (
    Problem,
    Table,
    as_integer,
    choice,
    got,
    integer,
    label_field,
    label_text,
    number,
    one_or_many,
    table,
    word_or_number,
)
from localentropy.experiments.core.labels import default_labels, lying_label
from localentropy.experiments.tuning.space import tunable_names, wrapped_sampler
from localentropy.samplers import available_samplers, sampler_class, sampler_hyperparameters

ESTIMATOR_KINDS = ("local-entropy", "smoothing")
PRESETS = ESTIMATOR_PRESETS
MAX_BUDGET = 10_000_000


class EstimatorConfig(Table):
    """``[[estimators]]``: one estimator compared; its kind narrows the fields it takes."""

    label: label_text() = label_field()
    kind: choice(ESTIMATOR_KINDS) = Field(
        "local-entropy",
        description="local-entropy: a sampler's chains estimate g(x) = gamma (x - <x'>); "
        "smoothing: the gradient of the Gaussian-smoothed loss.",
    )
    budgets: one_or_many(
        {"type": "integer", "minimum": 1, "maximum": MAX_BUDGET},
        "a positive integer or a non-empty list of them",
        lambda v: as_integer(v, 1, MAX_BUDGET),
        per_item=False,
    ) = Field(
        description="One record per budget: the gradient evaluations of one estimate, over all chains "
        "(local-entropy: at least 2 steps per chain after burn-in)."
    )
    sampler: choice(tuple(available_samplers())) | None = Field(
        None, description="Local-entropy: the inner sampler (required unless `preset`)."
    )
    hyperparameters: table() = Field(
        default_factory=dict,
        description="Local-entropy: the sampler's arguments (`localentropy samplers` lists "
        "them); not temperature, which comes from `temperature`.",
    )
    step_size_fraction: number(0.0, 1.0, low_open=True) | None = Field(
        None,
        description="Local-entropy, quadratic problems: the step size as a fraction of the stability limit "
        "2 / (lambda_max(A) + gamma); or hyperparameters.step_size.",
    )
    burn_in_fraction: number(0.0, 0.9) = Field(
        0.2, description="Local-entropy: the share of each chain's steps discarded."
    )
    averaging: word_or_number("uniform", 0.0, 1.0, low_open=True) = Field(
        "uniform",
        description="Local-entropy: uniform mean of the kept iterates, or alpha: mu <- (1 - alpha) mu + alpha x'.",
    )
    preset: (
        choice(
            PRESETS,
            {
                old: f"the estimator's {old!r} is now {new!r}; {old!r} names the optimizer's preset"
                for old, new in RENAMED.items()
            },
        )
        | None
    ) = Field(
        None,
        description="Local-entropy: an inner loop as published (SGLD at the temperature its noise scale "
        "stands for); not with sampler or averaging.",
    )
    noise_scale: number(0.0, low_open=True) | None = Field(
        None, description="Local-entropy with a preset: the noise scale eps (required then)."
    )
    sigma: word_or_number("matched", 0.0, None, low_open=True) = Field(
        "matched", description="Smoothing: the smoothing width; matched: sigma = sqrt(T / gamma)."
    )
    order: integer(0, 1) = Field(
        1, description="Smoothing: 1 averages gradients at x + sigma xi; 0 uses losses (Stein's identity)."
    )

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        common = {"label", "kind", "budgets"}
        smoothing = {"sigma", "order"}
        local_entropy = set(cls.keys()) - common - smoothing
        kind = data.get("kind", "local-entropy")
        if kind not in ESTIMATOR_KINDS:  # an unknown kind: only the fields of some kind can be checked
            return set(cls.keys())
        return common | (local_entropy if kind == "local-entropy" else smoothing)

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        """The rules between a local-entropy estimator's fields, reported even when another field is wrong."""
        if data.get("kind", "local-entropy") != "local-entropy":
            return []
        problems: list[Problem] = []
        hyper = data.get("hyperparameters") if isinstance(data.get("hyperparameters"), dict) else {}
        if "preset" in data:  # even a misspelt preset: its sampler and noise_scale rules apply
            if "noise_scale" not in data:
                problems.append((("noise_scale",), "missing (required)"))
            if "sampler" in data:
                problems.append(
                    (("sampler",), got(data["sampler"], "no sampler: a preset runs SGLD (remove one of the two)"))
                )
            if "averaging" in data:
                problems.append(
                    (("averaging",), got(data["averaging"], "no averaging: the preset sets it (remove one of the two)"))
                )
            # a preset builds SGLD from the step size alone: any other hyperparameter would be ignored
            problems += [
                (("hyperparameters", key), "unknown for a preset; allowed: step_size")
                for key in sorted(set(hyper) - {"step_size"})
            ]
        else:
            if "sampler" not in data:
                problems.append((("sampler",), "missing (required)"))
            if "noise_scale" in data:
                problems.append(
                    (("noise_scale",), got(data["noise_scale"], "no noise_scale without a preset (use temperature)"))
                )
        if "step_size_fraction" in data and "step_size" in hyper:
            problems.append(
                (("step_size_fraction",), got(data["step_size_fraction"], "either it or hyperparameters.step_size"))
            )
        sampler = data.get("sampler") if data.get("sampler") in available_samplers() else None
        inner = hyper.get("sampler")
        # a wrapper (cyclical) takes its step size in the wrapped sampler's table
        wrapped_step = (
            sampler is not None
            and sampler_class(sampler).wraps_sampler
            and isinstance(inner, dict)
            and "step_size" in inner
        )
        if "step_size_fraction" not in data and "step_size" not in hyper and not wrapped_step:
            problems.append(((), "needs hyperparameters.step_size or step_size_fraction"))
        return problems

    def check(self) -> list[Problem]:
        problems: list[Problem] = []
        if self.kind == "local-entropy":
            if self.preset is not None:
                self.sampler = INNER_LOOP_PRESETS[self.preset].sampler
            elif self.sampler is not None:
                # the temperature comes from the grid, and an exact sampler's potential from the problem
                given = {"temperature"} | ({"potential"} if sampler_class(self.sampler).needs_potential else set())
                accepted = set(sampler_hyperparameters(self.sampler)) - given
                problems += [
                    (
                        ("hyperparameters", key),
                        f"unknown for sampler {self.sampler!r}; allowed: "
                        f"{', '.join(sorted(accepted))} (temperature comes from the config's temperature)",
                    )
                    for key in sorted(set(self.hyperparameters) - accepted)
                ]
        if self.label and (self.kind != "local-entropy" or self.sampler is not None):
            used = samplers_used(self) if self.kind == "local-entropy" else set()
            runs = f"sampler {self.sampler!r}" if self.kind == "local-entropy" else "a smoothing estimator (no sampler)"
            reason = lying_label(self.label, used, available_samplers(), runs)
            if reason is not None:
                problems.append((("label",), reason))
        return problems


def gradients_per_step(config: EstimatorConfig) -> int:
    """Gradient evaluations per inner step of the estimator's sampler (MALA: 2), as the sampler class declares
    it; a wrapper's (cyclical) is its wrapped sampler's."""
    name = wrapped_sampler(config.sampler, config.hyperparameters) or config.sampler
    return sampler_class(name).gradients_per_step if name in available_samplers() else 1


def steps_per_chain(budget: int, chains: int, per_step: int) -> int:
    """The inner steps each chain takes on a budget of gradient evaluations over all chains: every sampler gets the
    same cost, a step of MALA (``per_step`` = 2, :func:`gradients_per_step`) counting twice."""
    return budget // (chains * per_step)


def samplers_used(config: EstimatorConfig) -> set[str]:
    """The samplers an estimator runs: its own and, for a wrapper (cyclical), the one it wraps."""
    used = {config.sampler} if config.sampler else set()
    wrapped = config.hyperparameters.get("sampler")
    if isinstance(wrapped, dict) and isinstance(wrapped.get("name"), str):
        used.add(wrapped["name"])
    return used


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
    return {
        "step_size_fraction": config.step_size_fraction,
        **config.hyperparameters,
        "burn_in_fraction": config.burn_in_fraction,
        "averaging": config.averaging,
        "noise_scale": config.noise_scale,
    }


def fill_default_labels(estimators: list[EstimatorConfig]) -> None:
    """Give every estimator without a label a unique one built from what it runs (and what sets it apart)."""
    unlabelled = [e for e in estimators if not e.label]
    taken = {e.label for e in estimators if e.label}
    names = default_labels([default_label_base(e) for e in unlabelled], [_label_settings(e) for e in unlabelled], taken)
    for estimator, name in zip(unlabelled, names, strict=True):
        estimator.label = name


def tuning_targets(
    estimators: list[EstimatorConfig], labels: list[str]
) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """The names each tuned estimator's space may search, and the sampler each runs."""
    specs = {e.label: e for e in estimators}
    names = {
        label: tunable_names(
            specs[label].sampler,
            wrapped_sampler(specs[label].sampler, specs[label].hyperparameters),
            preset=specs[label].preset is not None,
        )
        for label in labels
    }
    return names, {label: specs[label].sampler for label in labels}
