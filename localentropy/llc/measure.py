r"""The LLC as a flatness measure of trained weights, with a step size set by the minimum's own stiffness.

At the model's current weights w* (in whatever mode the caller left it: eval mode for a fixed function),
:func:`llc_flatness` estimates lambda_hat(w*) with minibatch SGLD (:func:`~localentropy.llc.estimate_llc_model`)
on the training examples (x, y), nbeta = n / log n. Minima of different sharpness need different step sizes, so
the step is a fixed fraction c of SGLD's stability limit at w*:

    step_size = c / (nbeta |lambda_max| + localization),

|lambda_max| the Hessian eigenvalue of L_n of largest magnitude at w* (power iteration,
:func:`~localentropy.diagnostics.flatness.hessian_top_eigenvalue`, on the same examples). On a quadratic SGLD's
LLC is then biased by the same factor 1 / (1 - c / 2) in the stiffest direction at every minimum (c = 0.1: +5%),
so the comparison across optimizers is not a comparison of step sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from localentropy._checks import check_int, check_positive
from localentropy.diagnostics.flatness import LossFn, hessian_top_eigenvalue
from localentropy.llc.model import default_nbeta, estimate_llc_model
from localentropy.samplers import generator_on

__all__ = ["LLCMeasure", "llc_flatness"]


@dataclass(frozen=True)
class LLCMeasure:
    value: float  # lambda_hat(w*)
    mcse: float
    per_chain: list[float]
    nbeta: float
    localization: float
    step_size: float
    step_fraction: float
    top_eigenvalue: float  # of L_n at w*, the one that set the step
    n: int
    chains: int
    steps: int
    burn_in: int
    ess_bulk: float
    rhat: float
    free_energy: float | None  # local WBIC n E_p[L_n]


def llc_flatness(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    generator: torch.Generator,
    localization: float = 100.0,
    step_fraction: float = 0.1,
    chains: int = 2,
    steps: int = 300,
    burn_in: int = 100,
    batch_size: int = 128,
    eigen_iterations: int = 30,
) -> LLCMeasure:
    """lambda_hat at the model's weights on the examples (x, y) (module docstring); ``loss_fn`` is mean-reduced."""
    n = int(y.shape[0])
    step_fraction = check_positive("step_fraction", step_fraction)
    batch_size = check_int("batch_size", batch_size, 1)
    full = [(x[i : i + 1024], y[i : i + 1024]) for i in range(0, n, 1024)]
    top = hessian_top_eigenvalue(model, loss_fn, full, iterations=eigen_iterations, generator=generator).value
    nbeta = default_nbeta(n)
    step_size = step_fraction / (nbeta * abs(top) + localization)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator
    )
    result = estimate_llc_model(
        model,
        loss_fn,
        loader,
        nbeta=nbeta,
        localization=localization,
        sampler="sgld",
        sampler_options={"step_size": step_size},
        chains=chains,
        steps=steps,
        burn_in=burn_in,
        generator=generator_on(x.device, generator),  # the chains draw on the data's device
    )
    return LLCMeasure(
        value=result.mean,
        mcse=result.mcse,
        per_chain=[float(v) for v in result.per_chain],
        nbeta=nbeta,
        localization=localization,
        step_size=step_size,
        step_fraction=step_fraction,
        top_eigenvalue=top,
        n=n,
        chains=chains,
        steps=steps,
        burn_in=burn_in,
        ess_bulk=result.ess_bulk,
        rhat=result.rhat,
        free_energy=result.free_energy,
    )
