"""The Entropy-SGD inner update split into fixed chunks, each with its own noise stream, run on all cores.

Why: on a CPU the inner step of Entropy-SGD is the gradient (G) plus one serial ``normal_`` draw over every
parameter (for a 1.9 M-parameter MLP about 0.8 G) plus a few elementwise passes; torch draws the noise and runs
those passes on one core while the others wait. Here the concatenated parameters of a group are cut into chunks
of ``CHUNK_SIZE`` entries (the last one shorter); each chunk has its own ``torch.Generator``, and a small pool of
threads draws each chunk's noise and applies the whole inner update to it (coupling, sampler step, averaging).
torch releases the GIL inside its kernels, so the chunks run in parallel.

Determinism: the chunking depends only on the parameters' sizes and each chunk's noise only on its own generator,
so the numbers do not depend on the number of threads or on which thread ran a chunk. Only Gaussian noise is
chunked (Rademacher bits are cheap enough serially). A group smaller than
``SERIAL_BELOW`` entries is not chunked at all: threads do not pay there, and it draws from the optimizer's own
generator exactly as the serial stream does (so small models give the numbers of earlier versions).

Streams: the chunk generators are made once, at the first step, from one draw of the optimizer's generator (a
numpy ``SeedSequence`` spreads it into distinct 32-bit seeds: torch's CPU generator keeps only 32 bits of a seed,
so seeds s and s + 2^32 would give the same stream), and are advanced from then on, never re-seeded; their states
go into ``state_dict``. This is noise stream ``"chunked-v1"``; ``"serial-v0"``, the stream of earlier versions
(one generator drawn in parameter order), stays available. On CUDA torch's own Philox generator already draws in
parallel: the serial stream is used there.

Only samplers that declare ``elementwise = True`` (each coordinate's update reads only that coordinate's
state) run chunk by chunk; for the others (a thermostat or an acceptance test couples all coordinates) the noise
is still drawn chunk-parallel into a full buffer and the update runs on the whole group.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch
from torch import Tensor

from localentropy.samplers import Sampler

CHUNK_SIZE = 2**18
SERIAL_BELOW = 2**17
NOISE_STREAMS = ("chunked-v1", "serial-v0")
DEFAULT_NOISE_STREAM = NOISE_STREAMS[0]

Slice = tuple[int, int, int]  # (tensor index, first entry, one past the last entry) of the flattened tensor


def chunk_plan(
    numels: Sequence[int], chunk_size: int = CHUNK_SIZE, serial_below: int = SERIAL_BELOW
) -> list[list[Slice]]:
    """Cut tensors with ``numels`` entries, concatenated in order, into chunks of ``chunk_size`` entries.

    Each chunk is a list of slices of the tensors; together they cover every entry once, in order. A total below
    ``serial_below`` is one chunk.
    """
    total = sum(numels)
    size = total if total < serial_below else chunk_size
    chunks: list[list[Slice]] = []
    current: list[Slice] = []
    room = size
    for index, numel in enumerate(numels):
        start = 0
        while start < numel:
            take = min(room, numel - start)
            current.append((index, start, start + take))
            start += take
            room -= take
            if room == 0:
                chunks.append(current)
                current, room = [], size
    if current or not chunks:
        chunks.append(current)
    return chunks


def slice_views(tensors: Sequence[Tensor], slices: list[Slice]) -> list[Tensor]:
    """Views of ``tensors`` for one chunk: the tensor itself where the slice covers all of it."""
    views = []
    for index, start, stop in slices:
        t = tensors[index]
        views.append(t if start == 0 and stop == t.numel() else t.view(-1)[start:stop])
    return views


def chunk_seeds(entropy: int, count: int) -> list[int]:
    """``count`` distinct 32-bit seeds spread from ``entropy`` by numpy's SeedSequence (deterministic)."""
    words = np.random.SeedSequence(entropy).generate_state(count + 16, np.uint32)
    seeds: list[int] = []
    for word in words.tolist():
        if word not in seeds:
            seeds.append(word)
        if len(seeds) == count:
            return seeds
    raise RuntimeError("could not spread the seed into distinct chunk seeds")  # pragma: no cover (16 spares)


def chunk_generators(parent: torch.Generator, count: int) -> list[torch.Generator]:
    """``count`` CPU generators seeded from one 63-bit draw of ``parent`` (which advances by that one draw)."""
    entropy = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64, generator=parent, device=parent.device))
    return [torch.Generator().manual_seed(seed) for seed in chunk_seeds(entropy, count)]


_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_POOL_LOCK = threading.Lock()


def _single_threaded_worker() -> None:
    """Make this pool thread run torch's kernels on one thread (its chunk is its share of the cores).

    torch keeps the intra-op thread count per thread (OpenMP's ICV) and sets it lazily at a thread's first
    parallel kernel from a process-wide value: run one such kernel first, then set this thread's count to one.
    """
    torch.ones(1 << 16).add_(1)
    torch.set_num_threads(1)


def _pool() -> ThreadPoolExecutor | None:
    """A pool with one single-threaded worker per intra-op thread of the caller; None when that is one thread.

    The numbers never depend on the pool's size (each chunk has its own generator); the size follows
    ``torch.get_num_threads()`` so that the inner update uses the cores the user gave torch, no more.
    """
    global _POOL, _POOL_SIZE
    size = torch.get_num_threads()
    if size <= 1:
        return None
    with _POOL_LOCK:
        if _POOL is None or size != _POOL_SIZE:
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="localentropy-chunks")
            ready = threading.Barrier(size + 1)

            def start() -> None:
                _single_threaded_worker()
                ready.wait()

            for _ in range(size):  # every worker starts now (a barrier: no worker can take two of these)
                pool.submit(start)
            ready.wait()
            torch.set_num_threads(size)  # the workers' setting changed the process-wide default: put it back
            _POOL, _POOL_SIZE = pool, size
        return _POOL


def run_chunks(work: Callable[[int], Any], count: int) -> list[Any]:
    """``work(k)`` for k < count under ``torch.no_grad()``, on the pool's threads when there are several chunks.

    Grad mode is per thread in torch, so the pool's threads set it themselves. Exceptions propagate, the first in
    chunk order, once every chunk has ended; an interruption of the caller (Ctrl-C) propagates once the chunks
    already running have ended: the caller may then put the parameters back without a worker still writing.
    """

    @torch.no_grad()
    def run(k: int) -> Any:
        return work(k)

    pool = _pool() if count > 1 else None
    if pool is None:
        return [run(k) for k in range(count)]
    futures: list[Future[Any]] = []
    try:
        futures.extend(pool.submit(run, k) for k in range(count))
        wait(futures)
    except BaseException:  # the caller interrupted (Ctrl-C): the chunks not started never start
        for future in futures:
            future.cancel()
        wait(futures)
        raise
    return [future.result() for future in futures]  # after every chunk ended, so no worker writes any more


def run_pipelined(draw: Callable[[int, int], Any], work: Callable[[int, Any], Any], count: int) -> list[Any]:
    """``work(k, draw(k, slot))`` for k < count under ``torch.no_grad()``, with draws and update passes interleaved.

    A chunk's draw is compute-bound and its update passes are memory-bound: workers that each run a draw and then
    its passes stay in lockstep and stream memory at the same moments (two chunks' passes at once took 465 us each,
    one beside a draw 255 us: docs/performance.md). So draws and passes are separate tasks on the pool's workers: a
    free worker runs a drawn chunk's passes while another worker is drawing (or nothing is left to draw), and draws
    the next chunk otherwise. ``slot`` numbers the noise buffers in use: a slot is given to one draw and is free
    again once that chunk's passes are done, so the caller keeps one buffer per slot (a few in all). Which worker
    drew or updated a chunk never changes its numbers (its noise comes from its own generator). Returns the results
    in chunk order; an exception in any task, or an interruption of the caller (Ctrl-C), propagates once every
    worker has stopped.
    """
    pool = _pool() if count > 1 else None
    if pool is None:
        return run_chunks(lambda k: work(k, draw(k, 0)), count)
    results: list[Any] = [None] * count
    to_draw = deque(range(count))
    ready: deque[tuple[int, int, Any]] = deque()  # drawn chunks waiting for their passes: (k, slot, noise)
    free: list[int] = []
    slots, drawing = 0, 0
    errors: list[BaseException] = []
    changed = threading.Condition()

    def next_task() -> tuple[int, int, Any] | tuple[int, int] | None:
        """Under the lock: passes while another worker draws (or nothing is left to draw), else a draw, else wait."""
        nonlocal slots, drawing
        while not errors:
            if ready and (drawing or not to_draw):
                return ready.popleft()
            if to_draw:
                if not free:
                    free.append(slots)
                    slots += 1
                drawing += 1
                return to_draw.popleft(), free.pop()
            if not drawing:
                return None
            changed.wait()
        return None

    @torch.no_grad()
    def worker() -> None:
        nonlocal drawing
        while True:
            with changed:
                task = next_task()
            if task is None:
                return
            try:
                if len(task) == 2:
                    k, slot = task
                    noise = draw(k, slot)
                    with changed:
                        drawing -= 1
                        ready.append((k, slot, noise))
                        changed.notify_all()
                else:
                    k, slot, noise = task
                    results[k] = work(k, noise)
                    with changed:
                        free.append(slot)
            except BaseException as exc:  # stop every worker, then raise on the caller's thread
                with changed:
                    if len(task) == 2:  # a draw that failed: no longer drawing
                        drawing -= 1
                    errors.append(exc)
                    changed.notify_all()
                return

    futures: list[Future[None]] = []
    try:
        futures.extend(pool.submit(worker) for _ in range(_POOL_SIZE))
        wait(futures)
    except BaseException as exc:  # the caller interrupted (Ctrl-C): the workers finish their task and stop
        with changed:
            errors.append(exc)
            changed.notify_all()
        wait(futures)
        raise
    if errors:
        raise errors[0]
    return results


def inner_update(
    sampler: Sampler,
    state: Any,
    params: list[Tensor],
    grads: list[Tensor],
    anchor: list[Tensor],
    average: list[Tensor],
    force: list[Tensor] | None,
    *,
    gamma: float,
    weight_decay: float,
    averaging: str | float,
    generator: torch.Generator | None,
    noise: list[Tensor] | None = None,
    average_start: list[Tensor] | None = None,
) -> Any:
    """One inner step of Entropy-SGD on some tensors (a whole group or one chunk of it); returns the new state.

    grad U = grad f + weight_decay x' + gamma (x' - x) goes into ``grads`` or, with ``force`` (the authors'
    coupling after the momentum), into ``force``; then the sampler steps and x' is folded into the average.
    ``average_start`` (weighted averaging only): the average's value before this step, read from these tensors
    instead of ``average`` (the first step's mu_0 = x, so that mu needs no copy of x before the loop).
    """
    coupled = grads if force is None else force
    if force is not None:
        torch._foreach_zero_(force)
    if weight_decay:
        torch._foreach_add_(coupled, params, alpha=weight_decay)
    torch._foreach_add_(coupled, params, alpha=gamma)
    torch._foreach_add_(coupled, anchor, alpha=-gamma)
    extra = {} if force is None else {"force": force}
    state = sampler.step(state, grads, generator, noise=noise, **extra)
    if averaging == "uniform":
        torch._foreach_add_(average, params)
    elif average_start is None:
        torch._foreach_lerp_(average, params, averaging)
    else:
        for mean, start, param in zip(average, average_start, params, strict=True):
            torch.lerp(start, param, averaging, out=mean)
    return state
