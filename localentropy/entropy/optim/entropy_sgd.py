"""Entropy-SGD and Entropy-Adam as torch optimizers: the local-entropy engine under SGD or Adam."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import SGD, Adam

from localentropy._checks import check_range
from localentropy.entropy.optim.local_entropy import _UNSET, DEFAULT_SAMPLER_OPTIONS, EntropyOptimizer
from localentropy.samplers import Sampler

__all__ = ["DEFAULT_SAMPLER_OPTIONS", "EntropyAdam", "EntropyOptimizer", "EntropySGD"]


class EntropySGD(EntropyOptimizer):
    r"""Entropy-SGD (Chaudhari et al., ICLR 2017): the local-entropy direction under SGD with momentum.

    ``EntropySGD(params, lr, gamma=..., sampler="sgld", sampler_options={"step_size": 0.1, "temperature": 1e-8})``.
    The outer step is SGD (``momentum``, ``nesterov``) on gamma_t (x - mu); see :class:`EntropyOptimizer` for the
    inner loop, the temperature rule, scoping and the closure contract.

    Presets (:mod:`localentropy.entropy.presets`; docs/optimizers.md), each given
    ``sampler_options={"step_size": eta', "noise_scale": eps}``:

    * ``"paper"``: Algorithm 1 as printed: SGLD with noise sqrt(eta') eps xi (T = eps^2 / 2), alpha = 0.75,
      outer step x <- x - eta gamma (x - mu), no momentum;
    * ``"authors"``: the authors' Lua code that produced the paper's numbers: inner Nesterov momentum
      (``sampler_options["momentum"]``, default 0.9) reset every outer step, noise eps sqrt(2 eta') xi
      (T = eps^2 under plain SGLD), the coupling, weight decay and noise added after the momentum buffer
      (``coupling="after_momentum"``, as its ``entropyoptim.lua`` does: the effective scope is gamma (1 - m)),
      weight 0.25 on the newest iterate, outer step x <- x - eta (x - mu), no outer momentum.

    The PyTorch port's remaining difference is an option: ``momentum=0.9, nesterov=True`` for its outer Nesterov
    step (with ``coupling="after_momentum"`` inside). Its two bugs are not reproduced: it evaluates one extra,
    discarded gradient per step (changes no number) and never advances its scoping counter (same as
    ``scoping=0``).
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        *,
        gamma: float,
        sampler: Sampler | str | None = None,
        sampler_options: dict[str, Any] | None = None,
        scoping: float = 0.0,
        inner_steps: int = 20,
        temperature: float | None = None,
        averaging: str | float = _UNSET,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        outer_scale: str = _UNSET,
        coupling: str = _UNSET,
        preset: str | None = None,
        warm_start: bool = False,
        generator: torch.Generator | None = None,
        noise_stream: str = "chunked-v1",
        batchnorm: str = "inner",
        modules: torch.nn.Module | None = None,
    ) -> None:
        momentum = check_range("momentum", momentum, 0.0, 1.0, high_open=True)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if preset is not None and momentum:
            raise ValueError(f"preset={preset!r} has no outer momentum; use preset=None with explicit options")
        super().__init__(
            params,
            SGD,
            lr=lr,
            gamma=gamma,
            sampler=sampler,
            sampler_options=sampler_options,
            scoping=scoping,
            inner_steps=inner_steps,
            temperature=temperature,
            averaging=averaging,
            weight_decay=weight_decay,
            outer_scale=outer_scale,
            coupling=coupling,
            preset=preset,
            warm_start=warm_start,
            generator=generator,
            noise_stream=noise_stream,
            batchnorm=batchnorm,
            modules=modules,
            momentum=momentum,
            nesterov=bool(nesterov),
        )


class EntropyAdam(EntropyOptimizer):
    """Entropy-Adam (the paper's char-LSTM optimizer): the local-entropy direction under ``torch.optim.Adam``.

    The paper used Adam's beta1 = 0.5 and lr 0.01 halved each epoch; extra keyword arguments go to Adam.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        *,
        gamma: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        **options: Any,
    ) -> None:
        super().__init__(params, Adam, lr=lr, gamma=gamma, betas=betas, eps=eps, **options)
