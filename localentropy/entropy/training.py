"""Training-loop helpers: the closures that Entropy-SGD and LPF-SGD call many times per step.

:func:`make_closure` reads a fresh minibatch from a loader at each call (a plain PyTorch loop).
:class:`SplitBatchClosure` serves the frameworks that hand the training step one batch at a time (Lightning,
accelerate): the loader's batch holds ``inner_steps`` minibatches, and each closure call takes the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

BatchLoss = Callable[[Any], Tensor]


def _tensors(batch: Any) -> list[Tensor]:
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [t for value in batch.values() for t in _tensors(value)]
    if isinstance(batch, list | tuple):
        return [t for value in batch for t in _tensors(value)]
    return []


def batch_size(batch: Any) -> int:
    """The number of examples in ``batch`` (the first dimension of its tensors, which must agree)."""
    sizes = {int(t.shape[0]) for t in _tensors(batch) if t.ndim > 0}
    if len(sizes) != 1:
        found = "no tensor with a batch dimension" if not sizes else f"batch dimensions {sorted(sizes)}"
        raise ValueError(f"a batch must hold tensors with one common first (batch) dimension; found {found}")
    return sizes.pop()


def _map_tensors(batch: Any, fn: Callable[[Tensor], Any]) -> Any:
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: _map_tensors(v, fn) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a namedtuple
        return type(batch)(*(_map_tensors(v, fn) for v in batch))
    if isinstance(batch, list | tuple):
        return type(batch)(_map_tensors(v, fn) for v in batch)
    return batch


def split_batch(batch: Any, parts: int) -> list[Any]:
    """``batch`` (a tensor, or tuples, lists and dicts of them) cut into ``parts`` consecutive minibatches along
    the first dimension (sizes differ by at most one); other values are shared by every part."""
    size = batch_size(batch)
    if size < parts:
        raise ValueError(
            f"a batch of {size} examples cannot be split into {parts} minibatches; make the loader's batch size "
            f"inner_steps x minibatch size (here at least {parts}), and use drop_last=True"
        )
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    return [_map_tensors(batch, lambda t, a=a, b=b: t[a:b]) for a, b in pairwise(bounds)]


def _default_batch_loss(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor]) -> BatchLoss:
    def batch_loss(batch: Any) -> Tensor:
        if not (isinstance(batch, list | tuple) and len(batch) == 2):
            shape = f"a {type(batch).__name__}"
            if isinstance(batch, Mapping):
                shape += f" with keys {sorted(map(str, batch))}"
            elif isinstance(batch, list | tuple):
                shape += f" of length {len(batch)}"
            raise TypeError(
                f"make_closure(model, loss_fn, loader) reads (inputs, targets) batches, got {shape}; for other "
                "batches pass batch_loss=fn, where fn(batch) returns the loss"
            )
        inputs, targets = batch
        return loss_fn(model(inputs), targets)

    return batch_loss


class LoaderClosure:
    """A closure that reads a fresh minibatch at every call, cycling through ``loader`` epoch after epoch.

    Each call zeroes the model's gradients (to None), computes the loss of the next batch (by default
    ``loss_fn(model(inputs), targets)`` for an ``(inputs, targets)`` batch; any batch with ``batch_loss``), runs
    backward and returns the loss (detached). It counts ``calls`` and ``examples`` (forward-backward passes and
    the examples they read), and ``epochs_started``. The model's mode is left alone: in train mode dropout draws
    a new mask per call and batch-norm layers update their running statistics once per call.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
        loader: Iterable[Any],
        device: torch.device | str | None = None,
        batch_loss: BatchLoss | None = None,
    ) -> None:
        if batch_loss is None:
            if loss_fn is None:
                raise ValueError("make_closure needs loss_fn (for (inputs, targets) batches) or batch_loss")
            batch_loss = _default_batch_loss(model, loss_fn)
        self.model = model
        self.loss_fn = loss_fn
        self.batch_loss = batch_loss
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
        batch = self._next_batch()
        if self.device is not None:
            batch = _map_tensors(batch, lambda t: t.to(self.device))
        self.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = self.batch_loss(batch)
            loss.backward()
        self.calls += 1
        self.examples += batch_size(batch)
        return loss.detach()


def make_closure(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None,
    loader: Iterable[Any],
    device: torch.device | str | None = None,
    batch_loss: BatchLoss | None = None,
) -> LoaderClosure:
    """The closure for ``optimizer.step(closure)``: a fresh minibatch per call from a cycling ``loader``.

    Batches are ``(inputs, targets)`` pairs, or anything (dicts, tuples of several tensors) with
    ``batch_loss=fn``, ``fn(batch)`` returning the loss (``loss_fn`` may then be None). ``device`` moves every
    tensor of a batch.
    """
    return LoaderClosure(model, loss_fn, loader, device, batch_loss)


class SplitBatchClosure:
    """A closure over one large batch: call k computes the loss of the k-th of ``parts`` minibatches.

    For frameworks that hand the training step one batch (Lightning, accelerate): give the loader a batch size
    of ``inner_steps`` x minibatch size and pass ``SplitBatchClosure(batch, opt.inner_steps, batch_loss)`` to
    ``opt.step``, so every inner step gets a fresh minibatch. ``batch_loss(minibatch)`` returns the loss;
    ``backward(loss)`` runs backward (default ``loss.backward()``; ``self.manual_backward`` in Lightning,
    ``accelerator.backward`` in accelerate). ``micro_batches=m`` accumulates each minibatch's gradient over m
    slices (one backward each, weighted by their sizes): gradient accumulation inside an inner step, for
    minibatches that do not fit in memory at once. With ``model``, its gradients are set to None at the start
    of every call (for use with other optimizers: this library's zero them before every call). A call beyond
    the last minibatch raises ``RuntimeError``. ``losses`` holds every call's loss (detached): ``losses[0]`` is
    the loss at x that ``opt.step`` returns, for wrappers that drop the return value (accelerate's
    ``AcceleratedOptimizer.step`` returns None).
    """

    def __init__(
        self,
        batch: Any,
        parts: int,
        batch_loss: BatchLoss,
        backward: Callable[[Tensor], Any] | None = None,
        micro_batches: int = 1,
        model: nn.Module | None = None,
    ) -> None:
        if not (isinstance(micro_batches, int) and micro_batches >= 1):
            raise ValueError(f"micro_batches must be an integer >= 1, got {micro_batches!r}")
        self.minibatches = split_batch(batch, parts)
        # the minibatches of every batch the closure reads: one batch here, several in over_batches
        self._sources = [self.minibatches]
        self.batch_loss = batch_loss
        self.backward = backward if backward is not None else Tensor.backward
        self.micro_batches = micro_batches
        self.model = model
        self.calls = 0
        self.losses: list[Tensor] = []

    @classmethod
    def over_batches(
        cls,
        batches: Sequence[Any],
        parts: int,
        batch_loss: BatchLoss,
        backward: Callable[[Tensor], Any] | None = None,
        micro_batches: int = 1,
        model: nn.Module | None = None,
    ) -> SplitBatchClosure:
        """Gradient accumulation over several loader batches (a framework's accumulation window): call k takes the
        k-th of the ``parts`` minibatches of every batch, one backward per slice, each weighted by its share of
        the call's examples, so the gradient is that of the union of the k-th minibatches."""
        if not batches:
            raise ValueError("SplitBatchClosure.over_batches needs at least one batch")
        closure = cls(batches[0], parts, batch_loss, backward, micro_batches, model)
        closure._sources += [split_batch(batch, parts) for batch in batches[1:]]
        return closure

    def __call__(self) -> Tensor:
        if self.calls >= len(self.minibatches):
            raise RuntimeError(
                f"SplitBatchClosure: all {len(self.minibatches)} minibatches of the batch are used; the optimizer "
                "calls the closure inner_steps times per step, so split the batch into inner_steps parts"
            )
        pieces = [piece for source in self._sources for piece in split_batch(source[self.calls], self.micro_batches)]
        self.calls += 1
        if self.model is not None:
            self.model.zero_grad(set_to_none=True)
        size = sum(batch_size(piece) for piece in pieces)
        total = None
        with torch.enable_grad():
            for piece in pieces:
                loss = self.batch_loss(piece) * (batch_size(piece) / size)
                self.backward(loss)
                total = loss.detach() if total is None else total + loss.detach()
        assert total is not None
        self.losses.append(total)
        return total
