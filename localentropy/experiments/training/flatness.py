"""Flatness of each optimizer's final weights, for ``localentropy train`` (the measures: diagnostics/flatness.py).

The model is put in eval mode (dropout off, batch norm on its running statistics), so the loss is a fixed
function of the weights. Every optimizer is measured on the same evaluation batch set (``flatness.examples``
training examples chosen by the seed) with the same random vectors; the local-entropy gradient uses the
full training set, as does the LLC (asked for by name: ``measures = [..., "llc"]``).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

from localentropy.data import DataSplits
from localentropy.diagnostics.flatness import (
    epsilon_sharpness,
    hessian_density,
    hessian_top_eigenvalue,
    hessian_trace,
    local_entropy_gradient,
)
from localentropy.experiments.training.config import TrainConfig
from localentropy.llc.measure import llc_flatness
from localentropy.samplers import generator_on


def _chunks(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(y), size)]


def measure_flatness(model: nn.Module, splits: DataSplits, config: TrainConfig) -> dict[str, Any]:
    """Every measure in ``config.flatness.measures`` at the model's current weights, with its seconds."""
    from localentropy.experiments.core.seeds import stable_seed

    fl = config.flatness
    train = splits.train
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(stable_seed(config.seed, "flatness")))
    chosen = order[: fl.examples]
    batches = _chunks(train.x[chosen], train.y[chosen], fl.batch_size)
    loss_fn = nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {"examples": len(chosen), "seconds": {}}
    try:
        for measure in fl.measures:
            generator = torch.Generator().manual_seed(stable_seed(config.seed, "flatness", measure))
            start = time.perf_counter()
            try:
                out[measure] = _measure(measure, model, loss_fn, batches, train, config, generator)
            except (RuntimeError, ValueError, ArithmeticError) as exc:  # one measure failing leaves the others
                out[measure] = {"error": f"{type(exc).__name__}: {exc}"}
            out["seconds"][measure] = time.perf_counter() - start
    finally:
        model.train(was_training)
    return out


def _measure(
    measure: str,
    model: nn.Module,
    loss_fn: Any,
    batches: list[tuple[Tensor, Tensor]],
    train: Any,
    config: TrainConfig,
    generator: torch.Generator,
) -> dict[str, Any]:
    fl = config.flatness
    if measure == "top_eigenvalue":
        return asdict(
            hessian_top_eigenvalue(
                model, loss_fn, batches, iterations=fl.power_iterations, tol=fl.power_tol, generator=generator
            )
        )
    if measure == "trace":
        return asdict(hessian_trace(model, loss_fn, batches, samples=fl.hutchinson_samples, generator=generator))
    if measure == "density":
        density = hessian_density(
            model,
            loss_fn,
            batches,
            steps=fl.lanczos_steps,
            runs=fl.lanczos_runs,
            broadening=fl.broadening,
            grid_points=400,
            generator=generator,
        )
        return {**density.as_dict(), "moment1": density.moment(1), "moment2": density.moment(2)}
    if measure == "sharpness":
        return asdict(
            epsilon_sharpness(
                model,
                loss_fn,
                batches,
                epsilon=fl.sharpness_epsilon,
                iterations=fl.sharpness_iterations,
                generator=generator,
            )
        )
    if measure == "local_entropy":
        le = fl.local_entropy.model_dump()
        full = _chunks(train.x, train.y, fl.batch_size)
        return asdict(
            local_entropy_gradient(
                model,
                loss_fn,
                full,
                gamma=le["gamma"],
                temperature=le["temperature"],
                step_size=le["step_size"],
                steps=le["steps"],
                chains=le["chains"],
                burn_in=le["burn_in"],
                generator=generator_on(train.x.device, generator),  # the chains draw on the device
            )
        )
    if measure == "llc":  # on the whole training set, its default settings (localentropy/llc/measure.py)
        return asdict(llc_flatness(model, loss_fn, train.x, train.y, generator=generator))
    raise ValueError(f"unknown flatness measure {measure!r}")
