"""Parle under ``localentropy train``: one replica per rank, evaluated through the reference, checkpointed per rank.

Unlike data-parallel training (DDP, parallel.py), Parle's replicas differ by design: each steps on its own share
of every global batch with its own noise, and they meet only at Parle's all-reduce once per outer step. So the
model evaluated (and measured for flatness) is the reference x_ref, the replicas' mean, the same on every rank;
and a checkpoint holds every rank's model and optimizer state, gathered on rank 0 (the run resumes with the same
number of processes only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.training.parallel import Ranks


def put_reference(model: nn.Module, optimizer: Any) -> list[tuple[Tensor, Tensor]]:
    """Copy Parle's reference x_ref into ``model``; returns (parameter, its own weights before) to restore.

    A parameter without a reference (no step yet: every replica still holds the initial weights) is left as is.
    """
    saved = []
    with torch.no_grad():
        for p, reference in zip(model.parameters(), optimizer.reference(), strict=True):
            if reference is not None:
                saved.append((p, p.detach().clone()))
                p.copy_(reference)
    return saved


@contextlib.contextmanager
def reference_in_place(model: nn.Module, optimizer: Any) -> Iterator[nn.Module]:
    """``model`` with Parle's reference in place of this replica's weights, which are restored after."""
    saved = put_reference(model, optimizer)
    try:
        yield model
    finally:
        with torch.no_grad():
            for p, own in saved:
                p.copy_(own)


def gather_replica_states(model: nn.Module, optimizer: Any, ranks: Ranks) -> list[dict[str, Any]] | None:
    """Every rank's model and optimizer state, on rank 0 (None on the others). Not counted as communication:
    it is the checkpoint's, once per epoch, not the algorithm's."""
    mine = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
    states: list[Any] | None = [None] * ranks.world_size if ranks.writer else None
    dist.gather_object(mine, states, dst=0)
    return states


def own_replica_state(state: dict[str, Any], ranks: Ranks, checkpoint: Path) -> dict[str, Any]:
    """This rank's model and optimizer state from a Parle checkpoint; a checkpoint of another world size is refused
    (each replica's noise, reference and rho scale belong to it)."""
    replicas = state.get("replicas")
    count = "1 replica (one process)" if replicas is None else f"{len(replicas)} replicas (processes)"
    size = ranks.world_size if ranks.distributed else None
    if (replicas is None and size is None) or (replicas is not None and len(replicas) == size):
        return state if replicas is None else replicas[ranks.rank]
    raise ConfigError(
        [
            f"{checkpoint}: written by a Parle run of {count}, and this run has "
            f"{size or 1} process(es): each replica resumes its own state, so resume with the same "
            "--nproc, or start over with --force"
        ]
    )
