"""Parameter groups, freezing and unused parameters follow torch's optimizers.

Before the fix: ``add_param_group`` broke the next step (KeyError 'fused' / 'betas'); EntropyAdam crashed when
a frozen parameter was unfrozen (KeyError 'exp_avg'); a parameter whose ``grad`` is None got a pure-noise
direction (EntropyAdam moved an unused layer); all parameters frozen gave an IndexError.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD

SGLD = {"sampler": "sgld", "sampler_options": {"step_size": 0.05, "temperature": 1e-3}}
MAKERS = {
    "EntropySGD": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=3, momentum=0.9, **SGLD),
    "EntropySGD warm": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=3, warm_start=True, **SGLD),
    "EntropyAdam": lambda ps: EntropyAdam(ps, lr=0.1, gamma=1.0, inner_steps=3, **SGLD),
    "LPFSGD": lambda ps: LPFSGD(ps, lr=0.1, sigma=0.1, n_samples=3),
}


class TwoHeads(nn.Module):
    """A body and two heads; the loss uses only ``head``, ``unused`` is never reached by backward."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)
        self.unused = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.body(x)))


def closure_for(model: nn.Module, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)

    def closure():
        model.zero_grad()  # torch's default: set_to_none=True
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("name", list(MAKERS))
def test_add_param_group_gives_the_new_group_the_base_optimizers_defaults(name: str) -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    opt = MAKERS[name]([*model.body.parameters(), *model.head.parameters()])
    closure = closure_for(model)
    opt.step(closure)
    opt.add_param_group({"params": list(model.unused.parameters())})
    new = opt.param_groups[-1]
    assert set(opt.param_groups[0]) - {"initial_lr"} <= set(new)  # every option of the first group, e.g. fused
    model.unused.weight.data.zero_()
    model.forward = lambda x: model.head(torch.tanh(model.body(x))) + model.unused(torch.tanh(model.body(x)))
    before = model.unused.weight.detach().clone()
    opt.step(closure)
    opt.step(closure)
    assert not torch.equal(model.unused.weight, before)  # the added group is trained
    assert opt.outer_steps == 3


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_frozen_parameter_can_be_unfrozen(name: str) -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    model.body.requires_grad_(False)
    opt = MAKERS[name](model.parameters())
    closure = closure_for(model)
    frozen = model.body.weight.detach().clone()
    opt.step(closure)
    assert torch.equal(model.body.weight, frozen)
    assert model.body.weight not in opt.state or not opt.state[model.body.weight]  # no counters, no moments
    model.body.requires_grad_(True)
    opt.step(closure)
    opt.step(closure)
    assert not torch.equal(model.body.weight, frozen)
    assert opt.outer_steps == 3 and opt.state[model.body.weight]["outer_step"] == 3


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_parameter_without_gradient_is_skipped_as_torch_skips_it(name: str) -> None:
    torch.manual_seed(0)
    model = TwoHeads()
    opt = MAKERS[name](model.parameters())
    closure = closure_for(model)
    unused = [p.detach().clone() for p in model.unused.parameters()]
    for _ in range(3):
        opt.step(closure)
    for p, q in zip(model.unused.parameters(), unused, strict=True):
        assert torch.equal(p, q)
        assert p.grad is None and not opt.state.get(p)
    assert not torch.equal(model.head.weight, torch.zeros_like(model.head.weight))


def test_entropy_adam_leaves_an_unused_layer_where_torch_adam_leaves_it() -> None:
    """The issue's measurement: EntropyAdam at lr 0.1 moved an unused layer by 0.30 in 3 steps."""
    torch.manual_seed(0)
    model = TwoHeads()
    opt = EntropyAdam(model.parameters(), lr=0.1, gamma=1.0, inner_steps=3, **SGLD)
    start = model.unused.weight.detach().clone()
    for _ in range(3):
        opt.step(closure_for(model))
    assert torch.equal(model.unused.weight, start)


@pytest.mark.parametrize("name", list(MAKERS))
def test_all_parameters_frozen_is_a_clear_error(name: str) -> None:
    model = TwoHeads().requires_grad_(False)
    opt = MAKERS[name](model.parameters())
    with pytest.raises(ValueError, match="no parameter requires grad"):
        opt.step(lambda: torch.tensor(0.0))
