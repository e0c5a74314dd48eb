"""The smaller items: a default sampler, clear errors for closures that break the contract, batches of any
shape in make_closure, and LPF-SGD's exact restore on divergence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD, make_closure
from localentropy.entropy.optim import DivergenceError
from localentropy.entropy.optim.entropy_sgd import DEFAULT_SAMPLER_OPTIONS
from localentropy.samplers import SGLD

SGLD_OPTIONS = {"sampler": "sgld", "sampler_options": {"step_size": 0.05, "temperature": 1e-3}}
MAKERS = {
    "EntropySGD": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=3, **SGLD_OPTIONS),
    "EntropyAdam": lambda ps: EntropyAdam(ps, lr=0.1, gamma=1.0, inner_steps=3, **SGLD_OPTIONS),
    "LPFSGD": lambda ps: LPFSGD(ps, lr=0.1, sigma=0.1, n_samples=3),
}


def data(n: int = 12):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_entropy_sgd_without_a_sampler_uses_the_documented_default() -> None:
    model = nn.Linear(4, 2)
    opt = EntropySGD(model.parameters(), 0.1, gamma=1.0)
    assert isinstance(opt.sampler, SGLD)
    assert opt.sampler.step_size == DEFAULT_SAMPLER_OPTIONS["step_size"]
    assert opt.sampler.temperature == DEFAULT_SAMPLER_OPTIONS["temperature"]
    x, y = data()
    opt.step(make_closure(model, nn.functional.cross_entropy, [(x, y)]))
    assert opt.outer_steps == 1
    # sampler_options override the defaults one by one
    opt = EntropySGD(model.parameters(), 0.1, gamma=1.0, sampler_options={"step_size": 0.01})
    assert opt.sampler.step_size == 0.01 and opt.sampler.temperature == DEFAULT_SAMPLER_OPTIONS["temperature"]


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_closure_returning_loss_and_outputs_is_a_clear_error(name: str) -> None:
    model = nn.Linear(4, 2)
    opt = MAKERS[name](model.parameters())
    x, y = data()
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        model.zero_grad()
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        return loss, logits

    with pytest.raises(TypeError, match=r"return only the loss"):
        opt.step(closure)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


@pytest.mark.parametrize("zeroing", ["none", "set_to_none"])
@pytest.mark.parametrize("name", list(MAKERS))
def test_a_closure_that_forgets_backward_is_a_clear_error(name: str, zeroing: str) -> None:
    """Before: the inner loop random-walked on noise alone and the step went on silently."""
    model = nn.Linear(4, 2)
    opt = MAKERS[name](model.parameters())
    x, y = data()
    opt.step(make_closure(model, nn.functional.cross_entropy, [(x, y)]))  # gradients exist from now on
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        if zeroing == "set_to_none":
            model.zero_grad()
        return nn.functional.cross_entropy(model(x), y).detach()

    with pytest.raises(RuntimeError, match=r"must run backward"):
        opt.step(closure)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    assert opt.outer_steps == 1


class DictModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features)


def test_make_closure_refuses_other_batches_clearly_and_takes_them_with_batch_loss() -> None:
    model = DictModel()
    x, y = data()
    loader = [{"features": x[:6], "label": y[:6]}, {"features": x[6:], "label": y[6:]}]
    with pytest.raises(TypeError, match=r"\(inputs, targets\) batches, got a dict with keys \['features', 'label'\]"):
        make_closure(model, nn.functional.cross_entropy, loader)()
    with pytest.raises(TypeError, match=r"got a tuple of length 3.*batch_loss"):
        make_closure(model, nn.functional.cross_entropy, [(x, y, y)])()

    def batch_loss(batch):
        return nn.functional.cross_entropy(model(batch["features"]), batch["label"])

    closure = make_closure(model, None, loader, batch_loss=batch_loss)
    opt = EntropySGD(model.parameters(), 0.1, gamma=1.0, inner_steps=3)
    opt.step(closure)
    assert closure.calls == 3 and closure.examples == 18 and closure.epochs_started == 2


def test_lpf_sgd_divergence_leaves_the_parameters_exactly_unchanged() -> None:
    """Before: (x + n) - n, off x by rounding, while the message said "the parameters are unchanged"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(50, 40), nn.Linear(40, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(torch.logspace(-3, 3, p.numel()).reshape(p.shape))  # magnitudes where rounding shows
    opt = LPFSGD(model.parameters(), lr=0.1, sigma=0.3, n_samples=3)
    x, y = torch.randn(8, 50), torch.randint(0, 3, (8,))
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def closure():
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        calls.append(1)
        return loss.detach() * (float("nan") if len(calls) == 3 else 1.0)

    with pytest.raises(DivergenceError, match="unchanged"):
        opt.step(closure)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)
