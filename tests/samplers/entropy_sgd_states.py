"""The sampler state that Entropy-SGD keeps between outer steps, for the tests of what survives its ``reset``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from localentropy.entropy import EntropySGD


def kept_sampler_states(sampler: str, sampler_options: dict[str, Any], outer_steps: int) -> Iterator[Any]:
    """EntropySGD (5 inner steps) on a 4-D quadratic with ``sampler``; yields its kept sampler state after each
    outer step (the same tensors, updated in place by the next one: check a state before asking for the next)."""
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(4, dtype=torch.float64))
    target = torch.randn(4, dtype=torch.float64)
    opt = EntropySGD(
        [param],
        lr=0.1,
        gamma=1.0,
        sampler=sampler,
        inner_steps=5,
        sampler_options=sampler_options,
        generator=torch.Generator().manual_seed(0),
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 0.5 * ((param - target) ** 2).sum()
        loss.backward()
        return loss

    for _ in range(outer_steps):
        opt.step(closure)
        (loop,) = opt._loops.loops.values()
        yield loop.state
