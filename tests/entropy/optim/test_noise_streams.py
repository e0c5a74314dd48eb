"""The chunked noise stream of the Entropy-SGD inner loop ("chunked-v1"): its definition, its independence from
the number of threads, its statistics, resume, and equality with the serial path wherever no noise is drawn."""

from __future__ import annotations

import copy
import math
import signal
import threading
import time

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from localentropy._threads import torch_threads
from localentropy.entropy import EntropySGD
from localentropy.entropy.optim import chunks
from localentropy.entropy.optim.chunks import chunk_generators, chunk_plan, chunk_seeds
from localentropy.samplers import SGLD, make_sampler
from tests.entropy.optim.helpers import cross_entropy_closure as _closure
from tests.samplers.settings import SETTINGS


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=8), st.integers(1, 700), st.integers(0, 3000))
def test_chunk_plan_covers_every_entry_once_in_order(numels: list[int], size: int, serial_below: int) -> None:
    plan = chunk_plan(numels, chunk_size=size, serial_below=serial_below)
    flat = [(i, j) for chunk in plan for i, start, stop in chunk for j in range(start, stop)]
    assert flat == [(i, j) for i, n in enumerate(numels) for j in range(n)]
    total = sum(numels)
    lengths = [sum(stop - start for _, start, stop in chunk) for chunk in plan]
    if total < serial_below or total == 0:
        assert len(plan) == 1
    else:
        assert all(n == size for n in lengths[:-1]) and 0 < lengths[-1] <= size


def test_chunk_seeds_are_distinct_32_bit_and_deterministic() -> None:
    seeds = chunk_seeds(12345, 50)
    assert len(set(seeds)) == 50 and all(0 <= s < 2**32 for s in seeds)
    assert seeds == chunk_seeds(12345, 50)
    assert chunk_seeds(12345 + 2**32, 50) != seeds  # the full 63-bit draw matters, not its low 32 bits


def _big_model() -> nn.Module:
    torch.manual_seed(0)  # 3 chunks of 2^18 and a remainder: 800,000 + 8,200 entries
    return nn.Sequential(nn.Linear(400, 2000), nn.Tanh(), nn.Linear(2000, 4))


def _noise_only(model: nn.Module, opt: EntropySGD, steps: int = 1) -> list[torch.Tensor]:
    """x' - x after SGLD steps on a zero loss with no coupling: the noise the stream drew, scaled."""
    before = [p.detach().clone() for p in model.parameters()]

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = sum((p * 0).sum() for p in model.parameters())
        loss.backward()
        return loss

    opt.step(closure)
    return [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]


def _sgld_opt(model: nn.Module, seed: int, **options) -> EntropySGD:
    sampler = SGLD(step_size=0.5, temperature=1.0)
    return EntropySGD(
        model.parameters(),
        lr=1.0,
        gamma=1e-12,
        sampler=sampler,
        inner_steps=1,
        averaging=1.0,
        outer_scale="unit",
        generator=gen(seed),
        **options,
    )


@pytest.mark.parametrize("threads", [2, 3])
def test_the_draw_does_not_depend_on_the_number_of_threads(threads: int) -> None:
    reference_model = _big_model()
    with torch_threads(1):  # no pool: the chunks run one after another on this thread
        reference = _noise_only(reference_model, _sgld_opt(reference_model, 5))
    model = _big_model()
    with torch_threads(threads):
        drawn = _noise_only(model, _sgld_opt(model, 5))
        assert chunks._POOL is not None and threads == chunks._POOL_SIZE
        assert torch.get_num_threads() == threads  # the pool's single-threaded workers leave the caller's alone
    assert len(chunk_plan([p.numel() for p in model.parameters()])) == 4
    for a, b in zip(reference, drawn, strict=True):
        assert torch.equal(a, b)


def test_the_stream_is_the_chunk_generators_drawn_from_the_optimizers_generator() -> None:
    """The definition of "chunked-v1", written out: one 63-bit draw of the optimizer's generator gives the chunk
    seeds; chunk k's noise is ``normal_`` of its own generator over its slice of the concatenated parameters."""
    model = _big_model()
    drawn = torch.cat([d.reshape(-1) for d in _noise_only(model, _sgld_opt(model, 9))])
    numels = [p.numel() for p in model.parameters()]
    generators = chunk_generators(gen(9), len(chunk_plan(numels)))
    expected = torch.cat(
        [torch.empty(n).normal_(generator=g) for n, g in zip(_lengths(numels), generators, strict=True)]
    )
    # x' - x = sqrt(2 h T) xi, h T = 0.5; the gradient of the zero loss and the coupling (1e-12 x 0) add nothing
    torch.testing.assert_close(drawn, expected, rtol=1e-6, atol=1e-6)


def _lengths(numels: list[int]) -> list[int]:
    return [sum(stop - start for _, start, stop in chunk) for chunk in chunk_plan(numels)]


def test_chunked_noise_is_standard_normal_and_chunks_are_uncorrelated() -> None:
    model = _big_model()
    xi = torch.cat([d.reshape(-1) for d in _noise_only(model, _sgld_opt(model, 11))]).double()
    n = xi.numel()
    # mean 0 and variance 1 within 5 standard errors (the variance's is sqrt(2 / n) for a normal)
    assert abs(xi.mean().item()) < 5 / math.sqrt(n)
    assert abs(xi.var().item() - 1.0) < 5 * math.sqrt(2 / n)
    size = chunks.CHUNK_SIZE
    first, second = xi[:size], xi[size : 2 * size]
    correlation = torch.corrcoef(torch.stack([first, second]))[0, 1].item()
    assert abs(correlation) < 5 / math.sqrt(size)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_at_temperature_zero_the_chunked_path_equals_the_serial_one(name: str) -> None:
    x, y = torch.randn(32, 400, generator=gen(1)), torch.randint(0, 4, (32,), generator=gen(2))
    results = []
    for stream in ("chunked-v1", "serial-v0"):
        model = _big_model()
        sampler = make_sampler(name, **SETTINGS[name], temperature=0.0)
        opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler=sampler, inner_steps=3, noise_stream=stream)
        for _ in range(2):
            opt.step(_closure(model, opt, x, y))
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["sgld", "sghmc", "psgld", "sgnht"])
@pytest.mark.parametrize("warm_start", [False, True])
def test_resume_is_bit_identical_with_the_chunk_generators(name: str, warm_start: bool) -> None:
    x, y = torch.randn(32, 400, generator=gen(1)), torch.randint(0, 4, (32,), generator=gen(2))
    sampler = make_sampler(name, **SETTINGS[name], temperature=1e-4)

    def build(model):
        return EntropySGD(
            model.parameters(),
            lr=0.1,
            gamma=0.3,
            sampler=sampler,
            inner_steps=2,
            generator=gen(3),
            warm_start=warm_start,
        )

    model = _big_model()
    opt = build(model)
    for _ in range(2):
        opt.step(_closure(model, opt, x, y))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(2):
        opt.step(_closure(model, opt, x, y))
    resumed = _big_model()
    resumed.load_state_dict(saved_model)
    resumed_opt = build(resumed)
    resumed_opt.load_state_dict(saved_opt)
    for _ in range(2):
        resumed_opt.step(_closure(resumed, resumed_opt, x, y))
    if warm_start and name != "sgld":
        # sampler momenta are not in state_dict (documented): a resumed warm chain restarts them at zero
        return
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_state_from_the_other_stream_is_refused_with_the_option_named() -> None:
    model = _big_model()
    opt = _sgld_opt(model, 1, noise_stream="serial-v0")
    _noise_only(model, opt)
    with pytest.raises(ValueError, match="noise_stream='serial-v0'"):
        _sgld_opt(model, 1).load_state_dict(opt.state_dict())


def test_an_unknown_stream_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"noise_stream.*chunked-v1.*serial-v0"):
        _sgld_opt(_big_model(), 1, noise_stream="fast")


def test_an_exception_in_a_chunk_propagates() -> None:
    class Broken(SGLD):
        elementwise = True

        def step(self, state, grad, generator=None, *, noise=None):
            raise RuntimeError("chunk failed")

    model = _big_model()
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler=Broken(step_size=0.1), inner_steps=1)
    x, y = torch.randn(8, 400), torch.randint(0, 4, (8,))
    with pytest.raises(RuntimeError, match="chunk failed"):
        opt.step(_closure(model, opt, x, y))


def test_a_dtype_change_of_the_model_rebuilds_the_chunk_views() -> None:
    """``module.double()`` swaps each parameter's data in place: the chunked state must follow the new storage."""
    x, y = torch.randn(32, 400, generator=gen(1)), torch.randint(0, 4, (32,), generator=gen(2))
    model = _big_model()
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler=SGLD(step_size=0.01, temperature=1e-4))
    opt.step(_closure(model, opt, x, y))
    model.double()
    before = [p.detach().clone() for p in model.parameters()]
    opt.step(_closure(model, opt, x.double(), y))
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    loop = opt._loops.loops[0]
    assert all(a.dtype == torch.float64 for a in loop.average)
    assert all(v.data_ptr() == p.data_ptr() for v, p in zip(loop.param_views[0], model.parameters(), strict=False))


def test_a_dtype_change_rebuilds_the_serial_loop_too() -> None:
    """A group below the chunking threshold runs serially; its loop follows the new storage as the chunked one does."""
    from localentropy.entropy.optim.inner import SerialLoop

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 4))
    x, y = torch.randn(16, 20, generator=gen(1)), torch.randint(0, 4, (16,), generator=gen(2))
    opt = EntropySGD(model.parameters(), lr=0.1, gamma=0.3, sampler=SGLD(step_size=0.01, temperature=1e-4))
    opt.step(_closure(model, opt, x, y))
    first = opt._loops.loops[0]
    assert isinstance(first, SerialLoop)
    model.double()
    opt.step(_closure(model, opt, x.double(), y))
    loop = opt._loops.loops[0]
    assert loop is not first and isinstance(loop, SerialLoop)
    assert all(a.dtype == torch.float64 for a in loop.average)
    assert all(t.dtype == torch.float64 for t in loop.state.noise)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pipelined_chunks_run_each_chunk_once_with_its_own_draw_and_keep_the_order(threads: int) -> None:
    """run_pipelined hands work(k) the draw made for k, whichever worker drew it; a noise slot is never given to a
    second draw before the first one's work is done; the results come in chunk order."""
    lock = threading.Lock()
    busy: set[int] = set()  # the slots whose noise is drawn and not yet used
    drawn: list[int] = []

    def draw(k: int, slot: int) -> tuple[int, int]:
        with lock:
            assert slot not in busy
            busy.add(slot)
            drawn.append(k)
        time.sleep(0.001)  # long enough for the other workers to take tasks meanwhile
        return (k, slot)

    def work(k: int, noise: tuple[int, int]) -> int:
        assert noise[0] == k and not torch.is_grad_enabled()
        with lock:
            busy.remove(noise[1])
        return 10 * k

    with torch_threads(threads):
        assert chunks.run_pipelined(draw, work, 9) == [10 * k for k in range(9)]
    assert sorted(drawn) == list(range(9)) and not busy


@pytest.mark.parametrize("failing", ["draw", "work"])
def test_a_pipelined_task_that_fails_raises_after_every_worker_stopped(failing: str) -> None:
    done: list[int] = []

    def draw(k: int, slot: int) -> int:
        if failing == "draw" and k == 2:
            raise RuntimeError("chunk 2 failed")
        return k

    def work(k: int, noise: int) -> int:
        if failing == "work" and k == 2:
            raise RuntimeError("chunk 2 failed")
        done.append(k)
        return k

    with torch_threads(2), pytest.raises(RuntimeError, match="chunk 2 failed"):
        chunks.run_pipelined(draw, work, 8)
    finished = len(done)
    time.sleep(0.05)
    assert len(done) == finished  # nothing still running in the pool after the raise


@pytest.mark.parametrize("schedule", ["run_chunks", "run_pipelined"])
def test_ctrl_c_while_the_chunks_run_returns_only_after_every_worker_stopped(schedule: str) -> None:
    """A KeyboardInterrupt on the caller's thread, while the pool works, propagates only once no chunk runs any
    more: the optimizer puts the parameters back right after, and no worker may still write to them then."""
    ended: list[float] = []
    caller = threading.main_thread().ident

    def work(k: int, noise: object = None) -> int:
        if k == 0:  # Ctrl-C, delivered to the caller's thread as it waits for the pool
            signal.pthread_kill(caller, signal.SIGINT)
        time.sleep(0.02)
        ended.append(time.perf_counter())
        return k

    with torch_threads(2), pytest.raises(KeyboardInterrupt):
        if schedule == "run_chunks":
            chunks.run_chunks(work, 8)
        else:
            chunks.run_pipelined(lambda k, slot: None, work, 8)
    raised = time.perf_counter()
    time.sleep(0.1)
    assert ended and all(t <= raised for t in ended)
