"""The noise generator follows the parameters' device, and optimizer state loads across devices.

Before the fix the generator was bound at construction to the device of the first parameter, so an optimizer
built before ``model.to("cuda")`` (accelerate's usual order) drew CPU noise for CUDA tensors, and a state
whose generator state was on the GPU (``map_location="cuda"``, ``accelerator.prepare``) or came from another
device type could not be loaded. Without a GPU the device logic is tested on the "meta" device and with
generator states of CUDA's layout; ``test_cuda_round_trip`` runs only where CUDA is available.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropySGD
from localentropy.entropy.optim import base

SGLD = {"sampler": "sgld", "sampler_options": {"step_size": 0.05, "temperature": 1e-3}}
MAKERS = {
    "EntropySGD": lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, inner_steps=2, **SGLD),
    "LPFSGD": lambda ps: LPFSGD(ps, lr=0.1, sigma=0.1, n_samples=2),
}


def closure_for(model: nn.Module, device: str = "cpu", seed: int = 9):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 3, generator=g).to(device), torch.randint(0, 2, (8,), generator=g).to(device)

    def closure():
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return closure


def switch_to_meta(opt) -> None:
    """Put the parameters on another device, as accelerate's prepare does when it swaps them (a parameter's
    data cannot be moved from the CPU to "meta" in place, as model.to("cuda") does)."""
    for group in opt.param_groups:
        group["params"] = [nn.Parameter(torch.empty_like(p, device="meta")) for p in group["params"]]


@pytest.fixture
def made_on(monkeypatch):
    """The devices generators are asked for (a CPU generator stands in for one on another device)."""
    devices = []

    def fake(device: torch.device, seed: int) -> torch.Generator:
        devices.append(torch.device(device))
        return torch.Generator().manual_seed(seed)

    monkeypatch.setattr(base, "new_generator", fake)
    return devices


@pytest.mark.parametrize("name", list(MAKERS))
def test_the_generator_is_made_on_the_device_the_parameters_have_at_first_use(name, made_on) -> None:
    model = nn.Linear(3, 2)
    opt = MAKERS[name](model.parameters())  # built on the CPU ...
    assert made_on == []  # ... nothing bound yet
    switch_to_meta(opt)  # ... then the parameters move
    opt.generator  # noqa: B018 (first use)
    assert made_on == [torch.device("meta")]


def test_the_default_generator_is_seeded_at_construction_whatever_the_first_use() -> None:
    """torch.manual_seed before construction fixes the noise, however late the generator is made."""
    torch.manual_seed(3)
    first = EntropySGD(nn.Linear(3, 2).parameters(), lr=0.1, gamma=1.0)
    torch.manual_seed(3)
    second = EntropySGD(nn.Linear(3, 2).parameters(), lr=0.1, gamma=1.0)
    torch.rand(100)  # global RNG draws between construction and first use change nothing
    assert torch.equal(first.generator.get_state(), second.generator.get_state())


def test_the_generator_follows_the_parameters_to_another_device_deterministically(made_on) -> None:
    model = nn.Linear(3, 2)
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=1.0, generator=torch.Generator().manual_seed(1))
    opt.step(closure_for(model))
    switch_to_meta(opt)
    opt.generator  # noqa: B018
    assert made_on == [torch.device("meta")]


def cuda_layout_state(opt) -> dict:
    """A state_dict as written on a GPU: CUDA's generator state is 16 bytes (seed and offset)."""
    state = opt.state_dict()
    state["generator_state"] = torch.arange(16, dtype=torch.uint8)
    state["generator_device"] = "cuda"
    return state


@pytest.mark.parametrize("name", list(MAKERS))
def test_a_state_saved_on_another_device_type_loads_with_a_deterministic_stream(name) -> None:
    model = nn.Linear(3, 2)
    opt = MAKERS[name](model.parameters())
    opt.step(closure_for(model))
    state = cuda_layout_state(opt)
    loaded = []
    for _ in range(2):
        fresh = MAKERS[name](nn.Linear(3, 2).parameters())
        with pytest.warns(UserWarning, match="saved on cuda and the parameters are on cpu"):
            fresh.load_state_dict(state)
        loaded.append(fresh.generator.get_state())
        assert fresh.outer_steps == 1
    assert torch.equal(loaded[0], loaded[1])


def test_a_state_through_torch_save_with_map_location_resumes_identically() -> None:
    model = nn.Linear(3, 2)
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=1.0, inner_steps=2, **SGLD)
    opt.step(closure_for(model))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, map_location="cpu")
    twin = nn.Linear(3, 2)
    twin.load_state_dict(saved["model"])
    resumed = EntropySGD(twin.parameters(), lr=0.1, gamma=1.0, inner_steps=2, **SGLD)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same device type: no warning
        resumed.load_state_dict(saved["opt"])
    opt.step(closure_for(model))
    resumed.step(closure_for(twin))
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_scratch_buffers_follow_a_dtype_change() -> None:
    """x is kept in buffers like the parameters: after model.double() an interrupted step restores x exactly."""
    model = nn.Linear(3, 2)
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=1.0, inner_steps=3, **SGLD)
    opt.step(closure_for(model))
    model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-12)  # not representable next to these values in float32
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    with pytest.raises(KeyboardInterrupt):
        opt.step(closure)
    for p, q in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, q)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", list(MAKERS))
def test_cuda_round_trip(name: str) -> None:
    """Built before model.to("cuda"); state saved on the GPU loads onto the GPU (map_location) bit-identically,
    and onto the CPU with a derived stream."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = MAKERS[name](model.parameters())
    model.to("cuda")
    closure = closure_for(model, "cuda")
    opt.step(closure)
    assert opt.generator.device.type == "cuda"
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, map_location="cuda")
    twin = nn.Linear(3, 2).to("cuda")
    twin.load_state_dict(saved["model"])
    resumed = MAKERS[name](twin.parameters())
    resumed.load_state_dict(saved["opt"])
    assert torch.equal(resumed.generator.get_state(), opt.generator.get_state())
    buffer.seek(0)
    on_cpu = torch.load(buffer, map_location="cpu")
    cpu_model = nn.Linear(3, 2)
    cpu_model.load_state_dict(on_cpu["model"])
    cpu_opt = MAKERS[name](cpu_model.parameters())
    with pytest.warns(UserWarning, match="saved on cuda"):
        cpu_opt.load_state_dict(on_cpu["opt"])
    cpu_opt.step(closure_for(cpu_model))
