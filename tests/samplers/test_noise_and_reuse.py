"""The fast Rademacher draw, buffer reuse (``Sampler.reset``, EntropySGD across outer steps), the estimator's
allocation-free coupling, and agreement of Rademacher with Gaussian noise on the non-convex test problems.

Agreement (the last test) is statistical: on DoubleWell and SharpWide, LocalEntropyEstimator with SGLD is run
with both noise kinds; each estimate of g = gamma (x - <x'>) and of the sampled variance is compared with the
quadrature value and with the other noise kind, with Monte Carlo standard errors from the spread of independent
chains (replicates), Bonferroni-corrected. SGLD's O(h) bias is allowed for explicitly (h kappa_max / 2 relative,
the bias of SGLD's variance on a quadratic); the step sizes keep it near the Monte Carlo error.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from localentropy.entropy import EntropySGD, LocalEntropyEstimator
from localentropy.samplers import SGLD, available_samplers, draw_noise, make_sampler
from localentropy.samplers.base import NoiseBuffers, Sampler, noise_buffers
from tests.entropy.optim.helpers import cross_entropy_closure as _closure
from tests.samplers.settings import SETTINGS
from tests.stats import bonferroni_z

pytestmark = pytest.mark.usefixtures("single_thread")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _potential(position):
    if isinstance(position, torch.Tensor):
        return 0.5 * position.square().reshape(position.shape[0], -1).sum(-1)
    return sum(0.5 * p.square().sum() for p in position)


def make(name: str, noise: str = "gaussian"):
    if name == "mala":
        return make_sampler("mala", step_size=0.05, potential=_potential)
    if name == "cyclical":
        base = {"name": "sghmc", "step_size": 0.01, "noise": noise}
        return make_sampler("cyclical", sampler=base, n_cycles=2, total_steps=10)
    return make_sampler(name, **SETTINGS[name], noise=noise)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------
# The Rademacher draw
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rademacher_is_deterministic_and_the_same_through_every_layout(dtype: torch.dtype) -> None:
    shapes = [(7, 3), (5,), (0,), (130,), (64,), (1, 1)]
    positions = [torch.zeros(s, dtype=dtype) for s in shapes]
    fast = noise_buffers(positions, "rademacher")
    assert isinstance(fast, NoiseBuffers) and fast.rademacher is not None and fast.rademacher.views
    plain = [torch.empty(s, dtype=dtype) for s in shapes]  # a user-written sampler's buffers: temporary scratch
    mixed = [torch.empty(s, dtype=torch.float64 if k % 2 else dtype) for k, s in enumerate(shapes)]
    draw_noise(fast, "rademacher", gen(4))
    draw_noise(plain, "rademacher", gen(4))
    draw_noise(mixed, "rademacher", gen(4))
    again = noise_buffers(positions, "rademacher")
    draw_noise(again, "rademacher", gen(4))
    for a, b, c, d in zip(fast, plain, mixed, again, strict=True):
        assert torch.equal(a, b) and torch.equal(a.double(), c.double()) and torch.equal(a, d)
        assert set(a.unique().tolist()) <= {-1.0, 1.0}
    # a second draw from the same generator differs (fresh bits), from a fresh generator repeats
    g = gen(4)
    draw_noise(fast, "rademacher", g)
    first = [t.clone() for t in fast]
    draw_noise(fast, "rademacher", g)
    assert not all(torch.equal(a, b) for a, b in zip(first, fast, strict=True))


def test_rademacher_bits_are_balanced_and_independent() -> None:
    """Every bit position of the 64-bit words (the sign bit included) is a fair coin; neighbours are uncorrelated."""
    n = 64 * 4096
    (buffer,) = draw_noise(noise_buffers([torch.empty(n, dtype=torch.float64)], "rademacher"), "rademacher", gen(0))
    by_bit = buffer.reshape(-1, 64)  # column k: bit k of each word (bytes little-endian, bits LSB first)
    z = bonferroni_z(64 + 2)
    assert by_bit.mean(0).abs().max().item() < z / math.sqrt(by_bit.shape[0])
    assert abs(buffer.mean().item()) < z / math.sqrt(n)
    assert abs((buffer[1:] * buffer[:-1]).mean().item()) < z / math.sqrt(n - 1)


def test_noise_buffers_are_views_of_one_flat_tensor_and_steps_keep_them() -> None:
    params = [torch.randn(33, 5), torch.randn(7), torch.randn(2, 2, 2)]
    sampler = SGLD(step_size=0.01, noise="rademacher")
    state = sampler.init(params)
    scratch = state.noise.rademacher
    pointers = [t.data_ptr() for t in (*state.noise, scratch.flat, scratch.words, scratch.index, scratch.table)]
    assert state.noise[0].data_ptr() == scratch.flat.data_ptr()
    for _ in range(3):
        state = sampler.step(state, [torch.ones_like(p) for p in params], gen(1))
    after = [t.data_ptr() for t in (*state.noise, scratch.flat, scratch.words, scratch.index, scratch.table)]
    assert after == pointers and state.noise.rademacher is scratch
    assert all(set(t.unique().tolist()) <= {-1.0, 1.0} for t in state.noise)


def test_gaussian_buffers_are_drawn_as_before() -> None:
    """Gaussian noise: one normal_ call per buffer, in order (the numbers the existing tests are built on)."""
    positions = [torch.zeros(5, 3), torch.zeros(17)]
    buffers = draw_noise(noise_buffers(positions, "gaussian"), "gaussian", gen(2))
    g = gen(2)
    expected = [torch.empty(5, 3).normal_(generator=g), torch.empty(17).normal_(generator=g)]
    assert all(torch.equal(a, b) for a, b in zip(buffers, expected, strict=True))


# ----------------------------------------------------------------------------------------------------------
# reset: init's state, reusing the buffers
# ----------------------------------------------------------------------------------------------------------


def _fields(state) -> dict:
    out = {}
    for name, value in state._asdict().items():
        if name in ("noise", "proposal", "preconditioner", "direction"):  # scratch, rewritten before being read
            continue
        if isinstance(value, torch.Tensor):
            out[name] = value.clone()
        elif isinstance(value, list):
            out[name] = [t.clone() for t in value]
        else:
            out[name] = value
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), key
        elif isinstance(x, list):
            assert all(torch.equal(u, v) for u, v in zip(x, y, strict=True)), key
        else:
            assert x == y, key


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "list"])
@pytest.mark.parametrize("name", available_samplers())
def test_reset_equals_a_fresh_init_and_allocates_nothing(name: str, batched: bool) -> None:
    sampler = make(name)
    position = torch.randn(4, 3, generator=gen(0)) if batched else [torch.randn(4, 3, generator=gen(0)), torch.randn(2)]
    state = sampler.init(position)
    g = gen(1)
    for _ in range(4):
        grad = position.clone() if batched else [p.clone() for p in position]
        state = sampler.step(state, grad, g)
    kept = [t.data_ptr() for t in state if isinstance(t, torch.Tensor)]
    kept += [t.data_ptr() for f in state if isinstance(f, list) for t in f]
    reset = sampler.reset(state)
    _assert_same(_fields(reset), _fields(sampler.init(position)))
    again = [t.data_ptr() for t in reset if isinstance(t, torch.Tensor)]
    again += [t.data_ptr() for f in reset if isinstance(f, list) for t in f]
    assert again == kept
    # and the next step from the reset state is the step from a fresh state
    grad = position.clone() if batched else [p.clone() for p in position]
    copy = position.clone() if batched else [p.clone() for p in position]
    fresh = sampler.init(copy)
    a = sampler.step(reset, grad, gen(5))
    b = sampler.step(fresh, grad, gen(5))
    pa, pb = (
        (a.position, b.position)
        if batched
        else (torch.cat([p.flatten() for p in a.position]), torch.cat([p.flatten() for p in b.position]))
    )
    assert torch.equal(pa, pb)


def test_the_default_reset_of_a_user_sampler_calls_init() -> None:
    calls = []

    class Mine(Sampler):
        name = "mine-reset-test"

        def __init__(self) -> None:
            self._check_common(1.0, "gaussian")

        def init(self, position):
            calls.append(1)
            return SGLD(0.1).init(position)

        def step(self, state, grad, generator=None, *, noise=None):
            return state

    sampler = Mine()
    state = sampler.init(torch.zeros(2, 2))
    sampler.reset(state)
    assert len(calls) == 2


# ----------------------------------------------------------------------------------------------------------
# EntropySGD keeps its sampler state across outer steps
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
@pytest.mark.parametrize("name", ["sgld", "sghmc", "psgld", "msgld", "sgnht", "baoab", "cyclical"])
def test_entropy_sgd_reuses_the_sampler_state_and_matches_a_fresh_init(name: str, noise: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    twin = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    twin.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 6, generator=gen(3)), torch.randint(0, 3, (16,), generator=gen(3))
    sampler = make(name, noise)
    opts = [
        EntropySGD(m.parameters(), lr=0.1, gamma=0.1, sampler=sampler, inner_steps=3, generator=gen(7))
        for m in (model, twin)
    ]
    pointers = None
    for _ in range(3):
        opts[0].step(_closure(model, opts[0], x, y))
        opts[1]._loops.forget()  # the twin starts every outer step from sampler.init, as before the reuse
        opts[1].step(_closure(twin, opts[1], x, y))
        (cached,) = opts[0]._loops.loops.values()
        now = [t.data_ptr() for t in cached.state.noise]
        assert pointers is None or now == pointers
        pointers = now
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_entropy_sgd_makes_a_new_state_when_the_trainable_parameters_change() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    opt = EntropySGD(
        model.parameters(), lr=0.1, gamma=0.1, sampler="sgld", sampler_options={"step_size": 0.01}, inner_steps=2
    )
    opt.step(_closure(model, opt, x, y))
    model[0].weight.requires_grad_(False)
    opt.step(_closure(model, opt, x, y))
    (cached,) = opt._loops.loops.values()
    assert len(cached.state.position) == 3
    assert all(p is not model[0].weight for p in cached.state.position)


# ----------------------------------------------------------------------------------------------------------
# The estimator's coupling: no allocation, and grad_fn's tensors are left alone
# ----------------------------------------------------------------------------------------------------------


def _reference_estimate(grad_fn, x, gamma, sampler, n_steps, n_chains, seed):
    """The estimator's loop written out with the allocating expression it replaced."""
    state = sampler.init(x.unsqueeze(0).repeat(n_chains, 1))
    mu = torch.zeros_like(state.position)
    g = gen(seed)
    for _ in range(n_steps):
        grad = grad_fn(state.position) + gamma * (state.position - x)
        state = sampler.step(state, grad, g)
        mu.add_(state.position)
    return gamma * (x - mu / n_steps)


@pytest.mark.parametrize("kind", ["fresh", "the position itself", "a cached tensor", "float64 for float32"])
def test_estimator_coupling_gives_the_same_numbers_and_leaves_grad_fn_tensors_alone(kind: str) -> None:
    x = torch.linspace(-1, 1, 5)
    cached = torch.full((3, 5), 0.25)
    grad_fns = {
        "fresh": lambda p: 0.5 * p,
        "the position itself": lambda p: p,
        "a cached tensor": lambda p: cached,
        "float64 for float32": lambda p: p.double(),
    }
    grad_fn = grad_fns[kind]
    sampler = SGLD(step_size=0.05, temperature=0.3)
    est = LocalEntropyEstimator(grad_fn, 1.5, sampler, 12)
    result = est.estimate(x, n_chains=3, generator=gen(8))
    expected = _reference_estimate(grad_fn, x, 1.5, sampler, 12, 3, 8)
    torch.testing.assert_close(result.chain_grads, expected.to(result.chain_grads.dtype), rtol=0, atol=0)
    assert torch.equal(cached, torch.full((3, 5), 0.25))


# ----------------------------------------------------------------------------------------------------------
# Rademacher against Gaussian noise on the non-convex problems
# ----------------------------------------------------------------------------------------------------------


def load_agreement():
    spec = importlib.util.spec_from_file_location("rademacher_agreement", BENCHMARKS / "rademacher_agreement.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


@pytest.mark.slow
def test_rademacher_estimates_agree_with_gaussian_and_quadrature_on_nonconvex_problems() -> None:
    agreement = load_agreement()
    rows = []
    for k in agreement.QUICK:
        label, problem, x, gamma, temperature, h, steps = agreement.CASES[k]
        row = agreement.run_case(
            problem, x, gamma, temperature, h, chains=400, steps=steps, burn_in=steps // 4, seed=100 + k
        )
        rows.append((label, row))
    n_tests = sum(3 * 2 * len(row["x"]) for _, row in rows)  # (gauss, rad, difference) x (g, var) x coordinates
    z = bonferroni_z(n_tests)
    for label, row in rows:
        slack = row["h_kappa_max"] / 2  # SGLD's relative O(h) bias (its variance on a quadratic)
        for key, exact_key in (("g", "exact_g"), ("var", "exact_var")):
            for i, exact in enumerate(row[exact_key]):
                sd = math.sqrt(row["exact_var"][i])
                bias = slack * (row["gamma"] * sd if key == "g" else exact)
                g, r = row["gaussian"], row["rademacher"]
                for est in (g, r):
                    assert abs(est[key][i] - exact) <= z * est[f"{key}_mcse"][i] + bias, (label, key, i, row)
                gap = abs(r[key][i] - g[key][i])
                assert gap <= z * math.hypot(r[f"{key}_mcse"][i], g[f"{key}_mcse"][i]) + bias, (label, key, i, row)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
@pytest.mark.parametrize("name", ["sgld", "sghmc", "psgld", "msgld", "sgnht", "baoab", "cyclical"])
def test_an_entropy_sgd_outer_step_allocates_only_what_its_closure_does(name: str, noise: str) -> None:
    """After the first outer step, no tensor of a parameter's size is allocated outside the closure (torch.profiler).

    The optimizer sets the gradients to None before each closure call (as ``zero_grad()`` does), so the closure's
    backward allocates them: the closure's own count is taken from the same start."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.ReLU(), nn.Linear(200, 10))
    x, y = torch.randn(4, 300, generator=gen(0)), torch.randint(0, 10, (4,), generator=gen(0))
    opt = EntropySGD(model.parameters(), lr=0.01, gamma=0.1, sampler=make(name, noise), inner_steps=3)

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    def large_allocations(fn) -> int:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        # >= the smallest weight; the step's own record (net of the gradients it freed and the backward made) is no
        # allocation of its own
        events = [e for e in prof.events() if not e.name.startswith("Optimizer.step#")]
        return sum(1 for e in events if e.cpu_memory_usage >= 200 * 10 * 4)

    def closure_on_cleared_gradients():
        opt.zero_grad(set_to_none=True)
        return closure()

    opt.step(closure)
    assert large_allocations(lambda: opt.step(closure)) == 3 * large_allocations(closure_on_cleared_gradients)
