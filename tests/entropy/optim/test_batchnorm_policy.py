"""What the inner loop does to batch-norm running statistics: updated at each inner step, frozen, or refreshed at x."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from localentropy.entropy import EntropySGD

L = 4


def setup(policy: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    model.train()
    data = torch.Generator().manual_seed(1)
    batches = [
        (torch.randn(32, 6, generator=data) * 2 + 1, torch.randint(0, 3, (32,), generator=data)) for _ in range(20)
    ]
    calls: list[int] = []
    opt = EntropySGD(
        model.parameters(),
        lr=0.1,
        gamma=0.3,
        sampler_options={"step_size": 0.05, "temperature": 1e-4},
        inner_steps=L,
        batchnorm=policy,
        modules=model,
        generator=torch.Generator().manual_seed(2),
    )

    def closure() -> torch.Tensor:
        x, y = batches[len(calls)]
        calls.append(1)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return model, opt, closure, batches, calls


def stats(model: nn.Module) -> list[torch.Tensor]:
    bn = model[1]
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


def test_inner_updates_the_statistics_at_every_inner_step() -> None:
    model, opt, closure, _, _ = setup("inner")
    opt.step(closure)
    assert int(model[1].num_batches_tracked) == L and opt.grad_evals == L


def test_frozen_leaves_the_statistics_bit_for_bit() -> None:
    model, opt, closure, _, _ = setup("frozen")
    before = stats(model)
    opt.step(closure)
    opt.step(closure)
    assert all(torch.equal(a, b) for a, b in zip(before, stats(model), strict=True))
    assert opt.grad_evals == 2 * L


def test_refresh_updates_them_once_at_the_new_x_and_counts_the_call() -> None:
    model, opt, closure, batches, calls = setup("refresh")
    before = stats(model)
    twin = copy.deepcopy(model)
    opt.step(closure)
    assert len(calls) == L + 1 and opt.grad_evals == L + 1
    # the same as one forward pass in train mode at the new weights, from the statistics before the step
    twin.load_state_dict({**model.state_dict(), **{k: v for k, v in twin.state_dict().items() if "running" in k}})
    twin[1].num_batches_tracked.copy_(before[2])
    with torch.no_grad():
        twin(batches[L][0])
    assert all(torch.equal(a, b) for a, b in zip(stats(twin), stats(model), strict=True))
    assert int(model[1].num_batches_tracked) == 1
    assert all(p.grad is None or not p.grad.isnan().any() for p in model.parameters())


def test_a_policy_other_than_inner_needs_the_model() -> None:
    with pytest.raises(ValueError, match=r"batchnorm='frozen' needs the model.*modules=model"):
        EntropySGD([nn.Parameter(torch.zeros(3))], lr=0.1, gamma=0.3, batchnorm="frozen")
    with pytest.raises(ValueError, match=r"batchnorm must be one of .*inner.*frozen.*refresh"):
        EntropySGD([nn.Parameter(torch.zeros(3))], lr=0.1, gamma=0.3, batchnorm="eval")
