"""The training minibatches of ``localentropy train`` (whole, or one rank's share of each) and the evaluation pass."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from localentropy.data import ArrayData
from localentropy.experiments.core.seeds import stable_seed
from localentropy.experiments.training.precision import Precision
from localentropy.experiments.training.text import clip_gradients


class BatchStream:
    """The training minibatches in a seeded order, resumable from (data epoch, position), and counted.

    ``closure()`` zeroes the gradients, runs the model forward and backward on the next minibatch and returns
    the detached loss; ``closure(reuse=True)`` does so on the previous minibatch again (SAM's second pass).
    Pass ``e`` over the data uses the permutation seeded by (seed, e): the same for every optimizer. ``calls``
    counts forward-backward passes, ``examples`` the examples they read.

    Data-parallel (``shard=(rank, world_size)``, world size > 1): ``batch_size`` is the global batch. Every rank
    draws the same global batch and keeps its contiguous share (``tensor_split``: sizes differ by at most one); its
    loss is the mean over its share times share / (global batch / world size), so that DDP's average of the ranks'
    gradients is the gradient of the mean over the global batch (a rank with an empty share contributes zero).
    ``examples`` counts the global batch: the examples all ranks read together.

    Replicas (``averaged=False``: Parle, one replica per rank, no gradient all-reduce): the same shares, each rank's
    loss the plain mean over its own share (its gradient is its replica's alone). The ranks' shares of one global
    batch are disjoint and each pass over the data re-partitions them (as ``DistributedSampler`` with a new epoch).
    """

    def __init__(
        self,
        model: nn.Module,
        data: ArrayData,
        batch_size: int,
        seed: int,
        clip_grad_norm: float | None = None,
        shard: tuple[int, int] = (0, 1),
        averaged: bool = True,
        precision: Precision | None = None,
    ) -> None:
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        # autocast and, for float16, the loss scaling (precision.py); None: float32
        self.precision = precision
        self.rank, self.world_size = shard
        self.averaged = averaged
        self.clip_grad_norm = clip_grad_norm
        self.data_epoch = 0
        self.position = 0
        self.calls = 0
        self.examples = 0
        self._order: Tensor | None = None
        self._batch: tuple[Tensor, Tensor, int] | None = None

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def _permutation(self) -> Tensor:
        if self._order is None:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, "minibatch order", self.data_epoch))
            self._order = torch.randperm(len(self.data), generator=generator)
        return self._order

    def _next(self) -> tuple[Tensor, Tensor, int]:
        if self.position >= self.batches_per_pass:
            self.data_epoch, self.position, self._order = self.data_epoch + 1, 0, None
        index = self._permutation()[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        index = index.to(self.data.x.device)
        self.position += 1
        size = int(index.numel())
        if self.world_size > 1:
            index = index.tensor_split(self.world_size)[self.rank]
        return self.data.x[index], self.data.y[index], size

    def _loss(self, logits: Tensor, targets: Tensor, size: int) -> Tensor:
        if self.world_size == 1:
            return nn.functional.cross_entropy(logits, targets)
        if targets.numel() == 0:  # zero gradients, but every parameter in the graph (DDP waits for all of them)
            return logits.sum() * 0.0
        if not self.averaged:
            return nn.functional.cross_entropy(logits, targets)
        share = targets.numel() * self.world_size / size  # exactly 1.0 when the batch splits evenly
        return nn.functional.cross_entropy(logits, targets) * share

    def __call__(self, reuse: bool = False) -> Tensor:
        if not reuse or self._batch is None:
            self._batch = self._next()
        inputs, targets, size = self._batch
        self.model.zero_grad(set_to_none=False)
        with torch.enable_grad():
            if self.precision is None:
                loss = self._loss(self.model(inputs), targets, size)
                loss.backward()
            else:
                with self.precision.autocast():
                    loss = self._loss(self.model(inputs), targets, size)
                self.precision.backward(loss)
        clip_gradients(self.model, self.clip_grad_norm)
        self.calls += 1
        self.examples += size
        return loss.detach()

    def state_dict(self) -> dict[str, int]:
        return {
            "data_epoch": self.data_epoch,
            "position": self.position,
            "calls": self.calls,
            "examples": self.examples,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.data_epoch, self.position = int(state["data_epoch"]), int(state["position"])
        self.calls, self.examples = int(state["calls"]), int(state["examples"])
        self._order, self._batch = None, None


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayData | None, batch_size: int) -> tuple[float | None, float | None]:
    """(mean cross-entropy, error rate) in eval mode; (None, None) without data or when not finite."""
    if data is None or len(data) == 0:
        return None, None
    was_training = model.training
    model.eval()
    total_loss, wrong = 0.0, 0
    try:
        for start in range(0, len(data), batch_size):
            x, y = data.x[start : start + batch_size], data.y[start : start + batch_size]
            logits = model(x)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            wrong += int((logits.argmax(1) != y).sum())
    finally:
        model.train(was_training)
    loss = total_loss / len(data)
    return (loss if math.isfinite(loss) else None), wrong / len(data)
