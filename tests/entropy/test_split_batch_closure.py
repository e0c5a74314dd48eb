"""SplitBatchClosure over several batches (a framework's gradient-accumulation window): call k's gradient is the
gradient of the mean loss over the union of the k-th minibatches, whatever their sizes; every call's loss is kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localentropy.entropy import SplitBatchClosure


def test_over_batches_gives_the_gradient_of_the_union_of_the_kth_minibatches() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    batches = [(torch.randn(n, 3), torch.randn(n, 1)) for n in (6, 9)]  # minibatches of 2 and 3 examples

    def loss(batch) -> torch.Tensor:
        return nn.functional.mse_loss(model(batch[0]), batch[1])

    closure = SplitBatchClosure.over_batches(batches, 3, loss, micro_batches=2, model=model)
    for k in range(3):
        returned = closure()
        grads = [p.grad.clone() for p in model.parameters()]
        rows = [slice(2 * k, 2 * k + 2), slice(3 * k, 3 * k + 3)]  # the k-th minibatch of each batch
        inputs, targets = (torch.cat([batch[i][r] for batch, r in zip(batches, rows, strict=True)]) for i in (0, 1))
        model.zero_grad()
        expected = nn.functional.mse_loss(model(inputs), targets)
        expected.backward()
        torch.testing.assert_close(returned, expected.detach())
        for g, p in zip(grads, model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad)
    assert len(closure.losses) == 3
    with pytest.raises(RuntimeError, match="all 3 minibatches"):
        closure()
