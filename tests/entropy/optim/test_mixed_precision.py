"""fp16 mixed precision with torch.amp.GradScaler for the multi-pass optimizers, on the CPU (docs/optimizers.md).

The torch recipe: the closure scales its loss and runs backward, the loop calls ``scaler.step(optimizer, closure)``
then ``scaler.update()``. Each inner gradient is unscaled before the optimizer uses it; an inf or NaN in any of them
skips the step with the parameters restored exactly and the scale lowered; the scaler's state resumes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropySGD, Parle

# torch warns that GradScaler will stop handing itself to the optimizer (docs/optimizers.md, "Mixed precision")
pytestmark = pytest.mark.filterwarnings("ignore:GradScaler is going to stop passing itself:FutureWarning")

SAMPLER = {"step_size": 0.01, "temperature": 1e-4}
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "entropy-sgd": lambda ps, g: EntropySGD(ps, lr=0.1, gamma=0.3, sampler_options=SAMPLER, inner_steps=3, generator=g),
    "entropy-adam": lambda ps, g: EntropyAdam(
        ps, lr=1e-3, gamma=0.3, sampler_options=SAMPLER, inner_steps=3, generator=g
    ),
    "entropy-sgd warm": lambda ps, g: EntropySGD(
        ps, lr=0.1, gamma=0.3, sampler="sghmc", sampler_options=SAMPLER, inner_steps=3, warm_start=True, generator=g
    ),
    "lpf-sgd": lambda ps, g: LPFSGD(ps, lr=0.1, sigma=1e-3, n_samples=3, generator=g),
    "parle": lambda ps, g: Parle(ps, lr=0.1, gamma=0.3, rho=0.1, sampler_options=SAMPLER, inner_steps=3, generator=g),
}


def setup(name: str, autocast: bool, init_scale: float = 2.0**16):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = OPTIMIZERS[name](model.parameters(), torch.Generator().manual_seed(1))
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)
    data = torch.Generator().manual_seed(2)
    batches = [(torch.randn(16, 20, generator=data), torch.randint(0, 4, (16,), generator=data)) for _ in range(40)]
    calls = iter(range(10**6))
    poison: set[int] = set()

    def closure() -> torch.Tensor:
        k = next(calls)
        x, y = batches[k % len(batches)]
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
            loss = nn.functional.cross_entropy(model(x), y)
        scaled = scaler.scale(loss)
        if k in poison:  # an fp16 overflow in this call's backward, as a too-large scale gives
            scaled = scaled * float("inf")
        scaled.backward()
        return loss

    scaler.scale(torch.zeros(()))  # GradScaler makes its scale at its first scale(); a closure calls it in step
    return model, opt, scaler, closure, poison


def snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_gradscaler_in_float32_gives_the_unscaled_steps_bit_for_bit(name: str) -> None:
    """Scaling by a power of two and unscaling is exact in float32: the optimizer sees the true gradients."""
    results = []
    for use_scaler in (True, False):
        model, opt, scaler, closure, _ = setup(name, autocast=False)
        for _ in range(3):
            if use_scaler:
                scaler.step(opt, closure)
                scaler.update()
            else:
                with torch.no_grad():
                    scaler._scale.fill_(1.0)  # the closure's scale() multiplies by one: nothing to unscale
                opt.step(closure)
        results.append(snapshot(model))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float16_autocast_trains_through_the_scaler(name: str) -> None:
    model, opt, scaler, closure, _ = setup(name, autocast=True)
    start = snapshot(model)
    losses = []
    for _ in range(12):
        losses.append(float(scaler.step(opt, closure).detach()))
        scaler.update()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not all(torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))
    assert opt.outer_steps == 12
    assert scaler.get_scale() == 2.0**16  # no overflow: the scale grows only after growth_interval clean steps


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_an_overflowing_inner_gradient_skips_the_step_with_the_parameters_unchanged(name: str) -> None:
    model, opt, scaler, closure, poison = setup(name, autocast=True)
    scaler.step(opt, closure)
    scaler.update()
    counters = (opt.outer_steps, opt.grad_evals)
    state = {k: v for k, v in opt.state_dict().items() if k not in ("generator_state", "noise_stream")}
    before = snapshot(model)
    poison.add(3 + 1)  # the second closure call of the second step
    loss = scaler.step(opt, closure)
    scaler.update()
    assert torch.isfinite(torch.as_tensor(loss))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert (opt.outer_steps, opt.grad_evals) == counters
    after = {k: v for k, v in opt.state_dict().items() if k not in ("generator_state", "noise_stream")}
    assert repr(after) == repr(state)
    assert scaler.get_scale() == 2.0**15  # lowered by the backoff factor
    # and the next step goes on normally
    scaler.step(opt, closure)
    scaler.update()
    assert opt.outer_steps == counters[0] + 1
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_the_scaler_state_resumes_with_the_optimizer() -> None:
    model, opt, scaler, closure, poison = setup("entropy-sgd", autocast=True)
    poison.add(1)
    for _ in range(3):
        scaler.step(opt, closure)
        scaler.update()
    saved_opt, saved_scaler = opt.state_dict(), scaler.state_dict()
    assert saved_scaler["scale"] == 2.0**15
    twin_model, twin_opt, twin_scaler, twin_closure, _ = setup("entropy-sgd", autocast=True)
    twin_model.load_state_dict(model.state_dict())
    twin_opt.load_state_dict(saved_opt)
    twin_scaler.load_state_dict(saved_scaler)
    for scaler_, opt_, closure_ in ((scaler, opt, closure), (twin_scaler, twin_opt, twin_closure)):
        scaler_.step(opt_, closure_)
        scaler_.update()
    assert twin_scaler.get_scale() == scaler.get_scale() == 2.0**15
    assert twin_scaler.state_dict() == scaler.state_dict()


def test_without_the_scaler_step_a_scaled_closure_diverges_with_advice() -> None:
    from localentropy.entropy.optim import DivergenceError

    _, opt, _, closure, _ = setup("entropy-sgd", autocast=False, init_scale=2.0**40)
    with pytest.raises(DivergenceError, match=r"scaler\.step\(optimizer, closure\)"):
        for _ in range(5):
            opt.step(closure)


def test_bf16_autocast_needs_no_scaler() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler_options=SAMPLER, inner_steps=3)
    x, y = torch.randn(16, 20), torch.randint(0, 4, (16,))

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [float(opt.step(closure)) for _ in range(10)]
    assert losses[-1] < losses[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float16_on_cuda_trains_and_skips_an_overflow(name: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)).cuda()
    opt = OPTIMIZERS[name](model.parameters(), torch.Generator(device="cuda").manual_seed(1))
    scaler = torch.amp.GradScaler("cuda")
    x, y = torch.randn(64, 20, device="cuda"), torch.randint(0, 4, (64,), device="cuda")
    overflow = [False]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaled = scaler.scale(loss)
        (scaled * float("inf") if overflow[0] else scaled).backward()
        return loss

    scaler.scale(torch.zeros((), device="cuda"))
    for _ in range(3):
        scaler.step(opt, closure)
        scaler.update()
    before = snapshot(model)
    overflow[0] = True
    scaler.step(opt, closure)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert scaler.get_scale() == 2.0**15
