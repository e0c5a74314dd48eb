"""Inner-loop conventions of Entropy-SGD as published: the paper's Algorithm 1 and the authors' code.

Both run SGLD with step size eta' and a noise scale eps on U(x') = f(x') + gamma/2 ||x' - x||^2
(``../shared/ANCHORS.md``). They differ in:

* the noise: Algorithm 1 adds sqrt(eta') eps xi, which is SGLD at temperature T = eps^2 / 2; the authors'
  code adds eps sqrt(2 eta') xi, i.e. T = eps^2 (the paper misses a factor of 2, as its author agreed);
* the averaging: Algorithm 1 puts weight alpha = 0.75 on the newest iterate (mu <- 0.25 mu + 0.75 x');
  the code puts 0.25 on it (mu <- 0.75 mu + 0.25 x').

The optimizer adds the outer-loop differences (momentum, the eta versus eta gamma step) on top of these.
"""

from __future__ import annotations

from dataclasses import dataclass

from localentropy._checks import check_choice, check_nonnegative


@dataclass(frozen=True)
class InnerLoopConvention:
    name: str
    temperature_per_noise_scale_squared: float  # T = factor * eps^2
    averaging: float  # weight of the newest iterate in the running average
    description: str


INNER_LOOP_PRESETS: dict[str, InnerLoopConvention] = {
    "paper": InnerLoopConvention(
        "paper", 0.5, 0.75, "Algorithm 1 as printed: noise sqrt(eta') eps xi (T = eps^2 / 2), alpha = 0.75"
    ),
    "authors": InnerLoopConvention(
        "authors", 1.0, 0.25, "the authors' code: noise eps sqrt(2 eta') xi (T = eps^2), weight 0.25 on the newest"
    ),
}


def inner_loop_settings(preset: str, noise_scale: float) -> dict[str, float]:
    """The temperature and averaging weight that a preset gives to the noise scale eps."""
    convention = INNER_LOOP_PRESETS[check_choice("preset", preset, tuple(INNER_LOOP_PRESETS))]
    eps = check_nonnegative("noise_scale", noise_scale)
    return {
        "temperature": convention.temperature_per_noise_scale_squared * eps**2,
        "averaging": convention.averaging,
    }
