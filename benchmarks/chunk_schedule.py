"""How the chunked inner loop's schedule pays: the figures behind "Round four" in docs/performance.md.

    python benchmarks/chunk_schedule.py [--inner-steps 5] [--repeats 40] [--threads 2]

Two measurements, on the mnistfc model of the speed benchmark (784-1024-1024-10, batch 128):

1. **Passes beside passes, or beside a draw.** One chunk (2^18 entries) of SGLD's inner update (the five passes:
   the coupling twice, the sampler's two updates, the average) on a pool worker, its arrays evicted from the cache
   first, while the other worker runs another chunk's passes, draws a chunk's noise, or waits. The median thread
   time of each, in microseconds.
2. **The inner step, pipelined against lockstep.** EntropySGD (SGLD, Gaussian noise, the chunked path) timed
   outer step by outer step, interleaved, with the schedule of the library (``chunks.run_pipelined``: draws and
   update passes as separate tasks) and with each chunk's draw and passes run as one task (lockstep, the schedule
   before round four). Each outer step is divided by L x G, with G timed right before it, as the speed benchmark
   does; the median over the repeats is printed.

The numbers of both schedules are the same (each chunk's noise comes from its own generator); only the time differs.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.functional import cross_entropy

from localentropy.entropy import EntropySGD
from localentropy.entropy.optim import chunks, inner
from localentropy.experiments.speed.samplers import gradient_step, model_and_batch
from localentropy.samplers import SGLD

CHUNK = chunks.CHUNK_SIZE


def lockstep(draw: Callable[[int, int], Any], work: Callable[[int, Any], Any], count: int) -> list[Any]:
    """Each chunk's draw and passes as one task (a slot per chunk: no two tasks share a noise buffer)."""
    return chunks.run_chunks(lambda k: work(k, draw(k, k)), count)


def passes_beside(repeats: int) -> dict[str, float]:
    """Section 1: one chunk's five passes on a pool worker beside another worker's passes, draw or nothing."""
    sampler = SGLD(step_size=1e-3, temperature=1e-4)
    arrays = []
    for _ in range(16):  # 16 chunks' arrays, cycled, so that each use finds its chunk out of the cache
        p = torch.randn(CHUNK)
        arrays.append((p, torch.randn(CHUNK), p.clone(), p.clone(), sampler.init([p])))
    evict = torch.empty(16 * 2**20)
    noise = [torch.randn(CHUNK) for _ in range(2)]
    scratch = torch.empty(CHUNK)
    pool = chunks._pool()
    if pool is None:
        raise SystemExit("this measurement needs 2 threads or more (--threads)")

    def passes(i: int, w: int) -> float:
        p, g, a, m, state = arrays[i]
        start = time.thread_time()
        chunks.inner_update(
            sampler,
            state,
            [p],
            [g],
            [a],
            [m],
            None,
            gamma=0.03,
            weight_decay=0.0,
            averaging=0.75,
            generator=None,
            noise=[noise[w]],
        )
        return time.thread_time() - start

    def draw() -> float:
        start = time.thread_time()
        scratch.normal_()
        return time.thread_time() - start

    def together(first: Callable[[], float], second: Callable[[], float]) -> float:
        evict.add_(1.0)
        futures = [pool.submit(torch.no_grad()(first)), pool.submit(torch.no_grad()(second))]
        first_time, _ = (f.result() for f in futures)
        return first_time

    times: dict[str, list[float]] = {"beside passes": [], "beside a draw": [], "alone": []}
    for r in range(repeats + 5):
        i = (2 * r) % 16
        own = functools.partial(passes, i, 0)
        measured = {
            "beside passes": together(own, functools.partial(passes, i + 1, 1)),
            "beside a draw": together(own, draw),
            "alone": together(own, lambda: 0.0),
        }
        if r >= 5:
            for key, value in measured.items():
                times[key].append(value)
    return {key: statistics.median(values) * 1e6 for key, values in times.items()}


def inner_step(inner_steps: int, repeats: int) -> dict[str, float]:
    """Section 2: the SGLD Gaussian inner step / G under each schedule, interleaved in this process."""
    base, x, y = model_and_batch(1024, 128, torch.device("cpu"), 0)
    unit = copy.deepcopy(base)
    runs = {}
    for name in ("pipelined", "lockstep"):
        model = copy.deepcopy(base)
        opt = EntropySGD(
            model.parameters(),
            lr=0.01,
            gamma=0.03,
            inner_steps=inner_steps,
            sampler="sgld",
            sampler_options={"step_size": 1e-3, "temperature": 1e-4},
            generator=torch.Generator().manual_seed(1),
        )

        def closure(model=model, opt=opt) -> torch.Tensor:
            opt.zero_grad()
            loss = cross_entropy(model(x), y)
            loss.backward()
            return loss

        runs[name] = (opt, closure)
    schedules = {"pipelined": chunks.run_pipelined, "lockstep": lockstep}
    ratios: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    try:
        for r in range(repeats + 3):
            for name in names[r % 2 :] + names[: r % 2]:
                opt, closure = runs[name]
                inner.run_pipelined = schedules[name]  # the chunked loop looks it up at every update
                start = time.perf_counter()
                gradient_step(unit, x, y)
                g = time.perf_counter() - start
                start = time.perf_counter()
                opt.step(closure)
                if r >= 3:
                    ratios[name].append((time.perf_counter() - start) / (inner_steps * g))
    finally:
        inner.run_pipelined = chunks.run_pipelined
    return {name: statistics.median(values) for name, values in ratios.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, chunk {CHUNK} entries")
    for key, value in passes_beside(args.repeats).items():
        print(f"one chunk's five passes {key}: {value:.0f} us")
    for name, value in inner_step(args.inner_steps, args.repeats).items():
        print(f"inner step, L = {args.inner_steps}, {name}: {value:.3f} G")


if __name__ == "__main__":
    main()
