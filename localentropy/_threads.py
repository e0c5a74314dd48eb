"""Torch's intra-op thread count for a block of code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the previous count.

    Small tensors (test problems, chains of a few dimensions) run faster on one thread, and on a loaded machine
    far faster: a multi-threaded BLAS call on a (4, 50) @ (50, 50) product can stall for milliseconds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
