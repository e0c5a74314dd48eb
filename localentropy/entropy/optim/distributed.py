"""Data-parallel training with ``torch.distributed``: identical noise on every rank, a drift check, counted traffic.

Under ``DistributedDataParallel`` (DDP) every rank holds a replica of the model, reads its own share of each batch
and all-reduces the gradients, so the replicas stay equal as long as every other input to the update is equal too.
The noise of Entropy-SGD's inner loop and of LPF-SGD's perturbations is such an input: it is added to the weights,
where DDP never synchronises anything. If each rank seeds its own stream (``torch.manual_seed(seed + rank)``, the
usual recipe), the replicas drift apart silently. Hence:

* :func:`sync_noise_generators` broadcasts rank 0's generator states to every rank. Every
  :class:`~localentropy.entropy.optim.base.DirectionOptimizer` calls it at its first step (and at the first step
  after ``load_state_dict``) when a process group is initialised, so the noise is rank 0's on every rank whatever
  each rank seeded. The chunk generators of the "chunked-v1" stream are derived from the synchronised generator
  at the first step (or restored from a checkpoint, and then broadcast too).
* :class:`DriftCheck` compares the replicas every ``every`` outer steps with one all-reduce of a few float64
  checksums per parameter; a difference raises :class:`DriftError` naming the step, the parameter and the largest
  elementwise difference (found by a second, full-size all-reduce that runs only then).
* Communication is counted in payload bytes (the bytes of the tensors handed to a collective, per rank) and
  calls. :func:`counting_allreduce_hook` is a DDP communication hook that all-reduces each gradient bucket as
  DDP's default does and counts it; :meth:`CommunicationCounter.count` counts an explicit collective.

The communication protocol: an object that makes collectives of its own (an optimizer's noise broadcast, a drift
check) exposes ``communication() -> dict`` with the keys ``bytes_communicated`` and ``collective_calls``, counting
only the collectives it makes explicitly; a training loop adds these to the DDP hook's counts
(:func:`total_communication`). Payload bytes are not wire bytes: a ring all-reduce of P bytes sends
2 (n - 1) / n P bytes from each of the n ranks (docs/distributed.md).

Only ``torch.distributed`` is used here; nothing of the experiments layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def process_group_active() -> bool:
    """Whether a default process group is initialised (any world size: world size 1 runs the same code path)."""
    return dist.is_available() and dist.is_initialized()


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: NCCL takes CUDA tensors only, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclass
class CommunicationCounter:
    """Payload bytes handed to collectives by this rank, and the number of collective calls."""

    bytes_communicated: int = 0
    collective_calls: int = 0

    def count(self, payload: Tensor | int, calls: int = 1) -> None:
        """Count one collective (or ``calls``) on ``payload`` (a tensor, or a number of bytes)."""
        size = payload if isinstance(payload, int) else payload.numel() * payload.element_size()
        self.bytes_communicated += int(size)
        self.collective_calls += calls

    def communication(self) -> dict[str, int]:
        return {"bytes_communicated": self.bytes_communicated, "collective_calls": self.collective_calls}


def total_communication(*parts: Any) -> dict[str, int]:
    """The sum of ``communication()`` over ``parts``; a part without the method (torch's SGD) counts nothing."""
    total = {"bytes_communicated": 0, "collective_calls": 0}
    for part in parts:
        report = getattr(part, "communication", None)
        if callable(report):
            for key, value in report().items():
                total[key] += int(value)
    return total


def broadcast_from_rank0(tensor: Tensor, counter: CommunicationCounter | None = None) -> Tensor:
    """``tensor`` as rank 0 has it, on every rank (moved to the backend's device for the call and back)."""
    device = _collective_device()
    buffer = tensor.to(device) if tensor.device != device else tensor.clone()
    dist.broadcast(buffer, src=0)
    if counter is not None:
        counter.count(buffer)
    return buffer.to(tensor.device)


def sync_noise_generators(generators: list[torch.Generator], counter: CommunicationCounter | None = None) -> None:
    """Give every rank rank 0's state of each generator in ``generators`` (one broadcast for all of them).

    The generators must be the same kinds in the same order on every rank (an optimizer's own and its chunk
    generators are: they follow the parameters' sizes and device).
    """
    if not generators or not process_group_active():
        return
    states = [g.get_state() for g in generators]
    merged = broadcast_from_rank0(torch.cat(states), counter)
    for generator, piece in zip(generators, merged.split([s.numel() for s in states]), strict=True):
        generator.set_state(piece.contiguous())


def broadcast_generator(generator: torch.Generator, counter: CommunicationCounter | None = None) -> None:
    """Give every rank rank 0's state of ``generator``."""
    sync_noise_generators([generator], counter)


def counting_allreduce_hook(counter: CommunicationCounter) -> Any:
    """A DDP communication hook: all-reduce the bucket and divide by the world size (DDP's default), counted.

    ``ddp_model.register_comm_hook(state=None, hook=counting_allreduce_hook(counter))``.
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    def hook(state, bucket):  # type: ignore[no-untyped-def]  # no annotations: DDP checks them, and ours are strings
        counter.count(bucket.buffer())
        return default_hooks.allreduce_hook(None, bucket)  # type: ignore[arg-type]

    return hook


class DriftError(RuntimeError):
    """The replicas of a data-parallel model differ: their updates did not receive the same inputs."""


class DriftCheck:
    """Every ``every`` calls of :meth:`step`, check that ``params`` are equal on all ranks (``every=0``: never).

    The cheap check all-reduces (max) 3 float64 numbers per parameter (sum, sum of squares and a position-weighted
    sum) and their negatives: one call of 48 bytes per parameter tensor. Replicas kept equal by DDP are equal bit
    for bit (every rank applies the same all-reduced gradient); a checksum that differs between ranks by more than
    ``tolerance`` times (1 + its size) (the default 1e-12 allows only float64 rounding of the sums) raises
    :class:`DriftError` on every rank at once (they all see the same reduced numbers, so none is left waiting).
    """

    def __init__(self, params: Any, every: int, tolerance: float = 1e-12) -> None:
        if not isinstance(every, int) or every < 0:
            raise ValueError(f"every must be a non-negative integer (0: no check), got {every!r}")
        self.params = [p for p in params]
        self.every, self.tolerance = every, float(tolerance)
        self.steps = 0
        self.counter = CommunicationCounter()

    def communication(self) -> dict[str, int]:
        return self.counter.communication()

    def step(self) -> None:
        """Count one outer step; check the replicas when the count is a multiple of ``every``."""
        self.steps += 1
        if self.every and self.steps % self.every == 0 and process_group_active():
            self.check()

    @torch.no_grad()
    def check(self) -> None:
        sums = []
        for p in self.params:
            flat = p.detach().reshape(-1).to(torch.float64)
            weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)
            sums.append(torch.stack([flat.sum(), flat.square().sum(), (flat * weights).sum()]))
        local = torch.stack(sums).to(_collective_device())
        both = torch.cat([local, -local])
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        self.counter.count(both)
        spread = (both[: len(local)] + both[len(local) :]).abs()  # max - min of each checksum over the ranks
        scale = 1.0 + torch.maximum(both[: len(local)].abs(), both[len(local) :].abs())
        if bool((spread > self.tolerance * scale).any()):
            self._raise()

    def _raise(self) -> None:
        """Find the largest elementwise difference (one full-size all-reduce per parameter) and raise."""
        worst, where = 0.0, 0
        for index, p in enumerate(self.params):
            flat = p.detach().reshape(-1).to(_collective_device())
            both = torch.cat([flat, -flat])
            dist.all_reduce(both, op=dist.ReduceOp.MAX)
            self.counter.count(both)
            difference = float((both[: flat.numel()] + both[flat.numel() :]).max())
            if difference > worst:
                worst, where = difference, index
        shape = tuple(self.params[where].shape)
        raise DriftError(
            f"the data-parallel replicas differ after outer step {self.steps}: the largest difference between ranks "
            f"is {worst:.3g} (parameter {where}, shape {shape}). Every input of the update must be equal on every "
            "rank: the noise generators (synchronised at the first step of the localentropy optimizers; a "
            "generator swapped in later is not), the gradients (all-reduced by DDP: every parameter must be "
            "wrapped), and any weights changed outside the optimizer"
        )
