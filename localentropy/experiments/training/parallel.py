"""Data-parallel ``localentropy train``: the launch, the ranks, the DDP wrapper and the decisions rank 0 shares.

``localentropy train CONFIG --nproc N`` (N > 1) validates the config, prepares and locks the run directory in the
launching process, then starts N local processes with torch's own launcher
(``python -m torch.distributed.run --standalone --nproc-per-node N -m localentropy train CONFIG ...``, under a
lifeline that ends it and its ranks when the launching process dies) and waits.
Each process finds the launcher's environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), so the same command runs under ``torchrun`` directly, on one
machine or many; then rank 0 prepares and locks the run directory itself. Only rank 0 writes files; the other ranks
learn rank 0's decisions (fresh / resume / skip, which optimizers are done, the checkpoint to resume from) through
``broadcast_object_list``. The results and ``COMPLETE`` are written after a barrier that every rank reaches only
when all have finished, so a run with a dead rank is never marked complete.

The backend follows the config's device: gloo for ranks on the CPU, nccl for ranks on CUDA (each rank on its own
GPU, ``cuda:LOCAL_RANK``). The optimizers' own synchronisation (:mod:`localentropy.entropy.optim.distributed`) moves
its tensors to the backend's device for each collective.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from localentropy.entropy.optim.distributed import CommunicationCounter, counting_allreduce_hook
from localentropy.experiments.core.lifeline import lifeline_command
from localentropy.experiments.core.rundir import RunDirectory, RunDirectoryError

PREPARED_ENV = "LOCALENTROPY_RUN_PREPARED"  # set by `train --nproc`: it holds the lock; the value is the state
FAULT_ENV = "LOCALENTROPY_FAULT_EXIT"  # "RANK:STEP": that rank exits with status 3 after that step (for tests)
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT = 60.0
DEFAULT_DRIFT_CHECK = 100


class RankFailedError(RuntimeError):
    """A rank of a data-parallel run failed; the run directory is not complete."""


def backend_for(device: torch.device) -> str:
    """The torch.distributed backend for ranks on ``device``: nccl for CUDA, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def under_launcher() -> bool:
    """Whether this process was started by torch's launcher (torchrun / torch.distributed.run) as one rank."""
    return all(name in os.environ for name in LAUNCHER_VARIABLES)


@dataclass
class Ranks:
    """This process's place in the run: rank, world size, the drift-check period. The default: one process."""

    rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    drift_every: int = 0
    timeout: float = DEFAULT_TIMEOUT
    distributed: bool = False

    @property
    def writer(self) -> bool:
        """Whether this rank writes the run directory (rank 0)."""
        return self.rank == 0

    @classmethod
    def start(
        cls,
        timeout: float = DEFAULT_TIMEOUT,
        drift_every: int = DEFAULT_DRIFT_CHECK,
        device: torch.device | None = None,
    ) -> Ranks:
        """Join the process group the launcher's environment describes (``timeout`` seconds per collective).

        The backend is :func:`backend_for` ``device`` (the CPU by default): nccl for a CUDA device, which becomes
        this process's current device first (nccl's object collectives and barriers use the current device).
        """
        device = device if device is not None else torch.device("cpu")
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout))
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.get_world_size()))
        ranks = cls(dist.get_rank(), dist.get_world_size(), local, drift_every, timeout, True)
        return ranks

    def stop(self) -> None:
        if self.distributed and dist.is_initialized():
            # A DDP wrapper left in a reference cycle keeps the group alive past destroy_process_group; gloo's threads
            # are then torn down at interpreter exit, which aborts the process (SIGABRT) after its work is done.
            gc.collect()
            dist.destroy_process_group()

    def threads(self, configured: int) -> int:
        """torch threads: the config's for one process; the machine's cores shared among the local ranks."""
        if not self.distributed:
            return configured
        return max(1, (os.cpu_count() or 1) // self.local_world_size)

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if not self.distributed:
            return value
        box = [value if self.writer else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def prepare(self, out_dir: RunDirectory, resolved: dict[str, Any], force: bool) -> str:
        """Rank 0 prepares the directory (unless the launching process did: it holds the lock); all learn the state."""
        state, error = None, None
        if self.writer:
            state = os.environ.get(PREPARED_ENV) if self.distributed else None
            if state is None:
                try:
                    state = out_dir.prepare(resolved, force=force)
                except RunDirectoryError as exc:
                    if not self.distributed:
                        raise
                    error = str(exc)
        state, error = self.share((state, error))
        if error is not None:
            raise RunDirectoryError(error)
        return state

    def wrap(self, model: nn.Module, counter: CommunicationCounter) -> nn.Module:
        """The module to run forward and backward through: ``model`` itself, or DDP around it with counted traffic.

        BatchNorm stays per rank on every backend (``SyncBatchNorm`` takes CUDA tensors only, and one behaviour for
        both backends keeps their numbers comparable): each rank normalises by its own share's statistics, and DDP
        broadcasts rank 0's running statistics before every training forward (counted here: one coalesced broadcast
        of the buffers).
        """
        if not self.distributed:
            return model
        device = next(model.parameters()).device
        ids = [device.index] if device.type == "cuda" else None  # one GPU per rank
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids)  # buffers synced from rank 0 each forward
        ddp.register_comm_hook(None, counting_allreduce_hook(counter))
        buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())

        def count_buffers(module: nn.Module, args: Any) -> None:
            if module.training and torch.is_grad_enabled():
                counter.count(buffer_bytes)

        if buffer_bytes:
            ddp.register_forward_pre_hook(count_buffers)
        return ddp

    def fault_point(self, step: int) -> None:
        """The test hook: exit this rank abruptly after optimizer step ``step`` when ``FAULT_ENV`` names it."""
        target = os.environ.get(FAULT_ENV)
        if target and self.distributed and target == f"{self.rank}:{step}":
            print(f"rank {self.rank}: exiting at step {step} ({FAULT_ENV}={target})", file=sys.stderr, flush=True)
            os._exit(3)


def launch_command(
    config_path: Path,
    out: Path,
    nproc: int,
    drift_every: int,
    timeout: float,
    overrides: dict[str, str] | None = None,
) -> list[str]:
    """The torch.distributed.run command line that starts ``nproc`` ranks of ``localentropy train``.

    ``overrides`` (``device``, ``precision``): the command line's values, passed on to every rank.
    The launcher runs under a lifeline to this process (:mod:`localentropy.experiments.core.lifeline`): this
    process killed with SIGKILL cannot stop it, so the kernel kills it, and its ranks die with it (``run_rank``).
    Not SIGTERM: a rank stopped by the launcher's SIGTERM can take the launcher's whole grace period (30 s) to
    exit, and with no one left to report to, a graceful stop buys nothing (the run resumes from its checkpoints)."""
    passed = [part for key, value in (overrides or {}).items() for part in (f"--{key}", value)]
    ranks = ["-m", "localentropy", "train", str(config_path), "--out", str(out), "--quiet", *passed]
    settings = ["--drift-check", str(drift_every), "--dist-timeout", str(timeout)]
    launcher = ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0"]
    return lifeline_command("torch.distributed.run", [*launcher, *ranks, *settings])


def run_ranks(command: list[str], state: str, out: Path, output: Path | None = None) -> None:
    """Run the launcher and wait; a failed rank (or an interrupt) stops all of them and raises RankFailedError.

    With ``output``, the launcher's and the ranks' stdout and stderr go to that file instead of this process's."""
    env = {**os.environ, PREPARED_ENV: state}
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(open(output, "w")) if output is not None else None
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT if sink else None)
        _wait(process, out, "above" if output is None else f"in {output}")


def _wait(process: subprocess.Popen, out: Path, where: str) -> None:
    try:
        status = process.wait()
    except BaseException:  # ^C or SIGTERM here: the launcher forwards SIGTERM to its ranks and stops them
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    if status != 0:
        raise RankFailedError(
            f"a rank of the data-parallel run failed (the launcher exited with status {status}; the failing rank's "
            f"message is {where}) and every rank was stopped; {out} is not marked complete: fix the cause and run the "
            "same command again to resume from the last epoch checkpoints"
        )
