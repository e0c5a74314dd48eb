"""The sampler contract that every inner-loop sampler follows, built-in or user-written.

A sampler targets the density proportional to exp(-U(x) / T) for a potential U and a temperature T >= 0.
It is a small object in the optax / blackjax style:

* constructed from keyword hyperparameters, validated once, there;
* ``init(position)`` returns a state, a plain ``NamedTuple`` whose ``position`` field is the current point;
* ``step(state, grad, generator=None, *, noise=None)`` advances the state given ``grad``, the gradient of U
  at ``state.position``, and returns the new state.

Built-in samplers update ``state.position`` (and their other buffers) **in place** and return a state that
shares those tensors: ``init`` does not copy, so a network's parameters can be the position. Clone first
if you need the starting point kept. Every subclass's ``step`` runs under ``torch.no_grad()``.

A position is either one tensor whose leading dimension indexes independent chains, shape
``(n_chains, ...)``, or a list of tensors (a network's parameters). Both go through the same code path
(a list of tensors updated with ``torch._foreach_*``), so given the same noise they agree exactly.

``noise`` selects the distribution of the injected noise: ``"gaussian"`` (N(0, 1)) or ``"rademacher"``
(+-1 with equal probability: same mean and variance, enough for Langevin schemes of weak order one).
The noise is drawn into buffers allocated once by ``init`` from the caller's ``generator``; ``step``
accepts ``noise=`` (same structure as the position) to use given noise instead, which tests use to
compare code paths. At T = 0 no noise is drawn and each sampler is its matching optimiser.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import torch
from torch import Tensor

from localentropy._checks import check_choice, check_nonnegative

Position = Tensor | list[Tensor]
NOISE_KINDS = ("gaussian", "rademacher")


def as_tensor_list(value: Position, field: str = "position") -> list[Tensor]:
    """View a position-like value (one tensor or a list/tuple of tensors) as a list of tensors."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, Tensor) for t in value):
        return list(value)
    raise TypeError(f"{field} must be a tensor or a non-empty list of tensors, got {type(value).__name__}")


def check_like(value: Position, reference: list[Tensor], field: str) -> list[Tensor]:
    """``value`` as a tensor list with the same number of tensors and shapes as ``reference``."""
    tensors = as_tensor_list(value, field)
    if len(tensors) != len(reference) or any(t.shape != r.shape for t, r in zip(tensors, reference, strict=False)):
        got = [tuple(t.shape) for t in tensors]
        want = [tuple(r.shape) for r in reference]
        raise ValueError(f"{field} must match the position's shapes {want}, got {got}")
    return tensors


def draw_noise(buffers: list[Tensor], kind: str, generator: torch.Generator | None) -> list[Tensor]:
    """Fill ``buffers`` in place with i.i.d. noise of mean 0 and variance 1 and return them."""
    if kind == "gaussian":
        for buffer in buffers:
            buffer.normal_(generator=generator)
    else:
        for buffer in buffers:
            buffer.random_(0, 2, generator=generator)
        torch._foreach_mul_(buffers, 2.0)
        torch._foreach_add_(buffers, -1.0)
    return buffers


class Sampler(ABC):
    """Base class of samplers. Subclasses store each constructor argument under the same attribute name."""

    name: ClassVar[str] = ""
    temperature: float
    noise: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Samplers update positions in place and are never differentiated through: a network's parameters
        # (leaves that require grad) can be the position without the caller wrapping each step in no_grad.
        if "step" in cls.__dict__ and not getattr(cls.step, "_no_grad_wrapped", False):
            step = torch.no_grad()(cls.__dict__["step"])
            step._no_grad_wrapped = True  # type: ignore[attr-defined]
            cls.step = step  # type: ignore[method-assign]

    def _check_common(self, temperature: float, noise: str) -> None:
        self.temperature = check_nonnegative("temperature", temperature)
        self.noise = check_choice("noise", noise, NOISE_KINDS)

    @abstractmethod
    def init(self, position: Position) -> Any:
        """A fresh state at ``position`` (not copied)."""

    @abstractmethod
    def step(
        self,
        state: Any,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> Any:
        """Advance ``state`` one step given the gradient of U at ``state.position``."""

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments as this sampler holds them."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def replace(self, **changes: Any) -> Self:
        """A new sampler of the same kind with some hyperparameters changed (validated again)."""
        return type(self)(**{**self.hyperparameters, **changes})

    def _noise(
        self,
        buffers: list[Tensor],
        positions: list[Tensor],
        noise: Position | None,
        generator: torch.Generator | None,
    ) -> list[Tensor]:
        if noise is not None:
            return check_like(noise, positions, "noise")
        return draw_noise(buffers, self.noise, generator)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.hyperparameters == other.hyperparameters  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.hyperparameters.items()))))


def new_buffers(positions: list[Tensor]) -> list[Tensor]:
    return [torch.empty_like(p) for p in positions]


def zero_buffers(positions: list[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(p) for p in positions]
