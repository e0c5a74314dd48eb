"""Where a training run computes and in which precision: the ``device`` and ``precision`` of a train config.

``device``: ``"auto"`` (CUDA when there is one, then Apple's MPS, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``
or ``"mps"``; the data, the model, the optimizers' state, the evaluations and the flatness measures live there.
``precision`` takes Lightning's names: ``"32-true"`` (float32 throughout), ``"bf16-mixed"`` (the forward passes of
training under ``torch.autocast`` in bfloat16; no scaler needed) and ``"16-mixed"`` (float16 autocast and a
``torch.amp.GradScaler``: the closure scales the loss, the optimizer unscales every closure call's gradients and a
step with an inf or NaN gradient is skipped, docs/optimizers.md "Mixed precision"). Evaluations run in float32.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from localentropy.experiments.core.config import ConfigError

DEVICE_RULE = '"auto", "cpu", "cuda", "cuda:N" (N a device index) or "mps"'
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?|mps")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
_DTYPES = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class DeviceUnavailableError(ConfigError):
    """The config names a device this machine does not have (exit 2 on the command line, naming it)."""

    def __init__(self, problem: str) -> None:
        super().__init__([problem])


def resolve_device(name: str) -> torch.device:
    """The torch device a config's ``device`` names on this machine; :class:`DeviceUnavailableError` if absent."""
    if not DEVICE_PATTERN.fullmatch(name):
        raise DeviceUnavailableError(f"device: expected {DEVICE_RULE}, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise DeviceUnavailableError(f'device: {name!r} is not available here ({have}); use "cpu" or "auto"')
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f'device: {name!r} is not available here (no MPS device); use "cpu" or "auto"')
    return device


class Precision:
    """The autocast context and, for ``"16-mixed"``, the gradient scaler of one optimizer's training."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name, self.device = name, device
        self.dtype = _DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "16-mixed" else None
        self._prime()

    def _prime(self) -> None:
        # GradScaler makes its scale at its first scale(); a closure calls scale() only inside the optimizer's step
        if self.scaler is not None:
            self.scaler.scale(torch.zeros((), device=self.device))

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.dtype is None:
            yield
        else:
            with torch.autocast(self.device.type, dtype=self.dtype):
                yield

    def backward(self, loss: Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: Any, closure: Callable[..., Tensor] | None = None) -> Any:
        """``optimizer.step(closure)``, through the scaler when there is one (then ``update()``)."""
        args = () if closure is None else (closure,)
        if self.scaler is None:
            return optimizer.step(*args)
        result = self.scaler.step(optimizer, *args)
        self.scaler.update()
        return result

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
            self._prime()
