"""Whatever escapes from the closure, ``step`` leaves the parameters at x (issue: exception safety).

Before the fix an exception inside the closure left the parameters at an inner iterate x'_k (LPF-SGD: with
its noise still in the weights); the next step, or a checkpoint written on Ctrl-C, took that point as x.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localentropy import samplers
from localentropy._threads import torch_threads
from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD

SGLD = {"sampler": "sgld", "sampler_options": {"step_size": 0.05, "temperature": 1e-3}}

OPTIMIZERS = {
    "entropy-sgd": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=4, momentum=0.9, **SGLD),
    "entropy-sgd warm": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=4, warm_start=True, **SGLD),
    "entropy-adam": lambda ps: EntropyAdam(ps, lr=0.1, gamma=1.0, inner_steps=4, **SGLD),
    "lpf-sgd": lambda ps: LPFSGD(ps, lr=0.1, sigma=0.5, n_samples=4),
}

EXCEPTIONS = {
    "StopIteration": StopIteration,  # a hand-written loop over iter(loader) that ran out
    "KeyboardInterrupt": KeyboardInterrupt,
    "out of memory": lambda: torch.OutOfMemoryError("CUDA out of memory"),
    "user error": lambda: ValueError("a bug in the training step"),
}


def model_and_data(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    return model, torch.randn(32, 5), torch.randint(0, 3, (32,))


def failing_closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fail_at: int | None, exception):
    calls = []

    def closure():
        calls.append(len(calls))
        if fail_at is not None and len(calls) - 1 == fail_at:
            raise exception()
        model.zero_grad()
        i = (len(calls) * 8) % 32
        loss = nn.functional.cross_entropy(model(x[i : i + 8]), y[i : i + 8])
        loss.backward()
        return loss.detach()

    return closure


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("fail_at", [0, 2, 3], ids=["first call", "middle call", "last call"])
@pytest.mark.parametrize("exception", list(EXCEPTIONS.values()), ids=list(EXCEPTIONS))
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_an_exception_in_the_closure_leaves_the_parameters_at_x(name, exception, fail_at) -> None:
    model, x, y = model_and_data()
    opt = OPTIMIZERS[name](model.parameters())
    opt.step(failing_closure(model, x, y, None, exception))  # one completed step: momenta, chains, counters
    before, state_before = snapshot(model), opt.state_dict()
    with pytest.raises(BaseException) as caught:
        opt.step(failing_closure(model, x, y, fail_at, exception))
    assert not isinstance(caught.value, AssertionError)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)  # bit for bit: no inner iterate, no noise left in the weights
    assert opt.outer_steps == 1
    state_after = opt.state_dict()
    for key, value in state_before["state"].items():  # counters, momentum buffers, Adam moments, chains
        for field, tensor in value.items():
            assert torch.equal(torch.as_tensor(state_after["state"][key][field]), torch.as_tensor(tensor)), field
    opt.step(failing_closure(model, x, y, None, exception))  # and the optimizer goes on
    assert opt.outer_steps == 2


def test_an_interrupted_step_then_a_full_one_matches_a_step_from_a_fresh_chain() -> None:
    """After the interruption the next step starts from x, as if the interrupted one had never begun (the
    noise generator has advanced, so the comparison reseeds both)."""
    model, x, y = model_and_data()
    twin, _, _ = model_and_data()
    opts = [OPTIMIZERS["entropy-sgd"](m.parameters()) for m in (model, twin)]
    with pytest.raises(KeyboardInterrupt):
        opts[0].step(failing_closure(model, x, y, 2, KeyboardInterrupt))
    for opt in opts:
        opt.generator.manual_seed(5)
        opt.step(failing_closure(model if opt is opts[0] else twin, x, y, None, None))
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


class FailsOnItsFirstStep(samplers.SGLD):
    """SGLD that moves its chunk and then raises, at its first step: with one thread the first update fails in
    chunk 0 after moving it, before the other chunks moved."""

    elementwise = True

    def step(self, state, grad, generator=None, *, noise=None):
        super().step(state, grad, generator, noise=noise)
        raise RuntimeError("the sampler failed in a chunk")


@pytest.mark.parametrize("fail_at", [0, 1], ids=["first call", "second call"])
def test_on_the_chunked_path_an_exception_leaves_the_parameters_at_x(fail_at: int) -> None:
    """On the chunked path too, whatever fails before, during or after the first update (some chunks moved, some
    not), every parameter is x again, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(400, 1400), nn.Tanh(), nn.Linear(1400, 3))  # 3 chunks of the chunked path
    x, y = torch.randn(32, 400), torch.randint(0, 3, (32,))
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=1.0, inner_steps=3, **SGLD)
    opt.step(failing_closure(model, x, y, None, None))  # a completed step first: momenta, loops, anchors
    before = snapshot(model)
    with torch_threads(2), pytest.raises(ValueError):
        opt.step(failing_closure(model, x, y, fail_at, lambda: ValueError("a bug in the training step")))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    opt.sampler = FailsOnItsFirstStep(step_size=0.05, temperature=1e-3)
    with torch_threads(1), pytest.raises(RuntimeError, match="failed in a chunk"):
        opt.step(failing_closure(model, x, y, None, None))
    assert not opt._loops.loops  # forgotten: no half-advanced state kept
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
