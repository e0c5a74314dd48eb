"""Run a function on n gloo processes (torch.multiprocessing, fork server) and collect what each rank saved.

The workers below are module-level so that spawned processes can import them. Each rank writes a dict with
``torch.save`` to ``out/rank{r}.pt``; :func:`run_replicas` returns those dicts in rank order.
"""

from __future__ import annotations

import io
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from localentropy.entropy.optim import Parle, ReplicaSyncError

TIMEOUT_S = 15  # the process group's timeout: a collective with a lost peer fails within it, never hangs
F64 = torch.float64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, worker: Any, out: str, options: dict) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        result = worker(rank, world_size, **options)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_replicas(worker: Any, world_size: int, out: Path, **options: Any) -> list[dict | None]:
    """``worker(rank, world_size, **options)`` on ``world_size`` gloo processes; their returned dicts by rank (None
    for a rank that exited without returning).

    The processes start from a fork server that has imported this module once (a fresh interpreter per process,
    as ``spawn``, costs seconds of imports each on a loaded 2-core machine; forking the test process itself could
    inherit torch's OpenMP threads in a bad state).
    """
    mp.set_forkserver_preload([__name__])
    mp.start_processes(
        _entry,
        args=(world_size, free_port(), worker, str(out), options),
        nprocs=world_size,
        join=True,
        start_method="forkserver",
    )
    files = [out / f"rank{r}.pt" for r in range(world_size)]
    return [torch.load(f) if f.exists() else None for f in files]


# ---------------------------------------------------------------------------------------------------------------
# Models, data shards and the optimizer under test
# ---------------------------------------------------------------------------------------------------------------


def make_model() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def shard(rank: int, n: int = 8, size: int = 5) -> list:
    """Replica ``rank``'s own minibatches."""
    g = torch.Generator().manual_seed(1000 + rank)
    return [(torch.randn(size, 4, generator=g, dtype=F64), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


class Batches:
    """A closure over fixed minibatches read in order from ``start``: the same data after a resume."""

    def __init__(self, model: nn.Module, batches: list, start: int = 0) -> None:
        self.model, self.batches, self.i = model, batches, start

    def __call__(self) -> torch.Tensor:
        inputs, targets = self.batches[self.i % len(self.batches)]
        self.i += 1
        loss = nn.functional.cross_entropy(self.model(inputs), targets)
        loss.backward()
        return loss.detach()


PAPER = {
    "lr": 0.3,
    "gamma": 0.8,
    "rho": 0.5,
    "inner_steps": 3,
    "sampler_options": {"step_size": 0.05, "temperature": 1e-3},
    "momentum": 0.5,
}
AUTHORS = {
    "lr": 0.3,
    "gamma": 0.5,
    "rho": 0.2,
    "inner_steps": 3,
    "preset": "authors",
    "batches_per_epoch": 2,
    "sampler_options": {"step_size": 0.05, "temperature": 1e-3},
}


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def flat_reference(opt: Parle) -> torch.Tensor:
    return torch.cat([r.reshape(-1) for r in opt.reference()]).clone()


def _log_reductions(opt: Parle) -> list:
    """Record every reduction's inputs and outputs (flattened) on this rank."""
    log: list = []
    reduce = opt._mean_over_replicas

    def logged(tensors, *args, **kwargs):
        means = reduce(tensors, *args, **kwargs)
        inputs = torch.cat([t.detach().reshape(-1) for t in tensors]).clone()
        log.append((inputs, torch.cat([m.reshape(-1) for m in means]).clone()))
        return means

    opt._mean_over_replicas = logged
    return log


# ---------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------


def trajectory_worker(rank: int, world_size: int, *, options: dict, steps: int, same_data: bool = False) -> dict:
    """``steps`` steps on this replica's shard; params, reference and counts after each; every reduction logged."""
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(7), **options)
    log = _log_reductions(opt)
    closure = Batches(model, shard(0 if same_data else rank))
    record: dict[str, Any] = {"x0": flat(model), "x": [], "ref": [], "comm": [], "replica_seed": opt.replica_seed}
    for _ in range(steps):
        opt.step(closure)
        record["x"].append(flat(model))
        record["ref"].append(flat_reference(opt))
        record["comm"].append(opt.communication())
    record["reductions"] = log
    record["rhos"] = opt.current_rhos()
    return record


def resume_worker(rank: int, world_size: int, *, options: dict, steps: int, save_at: int) -> dict:
    """An uninterrupted run, and one rebuilt (another seed) from the state saved after ``save_at`` steps."""
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(7), **options)
    closure = Batches(model, shard(rank))
    checkpoint = None
    for k in range(steps):
        if k == save_at:
            buffer = io.BytesIO()
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "data": closure.i}, buffer)
            checkpoint = buffer.getvalue()
        opt.step(closure)
    uninterrupted = (flat(model), flat_reference(opt), opt.communication())

    saved = torch.load(io.BytesIO(checkpoint))
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(99), **options)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    closure = Batches(model, shard(rank), start=saved["data"])
    for _ in range(save_at, steps):
        opt.step(closure)
    return {"uninterrupted": uninterrupted, "resumed": (flat(model), flat_reference(opt), opt.communication())}


def elastic_worker(rank: int, world_size: int, *, options: dict, steps: int) -> dict:
    """From one saved state, a step with rho and a step with rho = 0 (same noise): they differ by the elastic term."""
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(7), **options)
    closure = Batches(model, shard(rank))
    for _ in range(steps):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "model": model.state_dict()}, buffer)  # a copy: step() updates in place
    saved, position = torch.load(io.BytesIO(buffer.getvalue())), closure.i
    before, reference, rho = flat(model), flat_reference(opt), opt.current_rhos()[0]
    opt.step(closure)
    with_rho = flat(model)

    model.load_state_dict(saved["model"])
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(7), **options)
    opt.load_state_dict(saved["opt"])
    for group in opt.param_groups:
        group["rho"] = 0.0
    opt.step(Batches(model, shard(rank), start=position))
    return {"before": before, "reference": reference, "rho": rho, "with_rho": with_rho, "without_rho": flat(model)}


def killed_worker(rank: int, world_size: int, *, options: dict, die_after: int, steps: int) -> dict:
    """Rank 1 exits after ``die_after`` steps; rank 0 goes on and reports how its next step ended."""
    model = make_model()
    opt = Parle(model.parameters(), generator=torch.Generator().manual_seed(7), **options)
    closure = Batches(model, shard(rank))
    for k in range(steps):
        if rank == 1 and k == die_after:
            os._exit(0)  # a replica that stops without a word (killed, crashed)
        start = time.monotonic()
        try:
            opt.step(closure)
        except ReplicaSyncError as error:
            return {"error": str(error), "seconds": time.monotonic() - start, "step": k}
    return {"error": None, "seconds": 0.0, "step": steps}
