"""Run the accuracy atlas: every registered sampler on every target of the bank, written as JSON, tables and a plot.

``run_atlas(out_dir, quick=False)`` is the one entry point (the CLI's ``localentropy samplers --accuracy`` and a
reproduce step call it). For each sampler and target it measures the stability limit h* (bisection), then runs
chains at three step sizes h = f h* (f in ``FRACTIONS``: step sizes are not comparable across samplers, fractions of
each one's own limit are), once more at the middle one with injected gradient noise N(0, V I) (V = 1 / (2 h), so
that SGLD's law T + h V / 2 predicts T_eff = 1.25), and Entropy-SGD's regime: chains of L inner steps restarted at
an anchor every outer step, on the 20-D Gaussian coupled with gamma = 1.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from localentropy._threads import torch_threads
from localentropy.experiments.atlas.entries import Entry, atlas_entries
from localentropy.experiments.atlas.measure import (
    coupled_gaussian,
    entropy_sgd_regime,
    moment_errors,
    run_chains,
    stability_limit,
)
from localentropy.experiments.atlas.render import render_markdown, render_plot
from localentropy.experiments.atlas.targets import Gaussian, target_bank
from localentropy.experiments.core.files import atomic_write_bytes
from localentropy.experiments.core.rundir import environment, finite_or_none

FRACTIONS = (1 / 32, 1 / 8, 1 / 2)
NOISE_PREDICTED_TEMPERATURE = 1.25  # T + h V / 2 with T = 1 and V = 1 / (2 h)
ESGD_GAMMA = 1.0


@dataclass(frozen=True)
class AtlasConfig:
    """The atlas's sizes: ``quick()`` is a smoke test (under a minute); the defaults are the atlas in the docs."""

    n_chains: int = 256
    n_steps: int = 3000
    burn_in: int = 100
    limit_chains: int = 32
    limit_steps: int = 500
    esgd_inner_steps: tuple[int, ...] = (5, 20)
    esgd_outer_steps: int = 10
    seed: int = 0

    @classmethod
    def quick(cls) -> AtlasConfig:
        return cls(n_chains=64, n_steps=400, burn_in=50, limit_chains=16, limit_steps=150, esgd_outer_steps=4)


def _measure(entry: Entry, target: Any, config: AtlasConfig, seed: int, sizes: dict[str, float]) -> dict[str, Any]:
    adaptation = entry.adaptation_steps()
    burn_in = max(config.burn_in, adaptation)
    limit = stability_limit(
        entry, target, n_chains=config.limit_chains, n_steps=config.limit_steps + adaptation, seed=seed
    )
    row: dict[str, Any] = {
        "sampler": entry.label,
        "name": entry.name,
        "fixed": entry.fixed,
        "target": target.name,
        "limit": limit,
        "grads_per_step": _grads_per_step(entry, target),
        "runs": [],
    }
    if limit <= 0:
        row["note"] = "no stable step size found"
        return row
    n_steps = config.n_steps + burn_in
    for fraction in FRACTIONS:
        h = fraction * limit
        stats = run_chains(entry, target, h, n_chains=config.n_chains, n_steps=n_steps, burn_in=burn_in, seed=seed + 1)
        row["runs"].append(
            {
                "fraction": fraction,
                "step_size": h,
                "n_diverged": stats.n_diverged,
                "n_chains": stats.n_chains,
                **moment_errors(stats),
            }
        )
    h = FRACTIONS[1] * limit
    noise = 1.0 / (2.0 * h)
    stats = run_chains(
        entry, target, h, n_chains=config.n_chains, n_steps=n_steps, burn_in=burn_in, seed=seed + 2, grad_noise=noise
    )
    row["noisy"] = {
        "fraction": FRACTIONS[1],
        "step_size": h,
        "grad_noise": noise,
        "predicted_temperature": 1.0 + h * noise / 2,
        "n_diverged": stats.n_diverged,
        **moment_errors(stats),
    }
    row["grad_evals_per_chain"] = n_steps * row["grads_per_step"]
    sizes["runs"] += 5
    return row


def _grads_per_step(entry: Entry, target: Any) -> int:
    sampler = entry.build(1e-3, target, 10)
    return int(sampler.gradients_per_step)  # declared by every sampler (a wrapper: its sampler's)


def _esgd_rows(entry: Entry, base: Gaussian, config: AtlasConfig, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    anchor = base.draw(1, rng).numpy()[0]
    coupled = coupled_gaussian(base, ESGD_GAMMA, anchor)
    limit = stability_limit(entry, coupled, n_chains=config.limit_chains, n_steps=config.limit_steps, seed=seed)
    rows = []
    for inner in config.esgd_inner_steps:
        row: dict[str, Any] = {
            "sampler": entry.label,
            "target": coupled.name,
            "inner_steps": inner,
            "outer_steps": config.esgd_outer_steps,
            "limit": limit,
            "runs": [],
        }
        for fraction in FRACTIONS if limit > 0 else ():
            result = entropy_sgd_regime(
                entry,
                coupled,
                anchor,
                ESGD_GAMMA,
                fraction * limit,
                inner_steps=inner,
                outer_steps=config.esgd_outer_steps,
                n_chains=config.n_chains,
                seed=seed + 3,
            )
            row["runs"].append({"fraction": fraction, "step_size": fraction * limit, **result})
        rows.append(row)
    return rows


def run_atlas(
    out_dir: str | Path,
    quick: bool = False,
    *,
    samplers: list[str] | None = None,
    targets: list[str] | None = None,
    seed: int = 0,
    progress: Any = None,
) -> dict[str, Any]:
    """Measure the atlas and write ``atlas.json``, ``atlas.md`` and ``atlas.png`` into ``out_dir``; return the results.

    ``samplers`` (registered names) and ``targets`` (names in the bank) restrict it; ``progress`` is a callable
    given one line per finished (sampler, target). The full atlas takes about 9 minutes alone on this project's 2-core
    machine (22 with the cores shared), ``quick`` about one. One seed gives the same numbers.
    """
    config = AtlasConfig.quick() if quick else AtlasConfig()
    config = AtlasConfig(**{**asdict(config), "seed": seed})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bank = [t for t in target_bank() if targets is None or t.name in targets]
    entries = atlas_entries(samplers)
    start = time.perf_counter()
    rows, esgd, skipped, sizes = [], [], [], {"runs": 0}
    with torch_threads(1):  # tiny tensors: one thread is fastest and leaves the other core free
        for entry in entries:
            missing = entry.missing()
            if missing:
                skipped.append({"sampler": entry.label, "reason": f"needs hyperparameter(s) {', '.join(missing)}"})
                continue
            for index, target in enumerate(bank):
                rows.append(_measure(entry, target, config, seed + 100 * index, sizes))
                if progress is not None:
                    progress(f"{entry.label} on {target.name}: limit {rows[-1]['limit']:.4g}")
            gaussians = [t for t in bank if isinstance(t, Gaussian)]
            if gaussians:
                esgd += _esgd_rows(entry, gaussians[0], config, seed + 1000)
    results = {
        "config": {
            **asdict(config),
            "fractions": list(FRACTIONS),
            "quick": quick,
            "esgd_gamma": ESGD_GAMMA,
            "samplers": [asdict(e) for e in entries],
            "targets": [{"name": t.name, "dim": t.dim, "description": t.description} for t in bank],
        },
        "seed": seed,
        "environment": environment(),
        "seconds": time.perf_counter() - start,
        "rows": rows,
        "entropy_sgd": esgd,
        "skipped": skipped,
    }
    results = finite_or_none(results)
    atomic_write_bytes(out / "atlas.json", json.dumps(results, indent=1).encode())
    atomic_write_bytes(out / "atlas.md", render_markdown(results, image="atlas.png").encode())
    render_plot(results, out / "atlas.png")
    return results
