"""Inner-loop conventions of Entropy-SGD as published, defined once: the estimator, the optimizer, the configs and
the docs all read :data:`INNER_LOOP_PRESETS`.

Each runs a sampler with step size eta' and a noise scale eps on U(x') = f(x') + gamma/2 ||x' - x||^2. They differ in:

* the noise: Algorithm 1 adds sqrt(eta') eps xi, which is SGLD at temperature T = eps^2 / 2; the authors'
  code adds eps sqrt(2 eta') xi, i.e. T = eps^2 (the paper misses a factor of 2, as its author agreed);
* the averaging: Algorithm 1 puts weight alpha = 0.75 on the newest iterate (mu <- 0.25 mu + 0.75 x');
  the code puts 0.25 on it (mu <- 0.75 mu + 0.25 x');
* the inner sampler: the authors' code runs Nesterov momentum (m = 0.9, reset every outer step) with the coupling
  added after the momentum buffer; MomentumSGLD scales its noise by 1 / sqrt(1 - m) to name its target, so the
  same eps is T = eps^2 (1 - m) in its terms;
* the outer step (the optimizer only): x <- x - eta gamma (x - mu) (paper) or x <- x - eta (x - mu) (code).

Three presets: ``"paper"`` (Algorithm 1, SGLD), ``"authors"`` (the authors' code: Nesterov MomentumSGLD, coupling
after the momentum; the optimizer's) and ``"authors-sgld"`` (the authors' temperature and averaging on plain SGLD
without momentum; the estimator's). The estimator takes :data:`ESTIMATOR_PRESETS`, the optimizer
:data:`OPTIMIZER_PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localentropy._checks import check_choice, check_nonnegative, check_range
from localentropy.samplers import Sampler, make_sampler


@dataclass(frozen=True)
class InnerLoopConvention:
    """One published inner loop: its sampler, the temperature eps stands for, the averaging and the outer step."""

    name: str
    sampler: str  # a registered sampler name: "sgld" or "msgld"
    temperature_per_noise_scale_squared: float  # T = factor * eps^2 (times 1 - m for a momentum sampler)
    averaging: float  # weight of the newest iterate in the running average
    outer_scale: str  # the optimizer's outer step: "gamma" (gamma (x - mu)) or "unit" (x - mu)
    coupling: str  # where the optimizer adds the coupling: "inside" the gradient or "after_momentum"
    momentum: float | None  # the default inner momentum (a momentum sampler), None without momentum
    description: str

    @property
    def sampler_options(self) -> tuple[str, ...]:
        """The ``sampler_options`` keys the preset takes (``momentum`` only with a momentum sampler)."""
        return ("step_size", "noise_scale") + (("momentum",) if self.momentum is not None else ())

    def temperature(self, noise_scale: float, momentum: float | None = None) -> float:
        """T for the noise scale eps (and the inner momentum m of a momentum sampler)."""
        eps = check_nonnegative("noise_scale", noise_scale)
        t = self.temperature_per_noise_scale_squared * eps**2
        if self.momentum is None:
            return t
        m = self.momentum if momentum is None else momentum
        return t * (1 - m)

    def build_sampler(self, options: dict[str, Any]) -> Sampler:
        """The inner sampler from ``options``: ``step_size`` (eta'), ``noise_scale`` (eps) and maybe ``momentum``."""
        allowed = set(self.sampler_options)
        unknown = sorted(set(options) - allowed)
        missing = sorted({"step_size", "noise_scale"} - set(options))
        if unknown or missing:
            raise ValueError(
                f"preset={self.name!r} takes sampler_options {sorted(allowed)}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
            )
        eps = check_nonnegative("sampler_options.noise_scale", options["noise_scale"])
        if self.momentum is None:
            return make_sampler(self.sampler, step_size=options["step_size"], temperature=self.temperature(eps))
        momentum = check_range(
            "sampler_options.momentum", options.get("momentum", self.momentum), 0.0, 1.0, high_open=True
        )
        return make_sampler(
            self.sampler,
            step_size=options["step_size"],
            momentum=momentum,
            nesterov=momentum > 0,
            temperature=self.temperature(eps, momentum),
        )


INNER_LOOP_PRESETS: dict[str, InnerLoopConvention] = {
    "paper": InnerLoopConvention(
        "paper",
        "sgld",
        0.5,
        0.75,
        "gamma",
        "inside",
        None,
        "Algorithm 1 as printed: SGLD, noise sqrt(eta') eps xi (T = eps^2 / 2), alpha = 0.75, outer step eta gamma",
    ),
    "authors": InnerLoopConvention(
        "authors",
        "msgld",
        1.0,
        0.25,
        "unit",
        "after_momentum",
        0.9,
        "the authors' code: Nesterov MomentumSGLD (m = 0.9), noise eps sqrt(2 eta') xi, coupling after the "
        "momentum, weight 0.25 on the newest iterate, outer step eta (x - mu)",
    ),
    "authors-sgld": InnerLoopConvention(
        "authors-sgld",
        "sgld",
        1.0,
        0.25,
        "unit",
        "inside",
        None,
        "the authors' temperature and averaging on plain SGLD: noise eps sqrt(2 eta') xi (T = eps^2), weight 0.25 "
        "on the newest iterate, no momentum",
    ),
}
# One vocabulary: a preset's name means the same inner loop wherever it is accepted. The estimator has no coupling
# after a momentum buffer, so it takes the two SGLD conventions; the optimizers take all three.
ESTIMATOR_PRESETS = ("paper", "authors-sgld")
OPTIMIZER_PRESETS = ("paper", "authors", "authors-sgld")
RENAMED = {"authors": "authors-sgld"}  # the estimator's old name for "authors-sgld" (before the optimizer's "authors")


def estimator_preset(name: str, field: str = "preset") -> InnerLoopConvention:
    """The estimator's preset ``name``; the estimator's old name ``"authors"`` is refused, naming its new one."""
    if name in RENAMED:
        raise ValueError(
            f"{field} {name!r} is the optimizer's preset (Nesterov MomentumSGLD); the estimator's SGLD version of "
            f"the authors' code is now called {RENAMED[name]!r}; allowed: {', '.join(map(repr, ESTIMATOR_PRESETS))}"
        )
    return INNER_LOOP_PRESETS[check_choice(field, name, ESTIMATOR_PRESETS)]


def optimizer_preset(name: str, field: str = "preset") -> InnerLoopConvention:
    """The optimizer's preset ``name``."""
    return INNER_LOOP_PRESETS[check_choice(field, name, OPTIMIZER_PRESETS)]


def inner_loop_settings(preset: str, noise_scale: float) -> dict[str, float]:
    """The temperature and averaging weight that an estimator preset gives to the noise scale eps."""
    convention = estimator_preset(preset)
    return {"temperature": convention.temperature(noise_scale), "averaging": convention.averaging}


@dataclass(frozen=True)
class ParleConvention:
    """Parle's outer-loop choices where the authors' code departs from the paper's text (docs/optimizers.md).

    The inner sampler stays the caller's (``sampler``, ``sampler_options``): a Parle preset fixes only these.
    """

    name: str
    inner_noise: bool  # Langevin noise in the replicas' inner loop (False: temperature 0)
    rho_scale: str  # "none": rho as given; "steps_replicas": rho x L x n
    gamma_max: float | None  # cap on the scoped gamma_t (None: no cap)
    rho_max: float | None  # cap on the scoped (and scaled) rho_t
    reduction: str  # "weights": x_ref = mean of x^a; "averages_then_weights": first the mean of mu^a, then of x^a
    outer_scale: str  # the replica's step on (x^a - mu^a): "gamma" (gamma_t (x^a - mu^a)) or "unit"
    averaging: float  # weight of the newest inner iterate in mu <- (1 - alpha) mu + alpha y
    needs_batches_per_epoch: bool  # the scoping factor is 1 + 0.5 / nb: the caller must give nb
    description: str


PARLE_PRESETS: dict[str, ParleConvention] = {
    "paper": ParleConvention(
        "paper",
        True,
        "none",
        None,
        None,
        "weights",
        "gamma",
        0.75,
        False,
        "the paper's equations: Langevin inner loop, rho as given, no caps, one reduction of the weights per outer "
        "step, outer step gamma (x^a - mu^a) + rho (x^a - x_ref)",
    ),
    "authors": ParleConvention(
        "authors",
        False,
        "steps_replicas",
        1.0,
        10.0,
        "averages_then_weights",
        "unit",
        0.25,
        True,
        "the authors' code: no noise in the inner loop, rho x L x n, gamma and rho scoped by (1 + 0.5 / nb) per "
        "outer step and capped at 1 and 10, the reference first the mean of the inner averages then of the weights, "
        "outer step (x^a - mu^a) + rho (x^a - x_ref), weight 0.25 on the newest inner iterate",
    ),
}


def parle_preset(name: str, field: str = "preset") -> ParleConvention:
    """Parle's preset ``name``."""
    return PARLE_PRESETS[check_choice(field, name, tuple(PARLE_PRESETS))]
