# ruff: noqa: F401  (the test modules star-import these names)
"""Shared by the optimizer tests: hand-computed trajectories and known minimisers.

Hand computations follow the published update rules (docs/optimizers.md) line by line. Noise is reproduced exactly:
the optimizers draw it with ``buffer.normal_(generator=gen)``, one call per parameter tensor in parameter order,
once per inner step (LPF-SGD: once per sample), so a generator seeded like the optimizer's regenerates it.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropyOptimizer, EntropySGD
from localentropy.entropy.optim import DivergenceError, filter_norms
from localentropy.entropy.problems import Quadratic
from localentropy.experiments.digits import run_digits
from localentropy.samplers import SGLD, MomentumSGLD

F64 = torch.float64
RTOL = 1e-12


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread


# A small 2-D quadratic f(x) = 1/2 x^T A x - b^T x used by the hand computations.
A2 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
B2 = torch.tensor([1.0, -1.0], dtype=F64)
X0 = torch.tensor([3.0, -2.0], dtype=F64)


def grad2(x: torch.Tensor) -> torch.Tensor:
    return A2 @ x - B2


def quadratic_closure(param: torch.Tensor, A: torch.Tensor, b: torch.Tensor, calls: list | None = None):
    """Zero the gradient, f(x) = 1/2 x^T A x - b^T x forward and backward, return the loss."""

    def closure():
        if param.grad is not None:
            param.grad.zero_()
        loss = 0.5 * param @ A @ param - b @ param
        loss.backward()
        if calls is not None:
            calls.append(loss.detach().clone())
        return loss.detach()

    return closure


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hand_inner(
    xs,
    grad_fns,
    gammas,
    *,
    inner_steps,
    step_size,
    alpha,
    noise_std=0.0,
    generator=None,
    momentum=0.0,
    nesterov=False,
    coupling="inside",
):
    """mu after one inner loop, by hand, for a list of parameter tensors (noise drawn per tensor, in order)."""
    xp = [x.clone() for x in xs]
    mu = [x.clone() for x in xs]
    buf = [torch.zeros_like(x) for x in xs]  # the inner momentum buffer, reset every outer step
    for _ in range(inner_steps):
        grads = [fn(p) for fn, p in zip(grad_fns, xp, strict=True)]  # all gradients at the same x' (one closure)
        for i, x in enumerate(xs):
            force = gammas[i] * (xp[i] - x)
            g = grads[i] + force if coupling == "inside" else grads[i]
            if momentum:
                buf[i] = momentum * buf[i] + g
                d = g + momentum * buf[i] if nesterov else buf[i]
            else:
                d = g
            if coupling == "after_momentum":
                d = d + force
            xp[i] = xp[i] - step_size * d
            if noise_std:
                xp[i] = xp[i] + noise_std * torch.empty_like(x).normal_(generator=generator)
            mu[i] = (1 - alpha) * mu[i] + alpha * xp[i]
    return mu


class HandSGD:
    """torch.optim.SGD's update (no dampening) on a given direction, by hand."""

    def __init__(self, lr, momentum=0.0, nesterov=False):
        self.lr, self.momentum, self.nesterov, self.buf = lr, momentum, nesterov, None

    def step(self, x, direction):
        if not self.momentum:
            return x - self.lr * direction
        self.buf = direction.clone() if self.buf is None else self.momentum * self.buf + direction
        update = direction + self.momentum * self.buf if self.nesterov else self.buf
        return x - self.lr * update


def cross_entropy_closure(model, opt, x, y):
    """A closure of the usual shape: zero the gradients, cross-entropy of ``model(x)`` against ``y``, backward."""

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure
