"""Entropy-SGD and Entropy-Adam as torch optimizers: an inner sampling loop, then a base optimizer's step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import SGD, Adam, Optimizer

from localentropy._checks import check_choice, check_int, check_nonnegative, check_positive, check_range
from localentropy.entropy.optim.base import Closure, DirectionOptimizer, DivergenceError, check_finite_loss
from localentropy.samplers import MomentumSGLD, Sampler, make_sampler

PRESETS = ("paper", "authors")
OUTER_SCALES = ("gamma", "unit")
COUPLINGS = ("inside", "after_momentum")
_UNSET: Any = object()


def _preset_sampler(preset: str, options: dict[str, Any]) -> Sampler:
    """The inner sampler of a preset, from the noise scale eps and inner step size eta' (ANCHORS.md)."""
    allowed = {"step_size", "noise_scale"} | ({"momentum"} if preset == "authors" else set())
    unknown = sorted(set(options) - allowed)
    missing = sorted({"step_size", "noise_scale"} - set(options))
    if unknown or missing:
        raise ValueError(
            f"preset={preset!r} takes sampler_options {sorted(allowed)}"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
        )
    eps = check_nonnegative("sampler_options.noise_scale", options["noise_scale"])
    if preset == "paper":  # noise sqrt(eta') eps xi: SGLD at T = eps^2 / 2
        return make_sampler("sgld", step_size=options["step_size"], temperature=eps**2 / 2)
    # The authors' Lua code: Nesterov momentum (reset every outer step), noise eps sqrt(2 eta') xi.
    # MomentumSGLD scales its noise by 1 / sqrt(1 - m) to name its target, so this is T = eps^2 (1 - m).
    momentum = check_range("sampler_options.momentum", options.get("momentum", 0.9), 0.0, 1.0, high_open=True)
    return MomentumSGLD(
        step_size=options["step_size"], momentum=momentum, nesterov=momentum > 0, temperature=eps**2 * (1 - momentum)
    )


class EntropyOptimizer(DirectionOptimizer):
    r"""Local-entropy descent under any base optimizer: Entropy-SGD, Entropy-Adam and friends.

    One ``step(closure)``, with x the current parameters and gamma_t = gamma (1 + scoping)^t (t counts
    outer steps):

    1. starting at x' = x, run the sampler for ``inner_steps`` steps on
       U(x') = f(x'; minibatch) + weight_decay/2 ||x'||^2 + gamma_t/2 ||x' - x||^2, calling ``closure`` once per
       step (it zeroes the gradients, runs forward and backward on a fresh minibatch and returns the loss),
       and average the iterates into mu (``averaging``: "uniform" or the weight alpha of the newest iterate in
       mu <- (1 - alpha) mu + alpha x', mu starting at x);
    2. put x back and hand the direction gamma_t (x - mu) (``outer_scale="gamma"``, the gradient of -F) or
       x - mu (``"unit"``, the paper's "in practice" step) to the base optimizer as the gradient.

    The closure is called exactly ``inner_steps`` times per step; ``step`` returns the first loss (the loss
    at x). ``warm_start=True``: the chains start where the previous outer step left them (x' = x'_L of that step,
    kept in the optimizer state; mu starts there too) and the sampler's momenta are kept (they are not in
    ``state_dict``: a resumed run restarts them at zero), instead of x' = x with momenta zeroed. Temperature
    rule: ``temperature`` replaces the sampler's own when given. ``coupling="after_momentum"``
    adds the coupling and the weight decay outside the sampler's momentum buffer (the authors' Lua code and PyTorch
    port; it weakens the scope to gamma (1 - m) relative to the momentum-amplified data gradient; needs a sampler whose
    ``step`` takes ``force=``, e.g. MomentumSGLD). Per-group options: lr, gamma, scoping, the base optimizer's.
    ``weight_decay`` is stored per group as ``inner_weight_decay`` (it acts inside the inner loop; the base
    optimizer's own ``weight_decay`` stays 0). Dropout and batch-norm layers run in whatever mode the model is
    in: in train mode each closure call draws a new dropout mask and updates the batch-norm running
    statistics at the perturbed weights x', i.e. ``inner_steps`` updates per outer step.

    A NaN or infinite loss or iterate is detected once per outer step (an on-device flag, one host
    synchronisation per step): the parameters are restored to x and :class:`DivergenceError` is raised.
    """

    def __init__(
        self,
        params: Any,
        base_optimizer: type[Optimizer],
        *,
        lr: float,
        gamma: float,
        sampler: Sampler | str | None = None,
        sampler_options: dict[str, Any] | None = None,
        scoping: float = 0.0,
        inner_steps: int = 20,
        temperature: float | None = None,
        averaging: str | float = _UNSET,
        weight_decay: float = 0.0,
        outer_scale: str = _UNSET,
        coupling: str = _UNSET,
        preset: str | None = None,
        warm_start: bool = False,
        generator: torch.Generator | None = None,
        **base_options: Any,
    ) -> None:
        lr = check_nonnegative("lr", lr)
        if not isinstance(warm_start, bool):
            raise ValueError(f"warm_start must be true or false, got {warm_start!r}")
        self.warm_start = warm_start
        defaults = {
            "lr": lr,
            "gamma": check_positive("gamma", gamma),
            "scoping": check_nonnegative("scoping", scoping),
            "inner_weight_decay": check_nonnegative("weight_decay", weight_decay),
        }
        self.inner_steps = check_int("inner_steps", inner_steps, 1)
        self.preset = None if preset is None else check_choice("preset", preset, PRESETS)
        options = dict(sampler_options or {})
        if self.preset is not None:
            if sampler is not None and sampler != "sgld":
                raise ValueError(f"preset={preset!r} chooses its own sampler; pass sampler=None")
            sampler = _preset_sampler(self.preset, options)
        elif isinstance(sampler, str):
            sampler = make_sampler(sampler, **options)
        elif isinstance(sampler, Sampler):
            if options:
                raise ValueError("sampler_options are for a sampler given by name; this sampler is an object")
        else:
            raise ValueError(f"sampler must be a Sampler or a registered name, got {sampler!r}")
        self.sampler = sampler if temperature is None else sampler.replace(temperature=temperature)

        preset_averaging, preset_scale = {"paper": (0.75, "gamma"), "authors": (0.25, "unit")}.get(
            self.preset or "", (0.75, "gamma")
        )
        averaging = preset_averaging if averaging is _UNSET else averaging
        if isinstance(averaging, str):
            self.averaging: str | float = check_choice("averaging", averaging, ("uniform",))
        else:
            self.averaging = check_range("averaging", averaging, 0.0, 1.0, low_open=True)
        self.outer_scale = check_choice(
            "outer_scale", preset_scale if outer_scale is _UNSET else outer_scale, OUTER_SCALES
        )
        if coupling is _UNSET:
            coupling = "after_momentum" if self.preset == "authors" else "inside"
        self.coupling = check_choice("coupling", coupling, COUPLINGS)
        if self.coupling == "after_momentum" and not isinstance(self.sampler, MomentumSGLD):
            raise ValueError(
                "coupling='after_momentum' needs a sampler with a momentum buffer and a force= input (msgld)"
            )
        super().__init__(params, defaults, base_optimizer, {"lr": lr, **base_options}, generator)

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        loss = super().step(closure)
        for p, chain in self.__dict__.pop("_new_chains", []):
            self.state[p]["warm_chain"] = chain
        return loss

    def current_gammas(self) -> list[float]:
        """gamma_t of each parameter group for the next step."""
        t = self.outer_steps
        return [group["gamma"] * (1.0 + group["scoping"]) ** t for group in self.param_groups]

    def _sampler_state(self, params: list[Tensor], keep: bool = False) -> Any:
        """The sampler's state at ``params``, as ``init`` makes it, reusing the buffers of the previous outer step.

        ``sampler.reset`` zeroes the momenta of the kept state in place: no buffer is allocated after the first
        step. With ``keep`` (a warm start) the kept state is returned as it is, momenta included. A new state is
        made when the group's trainable parameters, their shapes or the sampler changed.
        """
        store = self.__dict__.setdefault("_sampler_states", {})
        cached = store.get(id(params[0]))
        if cached is not None:
            sampler, state = cached
            if sampler is self.sampler and _same_tensors(state, params):
                return state if keep else sampler.reset(state)
        state = self.sampler.init(params)
        store[id(params[0])] = (self.sampler, state)
        return state

    def _direction(self, closure: Closure) -> Any:
        # gamma_t is paired with its group before groups without trainable parameters are dropped
        groups = [
            (g, self._group_params(g), gamma) for g, gamma in zip(self.param_groups, self.current_gammas(), strict=True)
        ]
        groups = [(g, ps, gamma) for g, ps, gamma in groups if ps]
        step_index = self.outer_steps
        device = groups[0][1][0].device
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        inner = []
        for group, params, gamma in groups:
            anchor, average = self._buffers(params, "anchor"), self._buffers(params, "average")
            torch._foreach_copy_(anchor, params)
            warm = self.warm_start and all("warm_chain" in self.state[p] for p in params)
            if warm:  # the chains go on from where the previous outer step left them
                torch._foreach_copy_(params, [self.state[p]["warm_chain"] for p in params])
            if self.averaging == "uniform":
                torch._foreach_zero_(average)
            else:
                torch._foreach_copy_(average, params)
            force = self._buffers(params, "force") if self.coupling == "after_momentum" else None
            inner.append((group, params, gamma, anchor, average, force, self._sampler_state(params, keep=warm)))

        first_loss = None
        for k in range(self.inner_steps):
            with torch.enable_grad():
                loss = closure()
            if k == 0:
                first_loss = loss
            check_finite_loss(nonfinite, loss)
            for j, (group, params, gamma, anchor, average, force, state) in enumerate(inner):
                grads = self._grads(params)
                # The extra terms of grad U go into the gradient, or after the momentum buffer (the authors' code)
                coupled = grads if force is None else force
                if force is not None:
                    torch._foreach_zero_(force)
                if group["inner_weight_decay"]:
                    torch._foreach_add_(coupled, params, alpha=group["inner_weight_decay"])
                torch._foreach_add_(coupled, params, alpha=gamma)
                torch._foreach_add_(coupled, anchor, alpha=-gamma)
                if force is None:
                    state = self.sampler.step(state, grads, self.generator)
                else:
                    state = self.sampler.step(state, grads, self.generator, force=force)
                if self.averaging == "uniform":
                    torch._foreach_add_(average, params)
                else:
                    torch._foreach_lerp_(average, params, self.averaging)
                inner[j] = (group, params, gamma, anchor, average, force, state)

        kept = self.__dict__.setdefault("_sampler_states", {})
        for _, params, _, _, _, _, state in inner:
            kept[id(params[0])] = (self.sampler, state)
        for _, _, _, _, average, _, _ in inner:
            norms = torch._foreach_norm(average)
            torch.logical_or(nonfinite, ~torch.isfinite(torch.stack(norms)).all(), out=nonfinite)
        if bool(nonfinite):  # the one host synchronisation of the step
            for _, params, _, anchor, _, _, _ in inner:
                torch._foreach_copy_(params, anchor)
            step_size = getattr(self.sampler, "step_size", None)
            raise DivergenceError(
                f"{type(self).__name__}: a non-finite loss or gradient in the inner loop of outer step {step_index} "
                f"(sampler {type(self.sampler).__name__} at step_size={step_size}: {self.sampler!r}); the parameters "
                "were restored to their values before the step. Try a smaller sampler step size (stability needs "
                "step_size < 2 / (curvature + gamma); docs/samplers.md gives each sampler's measured stable range) "
                "or a smaller lr."
            )
        for _, params, gamma, anchor, average, _, _ in inner:
            if self.warm_start:
                for p in params:
                    chain = self.state[p].get("warm_chain")
                    if chain is None:  # into the state after the base step, which may initialise it lazily
                        self.__dict__.setdefault("_new_chains", []).append((p, p.detach().clone()))
                    else:
                        chain.copy_(p)
            if self.averaging == "uniform":
                torch._foreach_mul_(average, 1.0 / self.inner_steps)
            # direction = scale * (x - mu), written into the gradients the base optimizer reads
            torch._foreach_copy_(params, anchor)
            grads = self._grads(params)
            torch._foreach_copy_(grads, anchor)
            torch._foreach_sub_(grads, average)
            if self.outer_scale == "gamma":
                torch._foreach_mul_(grads, gamma)
        return first_loss, self.inner_steps


def _same_tensors(state: Any, params: list[Tensor]) -> bool:
    """Whether ``state`` was made at exactly these tensors, and its noise buffers still fit them."""
    position = getattr(state, "position", None)
    if not isinstance(position, list) or len(position) != len(params):
        return False
    if any(a is not b for a, b in zip(position, params, strict=True)):
        return False
    noise = getattr(state, "noise", None)
    if isinstance(noise, list):
        if len(noise) != len(params):
            return False
        return all(
            n.shape == p.shape and n.dtype == p.dtype and n.device == p.device
            for n, p in zip(noise, params, strict=True)
        )
    return True


class EntropySGD(EntropyOptimizer):
    r"""Entropy-SGD (Chaudhari et al., ICLR 2017): the local-entropy direction under SGD with momentum.

    ``EntropySGD(params, lr, gamma=..., sampler="sgld", sampler_options={"step_size": 0.1, "temperature": 1e-8})``.
    The outer step is SGD (``momentum``, ``nesterov``) on gamma_t (x - mu); see :class:`EntropyOptimizer` for the
    inner loop, the temperature rule, scoping and the closure contract.

    Presets (``../shared/ANCHORS.md``; docs/optimizers.md), each given
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
