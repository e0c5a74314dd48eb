r"""The LLC of a torch model at its current weights, with minibatch gradients (Lau et al. 2023, Algorithm 1).

L_n(w) is the average of a mean-reduced ``loss_fn(model(inputs), targets)`` over the n examples of a data loader;
w* is the model's current trainable parameters (left unchanged: the chains run on copies through
``torch.func.functional_call``). Every step of every chain reads the loader's next minibatch B and takes

    grad U(w) ≈ nbeta grad L_B(w) + localization (w - w*),

the minibatch estimate of the gradient of U = nbeta L_n + localization / 2 ||w - w*||^2, and records L_B(w) (an
unbiased draw of L_n(w)) in the trace. L_n(w*) is computed exactly, over the whole loader. nbeta defaults to
n / log n (beta = 1 / log n). Samplers that need the exact potential (MALA) are not offered here: their
accept/reject test is wrong with minibatch losses.

devinterp's parameterisation (``SGMCMC.sgld`` of ``devinterp.optim.sgmcmc``, the default sampler of
``devinterp.slt.sampling.sample``):

    w <- w - (lr / 2) (n_beta grad L_B(w) + localization (w - w*)) + noise_level sqrt(lr) xi,

which is our SGLD (x <- x - h grad U + sqrt(2 h T) xi) with step_size h = lr / 2 and temperature
T = noise_level^2 (= 1, its default; the LLC needs it). :func:`devinterp_settings` makes the mapping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from localentropy._checks import check_choice, check_positive
from localentropy.llc.estimate import LLCResult, build_sampler, check_settings, divergence_error, summarise
from localentropy.samplers import sampler_class
from localentropy.samplers.divergence import DIVERGENCE_POLICIES

__all__ = ["default_nbeta", "devinterp_settings", "estimate_llc_model"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def default_nbeta(n: int) -> float:
    """n / log n: beta = 1 / log n, the temperature of Watanabe's WBIC and Lau et al.'s default (n >= 2)."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 for the default nbeta = n / log n, got {n!r}")
    return n / math.log(n)


def devinterp_settings(*, lr: float, n_beta: float, localization: float = 0.0, noise_level: float = 1.0) -> dict:
    """The keyword arguments of :func:`estimate_llc_model` that match devinterp's SGLD settings.

    devinterp's update is w <- w - (lr/2) (n_beta grad L_B + localization (w - w*)) + noise_level sqrt(lr) xi: our
    SGLD with step_size = lr / 2 at temperature noise_level^2, which must be 1 for the LLC measure.
    """
    lr = check_positive("lr", lr)
    if noise_level != 1.0:
        raise ValueError(f"noise_level must be 1 (the LLC measure has temperature 1), got {noise_level!r}")
    return {
        "nbeta": check_positive("n_beta", n_beta),
        "localization": localization,
        "sampler": "sgld",
        "sampler_options": {"step_size": lr / 2},
    }


def _batches(loader: Iterable) -> Iterator:
    """The loader's batches for ever: a new epoch (a new shuffle) whenever one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the data loader yields no batch")


def _full_loss(model: nn.Module, params: dict[str, Tensor], loss_fn: LossFn, loader: Iterable) -> tuple[float, int]:
    """L_n at ``params``: the example-weighted average of the mean minibatch losses, and n."""
    total, n = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            k = int(targets.shape[0])
            total += float(loss_fn(functional_call(model, params, (inputs,)), targets)) * k
            n += k
    if n == 0:
        raise ValueError("the data loader yields no examples")
    return total / n, n


def estimate_llc_model(
    model: nn.Module,
    loss_fn: LossFn,
    loader: Iterable,
    *,
    nbeta: float | None = None,
    localization: float,
    sampler: str = "sgld",
    sampler_options: dict[str, Any] | None = None,
    chains: int,
    steps: int,
    burn_in: int,
    generator: torch.Generator | None = None,
    on_divergence: str = "raise",
) -> LLCResult:
    """lambda_hat(w*) at the model's current weights w* from minibatch chains (module docstring).

    ``loader`` yields (inputs, targets) batches (a torch DataLoader or any re-iterable); ``loss_fn`` is mean-reduced.
    The chains run one after another, each reading the loader from a fresh epoch. ``nbeta`` defaults to n / log n.
    The result's ``n`` is the number of examples and its ``free_energy`` the local WBIC n E_p[L_n]. Diverged chains
    (not finite, or ran away) are raised or dropped by ``on_divergence`` as in :func:`~localentropy.llc.estimate_llc`.
    """
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("the model has no trainable parameters")
    star = {k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    fixed = dict(model.named_buffers()) | {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    l_star, n = _full_loss(model, star | fixed, loss_fn, loader)
    nbeta = default_nbeta(n) if nbeta is None else nbeta
    nbeta, localization, chains, steps, burn_in = check_settings(nbeta, localization, chains, steps, burn_in)
    on_divergence = check_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES)
    if sampler_class(sampler).needs_potential:
        raise ValueError(f"sampler {sampler!r} needs the exact potential; minibatch chains cannot give it")
    chosen = build_sampler(sampler, sampler_options, steps, burn_in)
    trace = torch.empty(chains, steps - burn_in, dtype=torch.float64)
    for c in range(chains):
        position = [star[k].clone().requires_grad_(True) for k in names]
        state = chosen.init(position)
        batches = _batches(loader)
        for k in range(steps):
            inputs, targets = next(batches)
            with torch.enable_grad():
                params = dict(zip(names, position, strict=True)) | fixed
                loss = loss_fn(functional_call(model, params, (inputs,)), targets)
                grads = list(torch.autograd.grad(loss, position))
            if k >= burn_in:
                trace[c, k - burn_in] = float(loss.detach())
            with torch.no_grad():
                for g, p, k_name in zip(grads, position, names, strict=True):
                    g.mul_(nbeta).add_(p - star[k_name], alpha=localization)
            state = chosen.step(state, grads, generator)
        if on_divergence == "raise" and not bool(torch.isfinite(trace[c]).all()):  # no use running the others
            raise divergence_error(chosen, 1, chains, steps)
    return summarise(
        trace.numpy(),
        l_star,
        nbeta=nbeta,
        localization=localization,
        sampler=sampler,
        sampler_options=dict(sampler_options or {}),
        grad_evals=chains * steps * int(chosen.gradients_per_step),
        dim=sum(star[k].numel() for k in names),
        n=n,
        on_divergence=on_divergence,
        divergence=lambda n_bad: divergence_error(chosen, n_bad, chains, steps),
    )
