"""The alpha-beta model of data-parallel wall-clock per epoch, and the compute measurement it starts from.

A ring all-reduce of P payload bytes over n ranks runs 2 (n - 1) steps (reduce-scatter, then all-gather), each
sending P / n bytes from every rank: time 2 (n - 1) alpha + 2 (n - 1) / n * P / bandwidth, with alpha the latency
of one message. One pass (a forward-backward on the global batch, then the update) on n ranks costs
gradient / n (the batch is split) + replicated (work every rank repeats in full: Entropy-SGD's inner update, the
optimizer step) + the all-reduce of the gradients. docs/distributed.md prints :func:`projection_markdown`'s table;
``python -m localentropy.experiments.training.scaling`` measures this machine and prints it again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from localentropy.entropy import EntropySGD

GBIT = 1e9 / 8  # bytes per second in one Gbit/s
# (name, bandwidth in bytes/s, alpha in seconds): commodity TCP Ethernet, and an RDMA fabric
LINKS = (("10 Gbit/s, alpha 50 us", 10 * GBIT, 50e-6), ("100 Gbit/s, alpha 5 us", 100 * GBIT, 5e-6))
WORKERS = (2, 4, 8, 16, 32, 64)


def ring_allreduce_bytes_sent(payload_bytes: float, n: int) -> float:
    """Bytes each rank sends in a ring all-reduce of ``payload_bytes``: 2 (n - 1) / n of the payload."""
    return 2 * (n - 1) / n * payload_bytes


def ring_allreduce_seconds(payload_bytes: float, n: int, alpha: float, bandwidth: float) -> float:
    """The alpha-beta time of a ring all-reduce: 2 (n - 1) alpha + 2 (n - 1) / n * bytes / bandwidth."""
    return 2 * (n - 1) * alpha + ring_allreduce_bytes_sent(payload_bytes, n) / bandwidth


def epoch_seconds(
    passes: int,
    gradient_seconds: float,
    replicated_seconds: float,
    payload_bytes: float,
    n: int,
    alpha: float,
    bandwidth: float,
    sync_every: int = 1,
) -> float:
    """``passes`` passes per epoch, each: the split gradient and the replicated work; and an all-reduce of
    ``payload_bytes`` every ``sync_every`` passes (1: data-parallel, after each gradient; L: Parle, once per
    outer step of L inner steps)."""
    ring = ring_allreduce_seconds(payload_bytes, n, alpha, bandwidth) if n > 1 else 0.0
    return passes * (gradient_seconds / n + replicated_seconds) + math.ceil(passes / sync_every) * ring


@dataclass
class Measured:
    """Seconds per pass on one process, for a model of ``parameters`` float32 weights at a global batch."""

    parameters: int
    batch_size: int
    gradient: float  # one forward-backward on the global batch
    sgd_update: float  # one SGD (momentum) step
    entropy_update: float  # one Entropy-SGD inner update (noise, coupling, sampler step, averaging)


def measure(hidden: int = 1024, batch_size: int = 128, repeats: int = 20, threads: int = 1) -> Measured:
    """Time the paper's 784-1024-1024-10 MLP (mnistfc shape) on random inputs: medians of ``repeats`` passes."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    layers = [nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)]
    return measure_module(nn.Sequential(*layers), (784,), batch_size, repeats)


def measure_model(
    name: str,
    input_shape: Sequence[int],
    options: dict[str, Any] | None = None,
    batch_size: int = 128,
    repeats: int = 20,
    threads: int = 1,
) -> Measured:
    """:func:`measure` for a model of ``localentropy train`` by name (models.py), 10 classes."""
    from localentropy.experiments.training.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name, tuple(input_shape), 10, **(options or {}))
    return measure_module(model, tuple(input_shape), batch_size, repeats)


def measure_module(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, repeats: int) -> Measured:
    """Medians of ``repeats`` timings: a forward-backward on ``batch_size`` random inputs, an SGD (momentum) step,
    an Entropy-SGD inner update (the gradient given, not computed)."""
    x, y = torch.randn(batch_size, *input_shape), torch.randint(0, 10, (batch_size,))
    model.train()

    def backward() -> torch.Tensor:
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    def median(run: object) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            run()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return sorted(times)[len(times) // 2]

    gradient = median(backward)
    grads = [p.grad.clone() for p in model.parameters()]  # type: ignore[union-attr]

    def stored() -> torch.Tensor:  # the gradient without computing it: what is left is the update
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone() if p.grad is None else p.grad.copy_(g)
        return torch.zeros(())

    sgd = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sgd_update = median(lambda: (stored(), sgd.step()))
    inner = 5
    entropy = EntropySGD(model.parameters(), lr=1e-3, gamma=1.0, inner_steps=inner, momentum=0.9)
    entropy_step = median(lambda: entropy.step(stored))
    parameters = sum(p.numel() for p in model.parameters())
    return Measured(parameters, batch_size, gradient, sgd_update, entropy_step / inner)


def projection_markdown(measured: Measured, examples: int = 60_000, workers: Sequence[int] = WORKERS) -> str:
    """The table of projected seconds per epoch (one pass over ``examples``) for SGD and Entropy-SGD."""
    passes = -(-examples // measured.batch_size)
    payload = 4 * measured.parameters
    head = (
        "| workers n | bytes sent per rank per pass (MB) | "
        + " | ".join(f"SGD s/epoch ({name}) | Entropy-SGD s/epoch ({name})" for name, _, _ in LINKS)
        + " |"
    )
    lines = [head, "|" + "---|" * (2 + 2 * len(LINKS))]
    for n in (1, *workers):
        cells = [str(n), f"{ring_allreduce_bytes_sent(payload, n) / 1e6:.2f}"]
        for _, bandwidth, alpha in LINKS:
            for replicated in (measured.sgd_update, measured.entropy_update):
                seconds = epoch_seconds(passes, measured.gradient, replicated, payload, n, alpha, bandwidth)
                cells.append(f"{seconds:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    measured = measure()
    print(f"measured on this machine: {measured}")
    print(projection_markdown(measured))


if __name__ == "__main__":
    main()
