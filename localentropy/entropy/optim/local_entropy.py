"""The local-entropy optimizer engine: an inner sampling loop, then a base optimizer's step along gamma (x - mu).

:class:`EntropyOptimizer` runs the inner loop under any ``torch.optim`` base optimizer; Entropy-SGD and Entropy-Adam
(:mod:`localentropy.entropy.optim.entropy_sgd`) choose the base.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from localentropy._checks import check_choice, check_int, check_nonnegative, check_positive, check_range
from localentropy.entropy.optim.base import Closure, DirectionOptimizer, DivergenceError, check_finite_loss
from localentropy.entropy.optim.batchnorm import RunningStats
from localentropy.entropy.optim.chunks import NOISE_STREAMS
from localentropy.entropy.optim.inner import Direction, GroupLoop, GroupLoops
from localentropy.entropy.presets import OPTIMIZER_PRESETS, optimizer_preset
from localentropy.samplers import Sampler, make_sampler

PRESETS = OPTIMIZER_PRESETS

OUTER_SCALES = ("gamma", "unit")
COUPLINGS = ("inside", "after_momentum")
_UNSET: Any = object()
# The sampler when none is named: SGLD at the step size and temperature of the digits run that matches SGD's
# accuracy (docs/optimizers.md); stable while curvature + gamma < 2 / step_size = 20.
DEFAULT_SAMPLER_OPTIONS: dict[str, float] = {"step_size": 0.1, "temperature": 1e-8}


class EntropyOptimizer(DirectionOptimizer):
    r"""Local-entropy descent under any base optimizer: Entropy-SGD, Entropy-Adam and friends.

    One ``step(closure)``, with x the current parameters and gamma_t = gamma (1 + scoping)^t (t counts
    outer steps):

    1. starting at x' = x, run the sampler for ``inner_steps`` steps on
       U(x') = f(x'; minibatch) + weight_decay/2 ||x'||^2 + gamma_t/2 ||x' - x||^2, calling ``closure`` once per
       step (the gradients are set to None before each call; it runs forward and backward on a fresh
       minibatch and returns the loss),
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
    in: in train mode each closure call draws a new dropout mask and, with ``batchnorm="inner"`` (the default, as
    the authors' code), updates the batch-norm running statistics at the perturbed weights x', i.e.
    ``inner_steps`` updates per outer step; ``"frozen"`` keeps them as they were before the loop, ``"refresh"``
    also updates them once at the new x after the step (one more closure call, counted); both need
    ``modules=model`` (:mod:`localentropy.entropy.optim.batchnorm`).

    A NaN or infinite loss or iterate is detected once per outer step (an on-device flag, one host
    synchronisation per step): the parameters are restored to x and :class:`DivergenceError` is raised. Any
    other exception escaping the closure (KeyboardInterrupt, out of memory, StopIteration) also leaves the
    parameters at x (bit for bit), with the counters and the base optimizer's state unmoved; the sampler's
    momenta are dropped (a warm start goes on from the last completed step's chain). Parameters with no
    gradient after the first closure call of a step (unused by the loss) are skipped for that step, as torch's
    optimizers skip them. ``sampler=None`` (and no preset) is SGLD with ``DEFAULT_SAMPLER_OPTIONS``
    (step_size 0.1, temperature 1e-8), ``sampler_options`` overriding them.
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
        noise_stream: str = "chunked-v1",
        batchnorm: str = "inner",
        modules: torch.nn.Module | None = None,
        **base_options: Any,
    ) -> None:
        self.noise_stream = check_choice("noise_stream", noise_stream, NOISE_STREAMS)
        # what the inner loop does to the batch-norm running statistics of ``modules`` (batchnorm.py)
        self._running_stats = RunningStats(batchnorm, modules)
        self.batchnorm = self._running_stats.policy
        # each trainable group's inner loop (serial or chunked, built at its first step), the chunk generators
        # and the warm chains to store after the base step (inner.py)
        self._loops = GroupLoops(self.noise_stream)
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
        convention = None if preset is None else optimizer_preset(preset)
        self.preset = None if convention is None else convention.name
        options = dict(sampler_options or {})
        if convention is not None:
            if sampler is not None and sampler != "sgld":
                raise ValueError(f"preset={preset!r} chooses its own sampler; pass sampler=None")
            sampler = convention.build_sampler(options)
        elif sampler is None:  # the default: SGLD, with sampler_options over DEFAULT_SAMPLER_OPTIONS
            sampler = make_sampler("sgld", **{**DEFAULT_SAMPLER_OPTIONS, **options})
        elif isinstance(sampler, str):
            sampler = make_sampler(sampler, **options)
        elif isinstance(sampler, Sampler):
            if options:
                raise ValueError("sampler_options are for a sampler given by name; this sampler is an object")
        else:
            raise ValueError(f"sampler must be a Sampler or a registered name, got {sampler!r}")
        self.sampler = sampler if temperature is None else sampler.replace(temperature=temperature)

        preset_averaging, preset_scale = (
            (0.75, "gamma") if convention is None else (convention.averaging, convention.outer_scale)
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
            coupling = "inside" if convention is None else convention.coupling
        self.coupling = check_choice("coupling", coupling, COUPLINGS)
        if self.coupling == "after_momentum" and not self.sampler.accepts_force:
            raise ValueError(
                "coupling='after_momentum' needs a sampler with a momentum buffer and a force= input (msgld)"
            )
        super().__init__(params, defaults, base_optimizer, {"lr": lr, **base_options}, generator)

    def _after_base_step(self, closure: Closure) -> int:
        # a parameter's first warm chain goes into its state only now: Adam initialises a parameter's state
        # lazily when it is empty, so nothing may be there before its first base step
        for p, chain in self._loops.new_chains:
            self.state[p]["warm_chain"] = chain
        self._loops.new_chains.clear()
        if not self._running_stats.refreshes:
            return 0
        # batchnorm="refresh": the running statistics updated once, at the new x; the gradients are not used
        self._call_closure(closure, [p for _, params in self._trainable() for p in params])
        for _, params in self._trainable():
            for p in params:
                p.grad = None
        return 1

    def current_gammas(self) -> list[float]:
        """gamma_t of each parameter group for the next step."""
        t = self.outer_steps
        return [group["gamma"] * (1.0 + group["scoping"]) ** t for group in self.param_groups]

    def _noise_generators(self) -> list[torch.Generator]:
        # the chunk generators restored from a checkpoint; at a fresh start they are drawn from the synced generator
        return [*super()._noise_generators(), *self._loops.chunk_generators()]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "noise_stream": self._loops.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        streams = state_dict.pop("noise_stream", None)
        super().load_state_dict(state_dict)
        self._loops.load_state_dict(streams)

    def _direction(self, closure: Closure) -> tuple[Any, int, list[Tensor]]:
        # gamma_t is paired with its group before groups without trainable parameters are dropped
        gammas = dict(zip(map(id, self.param_groups), self.current_gammas(), strict=True))
        groups = [(g, ps, gammas[id(g)]) for g, ps in self._trainable()]
        anchors = []
        for _, params, _ in groups:
            anchors.append(self._buffers(params, "anchor"))
            torch._foreach_copy_(anchors[-1], params)
        self._running_stats.save()
        try:
            first_loss, loops = self._inner_loop(closure, groups, anchors)
        except BaseException:
            # an interrupted inner loop leaves no half-advanced sampler state (momenta) behind, and x again, whether
            # the loop diverged or was interrupted (Ctrl-C, OOM, StopIteration)
            self._loops.forget()
            self._restore(groups, anchors)
            raise
        finally:
            self._running_stats.restore()
        # x again: what a chunked loop did not put back in its last update
        self._restore(groups, anchors, skip={id(p) for loop in loops if loop.restored for p in loop.params})
        self._extend_direction(loops)
        return first_loss, self.inner_steps, [p for loop in loops for p in loop.params]

    @staticmethod
    def _restore(
        groups: list[tuple[Any, list[Tensor], float]], anchors: list[list[Tensor]], skip: Set[int] = frozenset()
    ) -> None:
        """Put every trainable parameter back at x (its anchor), but those in ``skip`` (restored already)."""
        for (_, params, _), anchor in zip(groups, anchors, strict=True):
            pairs = [(p, a) for p, a in zip(params, anchor, strict=True) if id(p) not in skip]
            if pairs:
                torch._foreach_copy_([p for p, _ in pairs], [a for _, a in pairs])

    def _extend_direction(self, loops: list[GroupLoop]) -> None:
        """A hook for subclasses, called once per step after the inner loop with the parameters back at x.

        Each loop holds its group's stepped parameters (``loop.params``), their gradients set to the direction
        scale (x - mu), and the inner average mu (``loop.average``). Parle adds its elastic term here. Raising
        leaves the parameters at x; the base optimizer does not step.
        """

    def _inner_loop(
        self, closure: Closure, groups: list[tuple[dict[str, Any], list[Tensor], float]], anchors: list[list[Tensor]]
    ) -> tuple[Any, list[GroupLoop]]:
        """The L closure calls and inner updates of every group; returns the first loss and the groups' loops,
        each with the direction in its parameters' gradients."""
        trainable = [p for _, params, _ in groups for p in params]
        warm = [self._start_chains(params) for _, params, _ in groups]
        nonfinite = torch.zeros((), dtype=torch.bool, device=trainable[0].device)
        first_loss, reached = self._call_closure(closure, trainable, track=True)
        check_finite_loss(nonfinite, first_loss)
        reached_ids = {id(p) for p, hit in zip(trainable, reached, strict=True) if hit}
        generator = self.generator
        loops: list[tuple[GroupLoop, dict[str, Any], float]] = []
        for index, ((group, params, gamma), anchor, keep) in enumerate(zip(groups, anchors, warm, strict=True)):
            # torch's rule: a parameter the backward does not reach (the loss does not use it) is skipped
            used = [i for i, p in enumerate(params) if id(p) in reached_ids]
            if not used:
                continue
            loop = self._loops.loop(
                index,
                self.sampler,
                [params[i] for i in used],
                [anchor[i] for i in used],
                after_momentum=self.coupling == "after_momentum",
                parent=generator,
            )
            loop.begin(self.averaging, keep)
            loops.append((loop, group, gamma))
        if not loops:
            raise self._no_gradient_error()

        for k in range(self.inner_steps):
            if k > 0:
                check_finite_loss(nonfinite, self._call_closure(closure, trainable)[0])
            for loop, group, gamma in loops:
                # the last step may write the direction as it goes (a chunked loop, while each chunk is in cache)
                last = k == self.inner_steps - 1
                loop.update(
                    self._grads(loop.params),
                    generator,
                    gamma=gamma,
                    weight_decay=group["inner_weight_decay"],
                    averaging=self.averaging,
                    direction=Direction(self.inner_steps, self._scale(gamma), not self.warm_start) if last else None,
                )

        for loop, _, _ in loops:
            loop.average_finite(nonfinite)
        if self._check_step(nonfinite, first_loss):  # the one host synchronisation of the step
            raise self._divergence_error()
        for loop, _, gamma in loops:
            if self.warm_start:
                self._keep_chains(loop.params)
            # direction = scale * (x - mu), written into the gradients the base optimizer reads (the parameters
            # are put back to x by _direction)
            loop.finish(inner_steps=self.inner_steps, averaging=self.averaging, scale=self._scale(gamma))
        for p in trainable:  # the base optimizer steps every parameter with a gradient: not the skipped ones
            if id(p) not in reached_ids:
                p.grad = None
        return first_loss, [loop for loop, _, _ in loops]

    def _scale(self, gamma: float) -> float | None:
        """The factor of the direction scale (x - mu): gamma_t for ``outer_scale="gamma"``, none for ``"unit"``."""
        return gamma if self.outer_scale == "gamma" else None

    def _start_chains(self, params: list[Tensor]) -> bool:
        """With a warm start, put each parameter's chain where the previous outer step left it; whether any was."""
        chains = [self.state[p].get("warm_chain") for p in params] if self.warm_start else []
        for p, chain in zip(params, chains, strict=False):
            if chain is not None:
                p.copy_(chain)
        return any(c is not None for c in chains)

    def _keep_chains(self, params: list[Tensor]) -> None:
        """Keep x'_L as each parameter's warm chain (a new one goes into the state after the base step)."""
        for p in params:
            chain = self.state[p].get("warm_chain")
            if chain is None:
                self._loops.new_chains.append((p, p.detach().clone()))
            else:
                chain.copy_(p)

    def _divergence_error(self) -> DivergenceError:
        step_size = getattr(self.sampler, "step_size", None)  # for the message only: not every sampler has one
        return DivergenceError(
            f"{type(self).__name__}: a non-finite loss or gradient in the inner loop of outer step {self.outer_steps} "
            f"(sampler {type(self.sampler).__name__} at step_size={step_size}: {self.sampler!r}); the parameters "
            "were restored to their values before the step. Try a smaller sampler step size (stability needs "
            "step_size < 2 / (curvature + gamma); docs/samplers.md gives each sampler's measured stable range) "
            "or a smaller lr. If the closure scales its loss for a torch.amp.GradScaler, step with "
            "scaler.step(optimizer, closure): optimizer.step(closure) leaves the gradients multiplied by the scale."
        )
