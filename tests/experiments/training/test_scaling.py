"""The alpha-beta model of docs/distributed.md: the ring all-reduce's cost and the generated table."""

from __future__ import annotations

import math

import pytest

from localentropy.experiments.training.scaling import (
    GBIT,
    LINKS,
    WORKERS,
    Measured,
    epoch_seconds,
    projection_markdown,
    ring_allreduce_bytes_sent,
    ring_allreduce_seconds,
)


def test_ring_allreduce_cost() -> None:
    assert ring_allreduce_bytes_sent(1000.0, 1) == 0.0
    assert ring_allreduce_bytes_sent(1000.0, 2) == 1000.0  # 2 (n - 1) / n = 1 at n = 2
    assert ring_allreduce_bytes_sent(1000.0, 64) == pytest.approx(2 * 63 / 64 * 1000)
    # 8 ranks, 8 MB, 10 Gbit/s, 50 us: 14 latencies and 2 * 7/8 * 8e6 bytes at 1.25e9 bytes/s
    assert ring_allreduce_seconds(8e6, 8, 50e-6, 10 * GBIT) == pytest.approx(14 * 50e-6 + 14e6 / 1.25e9)


def test_epoch_seconds_split_replicated_and_ring() -> None:
    assert epoch_seconds(10, 0.2, 0.01, 4e6, 1, 5e-6, GBIT) == pytest.approx(10 * 0.21)  # one process: no ring
    ring = ring_allreduce_seconds(4e6, 4, 5e-6, GBIT)
    assert epoch_seconds(10, 0.2, 0.01, 4e6, 4, 5e-6, GBIT) == pytest.approx(10 * (0.05 + 0.01 + ring))


def test_projection_table_is_the_formula() -> None:
    measured = Measured(parameters=1_000_000, batch_size=100, gradient=0.05, sgd_update=0.002, entropy_update=0.03)
    lines = projection_markdown(measured, examples=10_000).splitlines()
    assert len(lines) == 2 + 1 + len(WORKERS)
    row = next(line for line in lines if line.startswith("| 16 |")).strip("| ").split(" | ")
    name, bandwidth, alpha = LINKS[0]
    assert name in lines[0]
    assert float(row[1]) == pytest.approx(2 * 15 / 16 * 4e6 / 1e6, abs=0.005)
    assert math.isclose(float(row[3]), epoch_seconds(100, 0.05, 0.03, 4e6, 16, alpha, bandwidth), abs_tol=0.005)
