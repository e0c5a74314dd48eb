"""Optimizers that build a descent direction from several closure calls and hand it to a torch optimizer.

Entropy-SGD (the local-entropy gradient from an inner sampling loop) and LPF-SGD (the gradient averaged over
random weight perturbations) both compute a direction with many closure calls and then take an ordinary
optimizer step along it. :class:`DirectionOptimizer` holds what they share: the wrapped base optimizer,
which uses the same ``param_groups`` dicts and the same per-parameter ``state`` (so LR schedulers and
``state_dict`` see one optimizer), the noise generator (saved in ``state_dict`` so that a resumed run
takes the identical next step), and the counters of outer steps and gradient evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

Closure = Callable[[], Any]


def default_generator(device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from torch's global RNG, so ``torch.manual_seed`` fixes the noise."""
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    return torch.Generator(device=device).manual_seed(seed)


class DirectionOptimizer(Optimizer):
    """Base class: subclasses implement ``_direction(closure)``, which leaves the direction in ``p.grad``
    and returns ``(loss, closure_calls)``."""

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        base_optimizer: type[Optimizer],
        base_options: dict[str, Any],
        generator: torch.Generator | None,
    ) -> None:
        super().__init__(params, defaults)
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise TypeError(f"base_optimizer must be a torch.optim.Optimizer class, got {base_optimizer!r}")
        self.base = base_optimizer(self.param_groups, **base_options)
        self._link()
        device = next(self._params()).device
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator if generator is not None else default_generator(device)

    def _link(self) -> None:
        # One set of group dicts and one state for both optimizers: schedulers, state_dict and the base step
        # all see the same numbers.
        self.base.param_groups = self.param_groups
        self.base.state = self.state

    def _params(self) -> Iterator[Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    def _group_params(self, group: dict[str, Any]) -> list[Tensor]:
        return [p for p in group["params"] if p.requires_grad]

    def _counters(self) -> dict[str, Any]:
        return self.state[next(self._params())]

    @property
    def outer_steps(self) -> int:
        """Optimizer steps taken so far (each one many closure calls)."""
        return int(self._counters().get("outer_step", 0))

    @property
    def grad_evals(self) -> int:
        """Closure calls (forward + backward passes) made so far."""
        return int(self._counters().get("grad_evals", 0))

    def _count(self, closure_calls: int) -> None:
        for p in self._params():
            state = self.state[p]
            state["outer_step"] = state.get("outer_step", 0) + 1
            state["grad_evals"] = state.get("grad_evals", 0) + closure_calls

    def _buffers(self, params: list[Tensor], key: str) -> list[Tensor]:
        """Scratch tensors shaped like ``params``, allocated once (not in state_dict: they carry nothing over)."""
        store = self.__dict__.setdefault("_scratch", {})
        buffers = store.get((key, id(params[0])))
        if buffers is None or [b.shape for b in buffers] != [p.shape for p in params]:
            buffers = [torch.empty_like(p) for p in params]
            store[(key, id(params[0]))] = buffers
        return buffers

    @staticmethod
    def _grads(params: list[Tensor]) -> list[Tensor]:
        for p in params:
            if p.grad is None:  # a parameter the loss does not use
                p.grad = torch.zeros_like(p)
        return [p.grad for p in params]

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["generator_state"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        self._link()
        if generator_state is not None:
            self.generator.set_state(generator_state)

    def _require_closure(self, closure: Closure | None) -> Closure:
        if closure is None or not callable(closure):
            raise RuntimeError(
                f"{type(self).__name__}.step needs a closure that zeroes the gradients, runs forward and backward "
                "on a fresh minibatch and returns the loss (see localentropy.entropy.make_closure)"
            )
        return closure

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:  # type: ignore[override]
        loss, closure_calls = self._direction(self._require_closure(closure))
        self.base.step()
        # Count only after the base step: optimizers such as Adam initialise a parameter's state lazily when
        # it is empty, so the counters must not be there before the first base step.
        self._count(closure_calls)
        return loss

    def _direction(self, closure: Closure) -> tuple[Any, int]:
        """Leave the direction in ``p.grad``; return the loss to report and the number of closure calls."""
        raise NotImplementedError


def check_finite_loss(flag: Tensor, loss: Any) -> None:
    """Fold "this loss is not finite" into an on-device flag without a host synchronisation."""
    if isinstance(loss, Tensor):
        torch.logical_or(flag, ~torch.isfinite(loss.detach()).all(), out=flag)
    elif loss is not None and not torch.isfinite(torch.tensor(float(loss))):
        flag.fill_(True)


class DivergenceError(FloatingPointError):
    """A loss, gradient or iterate became NaN or infinite; the parameters are left at the last finite point."""
