"""The sampler contract on Entropy-SGD's chunked path (docs/samplers.md, "Writing your own sampler").

A sampler written from the docs alone runs through the chunked path and equals the serial path at T > 0 given the
same noise; a sampler that draws noise of its own there is refused by name; chunk states hold no noise buffers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from localentropy.entropy import EntropySGD
from localentropy.entropy.optim.chunks import chunk_generators, chunk_plan
from localentropy.entropy.optim.inner import ChunkedLoop, SerialLoop
from localentropy.samplers import SGLD, SamplerContractError, make_sampler, sampler_class
from localentropy.samplers import registry as sampler_registry
from tests.entropy.optim.helpers import cross_entropy_closure
from tests.samplers.settings import SETTINGS

DOC = Path(__file__).resolve().parents[3] / "docs" / "samplers.md"
USER_SAMPLER = "damped-langevin"


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def big_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(400, 700), nn.ReLU(), nn.Linear(700, 4))  # 283,504 entries: two chunks


@pytest.fixture(scope="module")
def user_sampler() -> Iterator[str]:
    """The example of docs/samplers.md, run as a user would run it (it registers itself by name)."""
    text = DOC.read_text()
    start = text.index("## Writing your own sampler")
    block = re.search(r"^```python\n(.*?)^```", text[start:], re.M | re.S)
    assert block is not None, "no python example in 'Writing your own sampler'"
    exec(compile(block.group(1), str(DOC), "exec"), {"__name__": "user_sampler"})
    yield USER_SAMPLER
    sampler_registry._REGISTRY.pop(USER_SAMPLER)


def noise_of(loop: ChunkedLoop) -> list[Tensor]:
    """The noise the chunked loop's next update will draw, from copies of its chunk generators, shaped like the
    parameters."""
    pieces = []
    for size, generator in zip(loop.sizes, loop.generators, strict=True):
        twin = torch.Generator()
        twin.set_state(generator.get_state())
        pieces.append(torch.empty(size).normal_(generator=twin))
    flat = torch.cat(pieces)
    return [n.view(p.shape) for n, p in zip(flat.split([p.numel() for p in loop.params]), loop.params, strict=True)]


def chunked_and_serial(sampler_name: str, options: dict) -> None:
    sampler = make_sampler(sampler_name, **options)
    params = [torch.randn(700, 400, generator=gen(1)), torch.randn(700, generator=gen(2)), torch.randn(4, 700)]
    twins = [p.clone() for p in params]
    anchor = [p.clone() for p in params]  # an outer step starts with x' = x
    plan = chunk_plan([p.numel() for p in params])
    chunked = ChunkedLoop(sampler, params, anchor, False, chunk_generators(gen(3), len(plan)), plan)
    assert len(plan) > 1 and chunked.elementwise
    serial = SerialLoop(sampler, twins, [a.clone() for a in anchor], False)
    for loop in (chunked, serial):
        loop.begin(0.75, keep=False)
    options = {"gamma": 0.3, "weight_decay": 1e-4, "averaging": 0.75}
    for step in range(3):
        grads = [torch.randn(p.shape, generator=gen(10 + step)) for p in params]
        noise = noise_of(chunked)
        chunked.update([g.clone() for g in grads], gen(99), **options)
        serial.update([g.clone() for g in grads], gen(99), noise=noise, **options)
    for a, b in zip([*params, *chunked.average], [*twins, *serial.average], strict=True):
        assert torch.equal(a, b)


def test_a_sampler_written_from_the_docs_runs_on_the_chunked_path(user_sampler: str) -> None:
    model = big_model()
    x, y = torch.randn(16, 400, generator=gen(4)), torch.randint(0, 4, (16,), generator=gen(5))
    opt = EntropySGD(
        model.parameters(),
        lr=0.1,
        gamma=0.3,
        sampler=user_sampler,
        sampler_options={"step_size": 0.01, "damping": 0.1, "temperature": 1e-4},
        inner_steps=3,
        generator=gen(6),
    )
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(cross_entropy_closure(model, opt, x, y))
    (loop,) = opt._loops.loops.values()
    assert isinstance(loop, ChunkedLoop) and loop.elementwise and len(loop.states) == 2
    assert all(not state.noise.allocated for state in loop.states)  # the chunks were always given their noise
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_the_docs_sampler_on_the_chunked_path_equals_the_serial_path_with_the_same_noise(user_sampler: str) -> None:
    chunked_and_serial(user_sampler, {"step_size": 0.01, "damping": 0.1, "temperature": 1e-3})


@pytest.mark.parametrize("name", [n for n in sorted(SETTINGS) if sampler_class(n).elementwise])
def test_every_elementwise_sampler_on_the_chunked_path_equals_the_serial_path(name: str) -> None:
    chunked_and_serial(name, {**SETTINGS[name], "temperature": 1e-3})


class GlobalDraw(SGLD):
    """Breaks the contract: ignores the given noise and draws from torch's global generator."""

    def step(self, state, grad, generator=None, *, noise=None):
        xi = [torch.randn_like(p) for p in state.position]
        return super().step(state, grad, generator, noise=xi)


class GeneratorDraw(SGLD):
    """Breaks the contract: draws from the generator it is given (None on the chunked path: the global one)."""

    def step(self, state, grad, generator=None, *, noise=None):
        return super().step(state, grad, generator)


@pytest.mark.parametrize("cls", [GlobalDraw, GeneratorDraw])
def test_a_sampler_that_draws_its_own_noise_on_the_chunked_path_is_refused(cls: type[SGLD]) -> None:
    model = big_model()
    x, y = torch.randn(16, 400, generator=gen(4)), torch.randint(0, 4, (16,), generator=gen(5))
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler=cls(step_size=0.01, temperature=1e-4))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(SamplerContractError, match=rf"{cls.__name__}\.step drew from torch's global generator"):
        opt.step(cross_entropy_closure(model, opt, x, y))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    # the serial stream steps it with the optimizer's own generator
    serial = EntropySGD(
        model.parameters(), lr=0.1, gamma=0.3, sampler=cls(step_size=0.01, temperature=1e-4), noise_stream="serial-v0"
    )
    serial.step(cross_entropy_closure(model, serial, x, y))


def test_chunk_states_of_the_built_in_samplers_allocate_no_noise_buffers() -> None:
    model = big_model()
    x, y = torch.randn(16, 400, generator=gen(4)), torch.randint(0, 4, (16,), generator=gen(5))
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler=SGLD(step_size=0.01, temperature=1e-4))
    for _ in range(2):
        opt.step(cross_entropy_closure(model, opt, x, y))
    (loop,) = opt._loops.loops.values()
    assert isinstance(loop, ChunkedLoop)
    assert all(not state.noise.allocated for state in loop.states)
