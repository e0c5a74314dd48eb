"""LR schedulers that cycle momentum (OneCycleLR, CyclicLR) drive the optimizers as they drive torch's own.

Before the fix they refused EntropySGD, EntropyAdam and LPFSGD ("optimizer must support momentum or beta1"):
the base optimizer's options lived only in ``param_groups``, not in ``defaults``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR, StepLR

from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD

SGLD = {"sampler": "sgld", "sampler_options": {"step_size": 0.05, "temperature": 1e-4}}
MAKERS = {
    "EntropySGD": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=2, momentum=0.9, **SGLD),
    "EntropyAdam": lambda ps: EntropyAdam(ps, lr=0.1, gamma=1.0, inner_steps=2, **SGLD),
    "LPFSGD": lambda ps: LPFSGD(ps, lr=0.1, sigma=0.01, n_samples=2),
}
TORCH = {
    "EntropySGD": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "EntropyAdam": lambda ps: torch.optim.Adam(ps, lr=0.1),
    "LPFSGD": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
}
SCHEDULERS = {
    "OneCycleLR": lambda opt: OneCycleLR(opt, max_lr=0.5, total_steps=6),
    "CyclicLR": lambda opt: CyclicLR(opt, base_lr=0.01, max_lr=0.5, step_size_up=2, cycle_momentum=True),
    "StepLR": lambda opt: StepLR(opt, step_size=2, gamma=0.5),
}


def quadratic(seed: int = 0):
    torch.manual_seed(seed)
    param = nn.Parameter(torch.randn(4, dtype=torch.float64))
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))

    def closure():
        param.grad = None
        loss = 0.5 * param @ A @ param
        loss.backward()
        return loss.detach()

    return param, closure


def momentum_of(group: dict) -> float:
    return group["betas"][0] if "betas" in group else group["momentum"]


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("name", list(MAKERS))
def test_schedulers_drive_lr_and_momentum_as_for_the_torch_optimizer(name: str, scheduler: str) -> None:
    """The lr and momentum (beta1) the base step sees follow the schedule, value for value with torch's."""
    param, closure = quadratic()
    opt = MAKERS[name]([param])
    reference = TORCH[name]([nn.Parameter(torch.zeros(4, dtype=torch.float64))])
    sched, ref_sched = SCHEDULERS[scheduler](opt), SCHEDULERS[scheduler](reference)
    for _ in range(6):
        group, ref_group = opt.param_groups[0], reference.param_groups[0]
        assert group["lr"] == ref_group["lr"] and momentum_of(group) == momentum_of(ref_group)
        assert opt.base.param_groups[0] is group  # the dict the base optimizer's step reads
        opt.step(closure)
        reference.step()
        sched.step()
        ref_sched.step()


@pytest.mark.parametrize("name", ["EntropySGD", "EntropyAdam"])
def test_one_cycle_momentum_changes_the_trajectory_exactly_as_setting_it_by_hand(name: str) -> None:
    """A twin whose lr and momentum are set by hand to the scheduler's values takes the identical steps."""
    param, closure = quadratic()
    twin, twin_closure = quadratic()
    opt, hand = MAKERS[name]([param]), MAKERS[name]([twin])
    hand.generator.set_state(opt.generator.get_state())
    sched = OneCycleLR(opt, max_lr=0.5, total_steps=5)
    for _ in range(5):
        for key in ("lr", "betas" if name == "EntropyAdam" else "momentum"):
            hand.param_groups[0][key] = opt.param_groups[0][key]
        opt.step(closure)
        hand.step(twin_closure)
        sched.step()
        assert torch.equal(param, twin)
