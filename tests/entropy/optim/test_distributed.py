"""Data-parallel optimizers on 2 gloo processes: identical replicas whatever each rank seeds, equal to one process
on the concatenated batches, and a drift check that fires when the noise is made to differ.

Each test spawns 2 processes (``torch.multiprocessing.spawn``, a file rendezvous: no port), which run a few outer
steps of every noise-drawing optimizer (and SAM, whose perturbation must use the all-reduced gradient) under
``DistributedDataParallel``, each rank with ``torch.manual_seed(100 + rank)`` before building its optimizer and
half of every batch. The reference is one process with rank 0's seed on the whole batches.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from localentropy.entropy import LPFSGD, EntropySGD
from localentropy.entropy.optim.chunks import SERIAL_BELOW
from localentropy.entropy.optim.distributed import (
    CommunicationCounter,
    DriftCheck,
    DriftError,
    counting_allreduce_hook,
    total_communication,
)

WORLD = 2
STEPS = 4
BATCH = 16
HIDDEN = 16384  # 12 * 16384 + 3 > SERIAL_BELOW parameters: the chunked noise stream runs too
# One process averages 16 per-example gradients; two ranks average 8 each and the all-reduce averages the two
# means: the same sum in another order, so float32 rounding (~1e-7 relative per operation) may differ.
TOLERANCE = 1e-5


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, 3))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 8, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator))
        for _ in range(64)
    ]


def _optimizer(kind: str, params: list[nn.Parameter]) -> object:
    if kind == "entropy-sgd":
        return EntropySGD(params, lr=0.1, gamma=1.0, inner_steps=3, sampler_options={"temperature": 1e-3})
    if kind == "lpf-sgd":
        return LPFSGD(params, lr=0.1, sigma=0.01, n_samples=2)
    from localentropy.experiments.training.optim import SAMStep

    return SAMStep(params, lr=0.1, rho=0.05)


def _train(kind: str, forward: nn.Module, model: nn.Module, rank: int, world: int, sync: bool = True) -> dict:
    """STEPS outer steps; the closure reads this rank's half of the next batch (``closure(reuse=True)``: the same)."""
    batches = iter(_batches())
    current: list = []
    torch.manual_seed(100 + rank)  # the usual per-rank seeding
    optimizer = _optimizer(kind, list(model.parameters()))
    if not sync:  # pretend the noise was already synchronised: each rank keeps its own stream
        optimizer._noise_synced = True
    drift = DriftCheck(model.parameters(), every=1)

    def closure(reuse: bool = False) -> torch.Tensor:
        if not reuse or not current:
            current[:] = next(batches)
        x, y = current
        x, y = x.tensor_split(world)[rank], y.tensor_split(world)[rank]
        forward.zero_grad()
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(forward(x), y)
            loss.backward()
        return loss.detach()

    error = None
    for _ in range(STEPS):
        optimizer.step(closure)
        try:
            drift.step()
        except DriftError as exc:
            error = str(exc)
            break
    params = [p.detach().clone() for p in model.parameters()]
    return {"params": params, "drift": error, "communication": total_communication(optimizer, drift)}


def _worker(rank: int, world: int, store: str, out: str, kinds: list[str], sync: bool) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        results = {}
        for kind in kinds:
            model = _model()
            counter = CommunicationCounter()
            ddp = nn.parallel.DistributedDataParallel(model)
            ddp.register_comm_hook(None, counting_allreduce_hook(counter))
            results[kind] = _train(kind, ddp, model, rank, world, sync) | {"ddp": counter.communication()}
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        # DDP's reducer holds the process group; drop it before the group is destroyed, or gloo's threads may be torn
        # down at interpreter exit, which aborts the process (SIGABRT, "terminate called without an active exception").
        results = ddp = None
        gc.collect()
        dist.destroy_process_group()


def _spawn(tmp_path: Path, kinds: list[str], sync: bool = True) -> list[dict]:
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "store"), str(tmp_path), kinds, sync), nprocs=WORLD, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_ranks_identical_with_per_rank_seeds_and_equal_to_one_process(tmp_path: Path) -> None:
    kinds = ["entropy-sgd", "lpf-sgd", "sam"]
    ranks = _spawn(tmp_path, kinds)
    assert sum(p.numel() for p in _model().parameters()) >= SERIAL_BELOW
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        for kind in kinds:
            model = _model()
            reference = _train(kind, model, model, 0, 1)  # rank 0's seed, the whole batches, no process group
            for r in range(WORLD):
                assert ranks[r][kind]["drift"] is None
                for p, q in zip(ranks[r][kind]["params"], ranks[0][kind]["params"], strict=True):
                    assert torch.equal(p, q), f"{kind}: rank {r} differs from rank 0"
            worst = max(
                float((p - q).abs().max()) for p, q in zip(ranks[0][kind]["params"], reference["params"], strict=True)
            )
            assert worst < TOLERANCE, f"{kind}: {worst:.3g} from one process on the whole batches"
            assert reference["communication"] == {"bytes_communicated": 0, "collective_calls": 0}
    parameters = sum(p.numel() for p in _model().parameters())
    grad_bytes = 4 * parameters
    passes = {"entropy-sgd": 3, "lpf-sgd": 2, "sam": 2}
    for kind in kinds:
        # every forward-backward all-reduces every gradient once, in one or more buckets
        assert ranks[0][kind]["ddp"]["bytes_communicated"] == STEPS * passes[kind] * grad_bytes
        own = ranks[0][kind]["communication"]
        drift_bytes = STEPS * 2 * 3 * 8 * 4  # 4 parameter tensors, 3 checksums and their negatives, float64
        noise_bytes = 0 if kind == "sam" else torch.Generator().get_state().numel()  # one CPU generator's state
        assert own["bytes_communicated"] == drift_bytes + noise_bytes
        assert own["collective_calls"] == STEPS + (kind != "sam")  # the drift checks, the one noise broadcast


def test_drift_check_fires_when_the_noise_differs(tmp_path: Path) -> None:
    ranks = _spawn(tmp_path, ["entropy-sgd"], sync=False)
    for r in range(WORLD):
        message = ranks[r]["entropy-sgd"]["drift"]
        assert message is not None and "after outer step 1" in message and "largest difference" in message
    difference = max(
        float((p - q).abs().max())
        for p, q in zip(ranks[0]["entropy-sgd"]["params"], ranks[1]["entropy-sgd"]["params"], strict=True)
    )
    assert difference > 0
    reported = float(ranks[0]["entropy-sgd"]["drift"].split("largest difference between ranks is ")[1].split()[0])
    assert math.isclose(reported, difference, rel_tol=1e-2)


def _nccl_worker(rank: int, store: str) -> None:
    dist.init_process_group("nccl", init_method=f"file://{store}", rank=0, world_size=1)
    try:
        torch.cuda.set_device(0)
        model = _model().cuda()
        counter = CommunicationCounter()
        ddp = nn.parallel.DistributedDataParallel(model)
        ddp.register_comm_hook(None, counting_allreduce_hook(counter))
        optimizer = EntropySGD(model.parameters(), lr=0.1, gamma=1.0, inner_steps=3)
        x, y = torch.randn(BATCH, 8, device="cuda"), torch.randint(0, 3, (BATCH,), device="cuda")

        def closure() -> torch.Tensor:
            ddp.zero_grad()
            loss = nn.functional.cross_entropy(ddp(x), y)
            loss.backward()
            return loss.detach()

        for _ in range(2):
            optimizer.step(closure)
        DriftCheck(model.parameters(), every=1).step()
        assert counter.collective_calls == 6 and optimizer.communication()["collective_calls"] == 1
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL needs a CUDA device")
def test_nccl_path_at_world_size_one(tmp_path: Path) -> None:
    mp.spawn(_nccl_worker, args=(str(tmp_path / "store"),), nprocs=1, join=True)
