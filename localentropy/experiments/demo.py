"""The README's first job: every registered sampler on a correlated 2-D Gaussian, moments beside the truth."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import arviz_stats
import numpy as np
import torch

from localentropy.samplers import available_samplers, make_sampler, sample


class GaussianPotential:
    """U(x) = (x - m)^T P (x - m) / 2 for (n_chains, d) positions, for samplers that need U itself (MALA)."""

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor) -> None:
        self.mean, self.precision = mean, precision

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - self.mean
        return 0.5 * ((centred @ self.precision) * centred).sum(dim=-1)

    def __repr__(self) -> str:
        return "U"


# Step sizes well inside each scheme's stable range for this target (lambda_max of the precision is 10).
# An entry is a dict of hyperparameters, or a function of the target's (mean, precision) that returns one
# (for samplers with required hyperparameters beyond step_size, such as MALA's potential).
DEMO_SETTINGS: dict[str, dict[str, Any] | Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]] = {
    "sgld": {"step_size": 0.02},
    "sghmc": {"step_size": 0.01, "friction": 0.2},
    "psgld": {"step_size": 0.02, "beta": 0.999},
    "msgld": {"step_size": 0.005, "momentum": 0.5},
    "sgnht": {"step_size": 0.05, "diffusion": 1.0},
    "baoab": {"step_size": 0.5, "friction": 1.0},
    "mala": lambda mean, precision: {"step_size": 0.2, "potential": GaussianPotential(mean, precision)},
    "cyclical": {"sampler": {"name": "sgld", "step_size": 0.04}, "n_cycles": 4, "total_steps": 10000},
}
DEFAULT_SETTINGS: dict[str, Any] = {"step_size": 0.01}


@dataclass
class DemoRow:
    sampler: str
    settings: dict[str, Any]
    mean: np.ndarray
    cov: np.ndarray
    min_ess: float
    max_mcse: float
    grad_evals: int
    seconds: float


def gaussian_target() -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the demo target: correlation 0.9, standard deviations 1 and 2."""
    mean = torch.tensor([1.0, -2.0], dtype=torch.float64)
    sd = torch.tensor([1.0, 2.0], dtype=torch.float64)
    corr = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    return mean, corr * torch.outer(sd, sd)


def run_demo(n_chains: int = 32, n_steps: int = 10000, burn_in: int = 2000, seed: int = 0) -> list[DemoRow]:
    mean, cov = gaussian_target()
    precision = torch.linalg.inv(cov)

    def grad_fn(x: torch.Tensor) -> torch.Tensor:
        return (x - mean) @ precision

    rows = []
    for name in available_samplers():
        settings = DEMO_SETTINGS.get(name, DEFAULT_SETTINGS)
        if callable(settings):
            settings = settings(mean, precision)
        sampler = make_sampler(name, **settings)
        generator = torch.Generator().manual_seed(seed)
        init = mean + torch.randn(n_chains, 2, generator=generator, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
        start = time.perf_counter()
        draws = sample(sampler, grad_fn, init, n_steps, burn_in=burn_in, generator=generator)
        seconds = time.perf_counter() - start
        flat = draws.reshape(-1, 2).numpy()
        ess = arviz_stats.ess(draws.numpy(), method="bulk")
        rows.append(
            DemoRow(
                sampler=name,
                settings=settings,
                mean=flat.mean(axis=0),
                cov=np.cov(flat.T),
                min_ess=float(np.min(ess)),
                max_mcse=float(np.max(arviz_stats.mcse(draws.numpy(), method="mean"))),
                grad_evals=n_chains * n_steps * sampler.gradients_per_step,
                seconds=seconds,
            )
        )
    return rows


def print_demo(rows: list[DemoRow], out: TextIO) -> None:
    mean, cov = gaussian_target()
    m, c = mean.numpy(), cov.numpy()

    def fmt(values: np.ndarray) -> str:
        return " ".join(f"{v:7.3f}" for v in values)

    print("Correlated 2-D Gaussian, exp(-U) with U = (x - m)^T S^-1 (x - m) / 2, every registered sampler", file=out)
    header = f"{'sampler':<10} {'mean':>16} {'cov (s11 s12 s22)':>26} {'min ESS':>8} {'MCSE mean':>10}"
    print(f"{header} {'grad evals':>11}", file=out)
    print(f"{'truth':<10} {fmt(m):>16} {fmt(c[np.triu_indices(2)]):>26}", file=out)
    for row in rows:
        upper = row.cov[np.triu_indices(2)]
        print(
            f"{row.sampler:<10} {fmt(row.mean):>16} {fmt(upper):>26} {row.min_ess:8.0f} {row.max_mcse:10.3f}"
            f" {row.grad_evals:11d}",
            file=out,
        )
    print("settings: " + "; ".join(f"{r.sampler} {r.settings}" for r in rows), file=out)
    print(
        "Differences beyond a few MCSE (sd / sqrt(ESS)) are each scheme's discretisation bias at its step size.",
        file=out,
    )
