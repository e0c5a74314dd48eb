r"""The local learning coefficient (LLC) from chains of any registered sampler.

Lau, Furman, Wang, Murfet and Wei, "The local learning coefficient: a singularity-aware complexity measure"
(arXiv 2308.12108, 2023), Definition 3 / eq. (7):

    lambda_hat(w*) = nbeta (E_p[L(w)] - L(w*)),   p(w) ∝ exp(-nbeta L(w) - (localization / 2) ||w - w*||^2),

with nbeta = n beta = n / log n in their default (beta = 1 / log n, the WBIC temperature). p is the density
exp(-U) at temperature 1 of the potential

    U(w) = nbeta L(w) + (localization / 2) ||w - w*||^2,   grad U(w) = nbeta grad L(w) + localization (w - w*),

so every sampler of :mod:`localentropy.samplers` runs on it with ``temperature=1``. Each chain starts at w*; step
k's draw is L at the chain's position before the k-th update (k = 0 .. steps - 1), and the draws k >= burn_in
are kept. Per chain, lambda_c = nbeta (mean_k L_ck - L(w*)); ``mean`` is their average (the average of every kept
draw, the chains having equal length) and ``mcse`` is nbeta times ArviZ's MCSE of the mean of the trace of L
(autocorrelation within chains accounted for: ``arviz_stats.mcse(method="mean")``).

The local free energy beside it is the local WBIC (Watanabe 2013, "A widely applicable Bayesian information
criterion", JMLR 14): F_hat = n E_p[L] at nbeta = n / log n, so that F_hat - n L(w*) = lambda_hat log n. It is
reported when ``n`` (the number of examples L averages over) is given.

**Diverged chains.** A chain has diverged when its trace of L (or its last position) is not finite, or when it
ran away while staying finite: its lambda_c exceeds :data:`LLC_RUNAWAY` x max(median_c |lambda_c|, d / 2), d the
number of parameters. The reference is robust (a median moves with no runaway as long as fewer than half of the
chains run away) and never below d / 2, the largest learning coefficient of a minimum in d dimensions (a regular
one), so that chains which all barely move (a median near 0) still have a threshold. A working chain never comes
near it: at a minimum, one draw of nbeta (L - L(w*)) is about a chi-square with d degrees of freedom over 2, and
P(chi2_d / 2 > 100 d / 2) < exp(-40 d); where w* is not a minimum the median term scales the threshold with the
chains' own values. ``on_divergence="raise"`` (the default) raises
:class:`~localentropy.samplers.SamplerDivergenceError` on any diverged chain; ``"drop"`` leaves diverged chains
out of ``mean``, ``mcse``, ``per_chain`` and the trace and counts them in ``n_diverged`` (all chains diverged still
raises). Dropping is a choice for a caller who reports the count beside the estimate: a dropped chain's draws are
not from p, but leaving it out conditions the estimate on the chains that stayed, which is biased low when the
runaway is a property of p (heavy tails) rather than of the step size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import arviz_stats
import numpy as np
import torch
import xarray as xr
from torch import Tensor

from localentropy._checks import check_choice, check_int, check_nonnegative, check_positive
from localentropy.diagnostics.chains import to_datatree
from localentropy.samplers import Sampler, SamplerDivergenceError, make_sampler, sampler_class, sampler_hyperparameters
from localentropy.samplers.divergence import DIVERGENCE_POLICIES

__all__ = [
    "LLC_RUNAWAY",
    "LLCResult",
    "build_sampler",
    "diverged_chains",
    "divergence_error",
    "estimate_llc",
    "summarise",
]

LLC_RUNAWAY = 100.0  # a chain whose lambda_c exceeds 100 x max(median |lambda_c|, d / 2) ran away (module docstring)

Potential = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class LLCResult:
    """An LLC estimate: lambda_hat, its Monte Carlo standard error, the per-chain values and the trace of L."""

    mean: float
    mcse: float
    per_chain: np.ndarray  # (chains,) nbeta (mean_k L_ck - L(w*))
    loss_trace: np.ndarray  # (chains, draws) L at the kept draws
    loss_at_w_star: float
    nbeta: float
    localization: float
    sampler: str
    sampler_options: dict[str, Any]
    grad_evals: int  # over all chains, burn-in included
    ess_bulk: float  # of the trace of L (ArviZ)
    rhat: float  # rank-normalised R-hat of the trace of L (NaN with one chain)
    n: int | None = None  # examples L averages over (for the free energy)
    free_energy: float | None = None  # local WBIC n E_p[L] (module docstring)
    free_energy_mcse: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    n_diverged: int = 0  # chains left out as diverged (``on_divergence="drop"``; module docstring)

    @property
    def chains(self) -> int:
        return int(self.loss_trace.shape[0])

    @property
    def draws(self) -> int:
        return int(self.loss_trace.shape[1])

    def to_datatree(self) -> xr.DataTree:
        """The trace as an ArviZ DataTree: ``loss`` (L) and ``llc`` (nbeta (L - L(w*))), each (chain, draw)."""
        llc = self.nbeta * (self.loss_trace - self.loss_at_w_star)
        attrs = {
            "nbeta": self.nbeta,
            "localization": self.localization,
            "sampler": self.sampler,
            "loss_at_w_star": self.loss_at_w_star,
        }
        return to_datatree({"loss": self.loss_trace, "llc": llc}, attrs=attrs)


def diverged_chains(
    trace: np.ndarray, loss_at_w_star: float, nbeta: float, dim: int, factor: float = LLC_RUNAWAY
) -> np.ndarray:
    """Which chains of a (chains, draws) trace of L diverged: not finite, or lambda_c above ``factor`` x
    max(median |lambda_c| of the finite chains, dim / 2) (module docstring)."""
    trace = np.asarray(trace, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        per_chain = nbeta * (trace.mean(axis=1) - loss_at_w_star)
    bad = ~np.isfinite(per_chain)
    finite = np.abs(per_chain[~bad])
    reference = max(float(np.median(finite)) if finite.size else 0.0, dim / 2)
    return bad | (np.where(bad, 0.0, per_chain) > factor * reference)


def summarise(
    trace: np.ndarray,
    loss_at_w_star: float,
    *,
    nbeta: float,
    localization: float,
    sampler: str,
    sampler_options: dict[str, Any],
    grad_evals: int,
    dim: int,
    n: int | None = None,
    extra: dict[str, Any] | None = None,
    on_divergence: str = "raise",
    divergence: Callable[[int], SamplerDivergenceError] | None = None,
) -> LLCResult:
    """An :class:`LLCResult` from the kept trace of L, (chains, draws) with draws >= 4, its diverged chains (any
    non-finite value, or a runaway: :func:`diverged_chains`) raised or dropped by ``on_divergence``.

    ``dim`` is the number of parameters (for the runaway threshold); ``divergence(n_bad)`` builds the error raised.
    """
    on_divergence = check_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES)
    trace = np.asarray(trace, dtype=np.float64)
    if trace.ndim != 2 or trace.shape[1] < 4:
        raise ValueError(f"the trace of L must be (chains, draws) with at least 4 draws, got shape {trace.shape}")
    bad = diverged_chains(trace, loss_at_w_star, nbeta, dim)
    n_bad = int(bad.sum())
    if n_bad and (on_divergence == "raise" or n_bad == trace.shape[0]):
        if divergence is None:
            raise SamplerDivergenceError(
                f"{n_bad} of {trace.shape[0]} chains of the LLC measure diverged (not finite, or ran away: lambda_c "
                f"above {LLC_RUNAWAY:g} x max(median |lambda_c|, d / 2))"
            )
        raise divergence(n_bad)
    trace = trace[~bad]
    per_chain = nbeta * (trace.mean(axis=1) - loss_at_w_star)
    mcse_loss = float(arviz_stats.mcse(trace, method="mean"))
    mean_loss = float(trace.mean())
    return LLCResult(
        mean=float(per_chain.mean()),
        mcse=nbeta * mcse_loss,
        per_chain=per_chain,
        loss_trace=trace,
        loss_at_w_star=float(loss_at_w_star),
        nbeta=float(nbeta),
        localization=float(localization),
        sampler=sampler,
        sampler_options=dict(sampler_options),
        grad_evals=int(grad_evals),
        ess_bulk=float(arviz_stats.ess(trace, method="bulk")),
        rhat=float(arviz_stats.rhat(trace)) if trace.shape[0] > 1 else math.nan,
        n=n,
        free_energy=None if n is None else n * mean_loss,
        free_energy_mcse=None if n is None else n * mcse_loss,
        extra=dict(extra or {}),
        n_diverged=n_bad,
    )


def check_settings(nbeta: float, localization: float, chains: int, steps: int, burn_in: int) -> tuple:
    nbeta = check_positive("nbeta", nbeta)
    localization = check_nonnegative("localization", localization)
    chains = check_int("chains", chains, 1)
    steps = check_int("steps", steps, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    if steps - burn_in < 4:
        raise ValueError(
            f"steps - burn_in must be >= 4 (ESS and R-hat need 4 draws), got steps={steps}, burn_in={burn_in}"
        )
    return nbeta, localization, chains, steps, burn_in


def build_sampler(
    name: str, options: dict[str, Any] | None, steps: int, burn_in: int, potential: Potential | None = None
) -> Sampler:
    """The registered sampler ``name`` at temperature 1 with ``options`` (``step_size`` and the rest).

    ``potential`` is U itself, handed to samplers that need it (MALA). A schedule (``total_steps``) defaults to
    ``steps``. The temperature is not an option: the LLC measure is exp(-U) at temperature 1.
    """
    options = dict(options or {})
    cls = sampler_class(name)
    if "temperature" in options:
        raise ValueError("sampler_options.temperature is fixed at 1 for the LLC measure exp(-U); set nbeta instead")
    accepted = set(sampler_hyperparameters(name))
    if "total_steps" in accepted:
        options.setdefault("total_steps", steps)
    if cls.needs_potential:
        if potential is None:
            raise ValueError(f"sampler {name!r} needs the exact potential U; use estimate_llc with a potential")
        options["potential"] = potential
    if "temperature" in accepted:
        options["temperature"] = 1.0
    sampler = make_sampler(name, **options)
    adaptation = getattr(sampler, "adaptation_steps", 0)
    if burn_in < adaptation:
        raise ValueError(
            f"burn_in must be >= {adaptation}: {type(sampler).__name__} adapts for its first {adaptation} steps "
            f"(freeze_after); got burn_in={burn_in}"
        )
    return sampler


def divergence_error(sampler: Sampler, n_bad: int, chains: int, steps: int) -> SamplerDivergenceError:
    """The error for diverged chains of the LLC measure (NaN, infinite or ran away): which sampler, its step size,
    how many."""
    step_size = getattr(sampler, "step_size", None)
    at = "" if step_size is None else f" at step_size={step_size:g}"
    return SamplerDivergenceError(
        f"{type(sampler).__name__}{at}: {n_bad} of {chains} chains of the LLC measure diverged (NaN, infinite, or "
        f"ran away: lambda_c above {LLC_RUNAWAY:g} x max(median |lambda_c|, d / 2)) within {steps} steps. Try a "
        "smaller step size: SGLD is stable only for step_size < 2 / lambda_max, lambda_max the largest eigenvalue of "
        "the Hessian of U = nbeta L + localization / 2 ||w - w*||^2 where the chains go."
    )


def _values(potential: Potential, w: Tensor) -> Tensor:
    values = potential(w)
    if not isinstance(values, Tensor) or values.shape != (w.shape[0],):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"potential must map a [chains, d] tensor to [chains] values, got {got}")
    return values


def _loss_and_grad(potential: Potential, w: Tensor) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = w.detach().requires_grad_(True)
        values = _values(potential, x)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return values.detach(), grad


def estimate_llc(
    potential: Potential,
    w_star: Tensor,
    *,
    nbeta: float,
    localization: float,
    sampler: str = "sgld",
    sampler_options: dict[str, Any] | None = None,
    chains: int,
    steps: int,
    burn_in: int,
    generator: torch.Generator | None = None,
    n: int | None = None,
    on_divergence: str = "raise",
    initial: Tensor | None = None,
) -> LLCResult:
    """lambda_hat(w*) = nbeta (E_p[L] - L(w*)) from ``chains`` chains of ``steps`` steps (module docstring).

    ``potential`` maps a [chains, d] tensor to the [chains] values of L (differentiable: the gradient comes from
    autograd); ``w_star`` is a [d] tensor. ``sampler`` is a registered name and ``sampler_options`` its
    hyperparameters (``step_size`` at least; never ``temperature``). Cost: chains * steps * gradients_per_step
    gradient evaluations. ``n`` (optional) is the number of examples behind L, for the local free energy.
    A chain that turns non-finite or runs away has diverged: ``on_divergence`` raises
    :class:`~localentropy.samplers.SamplerDivergenceError` (``"raise"``) or leaves it out and counts it in the
    result's ``n_diverged`` (``"drop"``; module docstring). ``initial`` ([chains, d]) starts the chains elsewhere than
    at w* (the default, as Lau et al. and devinterp do): overdispersed starts check that the chains forget theirs.
    """
    nbeta, localization, chains, steps, burn_in = check_settings(nbeta, localization, chains, steps, burn_in)
    on_divergence = check_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES)
    if not isinstance(w_star, Tensor) or w_star.ndim != 1:
        raise ValueError("w_star must be a 1-D tensor [d]")
    w_star = w_star.detach()

    def u(w: Tensor) -> Tensor:
        return nbeta * potential(w) + 0.5 * localization * ((w - w_star) ** 2).sum(-1)

    chosen = build_sampler(sampler, sampler_options, steps, burn_in, potential=u)
    l_star = float(_values(potential, w_star[None])[0])
    if initial is not None and (not isinstance(initial, Tensor) or tuple(initial.shape) != (chains, w_star.shape[0])):
        shape = tuple(initial.shape) if isinstance(initial, Tensor) else type(initial).__name__
        raise ValueError(f"initial must be a [chains, d] = [{chains}, {w_star.shape[0]}] tensor, got {shape}")
    start = w_star.expand(chains, -1) if initial is None else initial.detach().to(w_star.dtype)
    state = chosen.init(start.clone())
    trace = torch.empty(chains, steps - burn_in, dtype=w_star.dtype)
    for k in range(steps):
        values, grad = _loss_and_grad(potential, state.position)
        if k >= burn_in:
            trace[:, k - burn_in] = values
        grad.mul_(nbeta).add_(state.position - w_star, alpha=localization)
        state = chosen.step(state, grad, generator)
    trace[~torch.isfinite(state.position).all(dim=1)] = math.nan  # a chain that left the finite range last step
    return summarise(
        trace.numpy(),
        l_star,
        nbeta=nbeta,
        localization=localization,
        sampler=sampler,
        sampler_options=dict(sampler_options or {}),
        grad_evals=chains * steps * int(chosen.gradients_per_step),
        dim=int(w_star.shape[0]),
        n=n,
        on_divergence=on_divergence,
        divergence=lambda n_bad: divergence_error(chosen, n_bad, chains, steps),
    )
