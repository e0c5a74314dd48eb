"""Per-chain reductions for samplers that keep one scalar per chain (a thermostat, an acceptance test).

A single-tensor position (n_chains, ...) holds n_chains chains: a per-chain quantity has shape (n_chains,).
A list-of-tensors position (a network's parameters) is one chain: a per-chain quantity has shape ().
"""

from __future__ import annotations

import torch
from torch import Tensor

from localentropy.samplers.base import Position


def is_batched(position: Position) -> bool:
    """True for a single (n_chains, ...) tensor, False for a list of tensors (one chain)."""
    return isinstance(position, Tensor)


def chain_shape(position: Position) -> tuple[int, ...]:
    """The shape of a per-chain scalar: (n_chains,) or ()."""
    if is_batched(position):
        if position.ndim < 1:
            raise ValueError("a single-tensor position must have shape (n_chains, ...), got a 0-d tensor")
        return (position.shape[0],)
    return ()


def chain_dim(tensors: list[Tensor], batched: bool) -> int:
    """The number of coordinates of one chain."""
    if batched:
        t = tensors[0]
        return t.numel() // t.shape[0] if t.shape[0] else 0
    return sum(t.numel() for t in tensors)


def chain_sum(tensors: list[Tensor], batched: bool) -> Tensor:
    """Per-chain sum of all entries of ``tensors`` (each tensor summed over every dimension but the first)."""
    if batched:
        t = tensors[0]
        return t.reshape(t.shape[0], -1).sum(dim=1)
    total = tensors[0].sum()
    for t in tensors[1:]:
        total = total + t.sum()
    return total


def chain_sq_norm(tensors: list[Tensor], batched: bool, scratch: list[Tensor] | None = None) -> Tensor:
    """Per-chain squared Euclidean norm.

    ``scratch``, tensors shaped like ``tensors`` whose contents may be overwritten, receives the squares instead of
    new tensors (the same numbers, no allocation of the tensors' size).
    """

    def squares(k: int) -> Tensor:
        t = tensors[k]
        return t * t if scratch is None else torch.mul(t, t, out=scratch[k])

    if batched:
        return squares(0).reshape(tensors[0].shape[0], -1).sum(dim=1)
    total = squares(0).sum()
    for k in range(1, len(tensors)):
        total = total + squares(k).sum()
    return total


def per_chain(values: Tensor, tensors: list[Tensor], batched: bool) -> list[Tensor]:
    """``values`` (one per chain) shaped to broadcast against each tensor, for ``torch._foreach_*``."""
    if batched:
        t = tensors[0]
        return [values.reshape(t.shape[0], *([1] * (t.ndim - 1)))]
    return [values] * len(tensors)
