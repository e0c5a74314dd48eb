"""Training-loop helpers: the closure that Entropy-SGD and LPF-SGD call many times per step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn


class LoaderClosure:
    """A closure that reads a fresh minibatch at every call, cycling through ``loader`` epoch after epoch.

    Each call zeroes the model's gradients, runs ``loss_fn(model(inputs), targets)`` forward and backward and
    returns the loss (detached). It counts ``calls`` and ``examples`` (forward-backward passes and the
    examples they read), and ``epochs_started``. The model's mode is left alone: in train mode dropout draws a
    new mask per call and batch-norm layers update their running statistics once per call.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        loader: Iterable[Any],
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.loader = loader
        self.device = None if device is None else torch.device(device)
        self.calls = 0
        self.examples = 0
        self.epochs_started = 0
        self._iterator: Iterator[Any] | None = None

    def _next_batch(self) -> Any:
        if self._iterator is not None:
            try:
                return next(self._iterator)
            except StopIteration:
                pass
        self._iterator = iter(self.loader)
        self.epochs_started += 1
        try:
            return next(self._iterator)
        except StopIteration:
            raise ValueError("the loader yielded no batch: it is empty") from None

    def __call__(self) -> Tensor:
        inputs, targets = self._next_batch()
        if self.device is not None:
            inputs, targets = inputs.to(self.device), targets.to(self.device)
        self.model.zero_grad(set_to_none=False)
        with torch.enable_grad():
            loss = self.loss_fn(self.model(inputs), targets)
            loss.backward()
        self.calls += 1
        self.examples += int(inputs.shape[0])
        return loss.detach()


def make_closure(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    loader: Iterable[Any],
    device: torch.device | str | None = None,
) -> LoaderClosure:
    """The closure for ``optimizer.step(closure)``: a fresh minibatch per call from a cycling ``loader``."""
    return LoaderClosure(model, loss_fn, loader, device)
