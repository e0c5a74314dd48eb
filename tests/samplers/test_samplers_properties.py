"""Property tests of the sampler contract (hypothesis): dtypes, code paths, seeds, T = 0 limits, noise kinds.

Covers the three samplers of the original contract, SGLD, SGHMC and pSGLD (see ``localentropy.samplers.base``).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from localentropy.samplers import (
    PSGLD,
    SGHMC,
    SGLD,
    Sampler,
    as_tensor_list,
    draw_noise,
    make_sampler,
    sample,
)

pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ("sgld", "sghmc", "psgld")
DTYPES = (torch.float32, torch.float64)

seeds = st.integers(min_value=0, max_value=2**32 - 1)
dtypes = st.sampled_from(DTYPES)
noise_kinds = st.sampled_from(("gaussian", "rademacher"))
temperatures = st.sampled_from((0.0, 0.5, 1.0, 2.5))


@st.composite
def samplers(draw, names=NAMES, temperature=temperatures, noise=noise_kinds) -> Sampler:
    """A built-in sampler with drawn hyperparameters (stable on the small quadratics used below)."""
    name = draw(st.sampled_from(names))
    common = {"temperature": draw(temperature), "noise": draw(noise)}
    step_size = draw(st.floats(1e-3, 0.2))
    if name == "sgld":
        return SGLD(step_size=step_size, **common)
    if name == "sghmc":
        friction = draw(st.floats(0.01, 1.0))
        noise_estimate = draw(st.sampled_from((0.0, 0.5 * friction, "running")))
        return SGHMC(step_size=step_size, friction=friction, noise_estimate=noise_estimate, **common)
    return PSGLD(
        step_size=step_size,
        beta=draw(st.sampled_from((0.0, 0.5, 0.9, 0.99))),
        damping=draw(st.sampled_from((1e-8, 1e-5, 1e-2))),
        damping_placement=draw(st.sampled_from(("outside", "inside"))),
        **common,
    )


def state_tensors(state) -> list[torch.Tensor]:
    """Every tensor a state holds: the position and the buffers (lists of tensors)."""
    tensors = []
    for value in state:
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, list):
            tensors.extend(value)
    return tensors


def quadratic(d: int, dtype: torch.dtype, generator: torch.Generator):
    """A random well-conditioned quadratic: grad U(x) = (x - m) M, eigenvalues of M in [0.5, 2]."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    eig = 0.5 + 1.5 * torch.rand(d, generator=generator, dtype=torch.float64)
    M = ((q * eig) @ q.T).to(dtype)
    M = (M + M.T) / 2
    m = torch.randn(d, generator=generator, dtype=torch.float64).to(dtype)
    return (lambda x: (x - m) @ M), m, M


# ----------------------------------------------------------------------------------------------------------
# Dtypes and the in-place contract
# ----------------------------------------------------------------------------------------------------------


@given(sampler=samplers(), dtype=dtypes, n=st.integers(1, 6), d=st.integers(1, 9), seed=seeds)
def test_dtype_is_kept_for_position_and_state(sampler: Sampler, dtype: torch.dtype, n: int, d: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    grad_fn, _, _ = quadratic(d, dtype, generator)
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    state = sampler.init(x)
    for _ in range(3):
        state = sampler.step(state, grad_fn(state.position), generator)
    assert state.position is x  # updated in place, not copied
    for tensor in state_tensors(state):
        assert tensor.dtype == dtype
        assert tensor.shape == x.shape
    assert torch.isfinite(x).all()


@given(sampler=samplers(), n_steps=st.integers(0, 12), seed=seeds)
def test_state_step_counts_steps(sampler: Sampler, n_steps: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(torch.randn(3, 2, generator=generator, dtype=torch.float64))
    assert state.step == 0
    for k in range(1, n_steps + 1):
        state = sampler.step(state, state.position.clone(), generator)
        assert state.step == k


# ----------------------------------------------------------------------------------------------------------
# One tensor or a list of tensors: the same code path
# ----------------------------------------------------------------------------------------------------------


@given(
    sampler=samplers(),
    dtype=dtypes,
    n=st.integers(1, 8),
    d=st.integers(2, 40),
    split=st.floats(0.0, 1.0),
    n_steps=st.integers(1, 6),
    seed=seeds,
)
def test_tensor_and_list_paths_agree_exactly(
    sampler: Sampler, dtype: torch.dtype, n: int, d: int, split: float, n_steps: int, seed: int
) -> None:
    k = 1 + int(split * (d - 2))  # 1 <= k <= d - 1
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=generator, dtype=dtype)
    single = sampler.init(X.clone())
    parts = sampler.init([X[:, :k].clone(), X[:, k:].clone()])
    for _ in range(n_steps):
        grad = torch.randn(n, d, generator=generator, dtype=dtype)
        noise = torch.randn(n, d, generator=generator, dtype=dtype)
        single = sampler.step(single, grad, noise=noise)
        parts = sampler.step(parts, [grad[:, :k], grad[:, k:]], noise=[noise[:, :k], noise[:, k:]])
        assert torch.equal(single.position, torch.cat(parts.position, dim=1))
    # the buffers agree too (but the noise buffers, left unused when the noise is given)
    for field in single._fields:
        a, b = getattr(single, field), getattr(parts, field)
        if isinstance(b, list) and field not in ("position", "noise"):
            assert torch.equal(a[0], torch.cat(b, dim=1)), field
    assert single.step == parts.step == n_steps


@given(sampler=samplers(), seed=seeds)
def test_network_like_parameter_list(sampler: Sampler, seed: int) -> None:
    """A list of differently shaped tensors (a weight matrix and a bias) behaves as their flattened concatenation."""
    generator = torch.Generator().manual_seed(seed)
    W = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    b = torch.randn(4, generator=generator, dtype=torch.float64)
    flat = sampler.init(torch.cat([W.flatten(), b]).clone())
    params = sampler.init([W.clone(), b.clone()])
    for _ in range(4):
        g = torch.randn(16, generator=generator, dtype=torch.float64)
        z = torch.randn(16, generator=generator, dtype=torch.float64)
        flat = sampler.step(flat, g, noise=z)
        params = sampler.step(params, [g[:12].view(3, 4), g[12:]], noise=[z[:12].view(3, 4), z[12:]])
    assert torch.equal(flat.position, torch.cat([params.position[0].flatten(), params.position[1]]))


@given(sampler=samplers(), seed=seeds)
def test_generator_and_given_noise_agree(sampler: Sampler, seed: int) -> None:
    """Drawing from a generator is the same as passing the noise that generator would draw."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    drawn, given_noise = sampler.init(x.clone()), sampler.init(x.clone())
    gen_a, gen_b = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 1)
    for _ in range(3):
        grad = drawn.position.clone()
        drawn = sampler.step(drawn, grad, gen_a)
        noise = draw_noise([torch.empty_like(x)], sampler.noise, gen_b) if sampler.temperature > 0 else None
        given_noise = sampler.step(given_noise, given_noise.position.clone(), noise=noise)
        assert torch.equal(drawn.position, given_noise.position)


# ----------------------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------------------


@given(
    sampler=samplers(temperature=st.sampled_from((0.5, 1.0))),
    seed=st.integers(0, 2**31),
    other=st.integers(1, 2**31),
)
def test_one_seed_gives_the_same_draws(sampler: Sampler, seed: int, other: int) -> None:
    init = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def draws(s: int) -> torch.Tensor:
        return sample(sampler, lambda x: 0.5 * x, init, 8, generator=torch.Generator().manual_seed(s))

    first = draws(seed)
    assert torch.equal(first, draws(seed))
    assert not torch.equal(first, draws(seed + other))


# ----------------------------------------------------------------------------------------------------------
# T = 0: each sampler is its optimiser
# ----------------------------------------------------------------------------------------------------------


def _run_against_optimizer(
    sampler: Sampler, make_optimizer, d: int, n_steps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grad_fn, _, _ = quadratic(d, torch.float64, generator)
    x0 = torch.randn(5, d, generator=generator, dtype=torch.float64)
    state = sampler.init(x0.clone())
    param = torch.nn.Parameter(x0.clone())
    optimizer = make_optimizer([param])
    for _ in range(n_steps):
        state = sampler.step(state, grad_fn(state.position))
        optimizer.zero_grad()
        param.grad = grad_fn(param.detach())
        optimizer.step()
    return state.position, param.detach()


@given(h=st.floats(1e-3, 0.5), d=st.integers(1, 6), n_steps=st.integers(1, 12), seed=seeds)
def test_sgld_at_zero_temperature_is_sgd(h: float, d: int, n_steps: int, seed: int) -> None:
    sampler = SGLD(step_size=h, temperature=0.0)
    ours, theirs = _run_against_optimizer(sampler, lambda p: torch.optim.SGD(p, lr=h), d, n_steps, seed)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@given(
    eta=st.floats(1e-3, 0.5), friction=st.floats(0.01, 1.0), d=st.integers(1, 6), n_steps=st.integers(1, 12), seed=seeds
)
def test_sghmc_at_zero_temperature_is_sgd_with_momentum(
    eta: float, friction: float, d: int, n_steps: int, seed: int
) -> None:
    sampler = SGHMC(step_size=eta, friction=friction, temperature=0.0)
    ours, theirs = _run_against_optimizer(
        sampler, lambda p: torch.optim.SGD(p, lr=eta, momentum=1 - friction), d, n_steps, seed
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@given(
    h=st.floats(1e-3, 0.1),
    beta=st.floats(0.0, 0.999),
    damping=st.sampled_from((1e-8, 1e-5, 1e-3, 0.1)),
    d=st.integers(1, 6),
    n_steps=st.integers(1, 12),
    seed=seeds,
)
def test_psgld_at_zero_temperature_is_rmsprop(
    h: float, beta: float, damping: float, d: int, n_steps: int, seed: int
) -> None:
    sampler = PSGLD(step_size=h, beta=beta, damping=damping, temperature=0.0, damping_placement="outside")
    ours, theirs = _run_against_optimizer(
        sampler, lambda p: torch.optim.RMSprop(p, lr=h, alpha=beta, eps=damping), d, n_steps, seed
    )
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@given(eta=st.floats(1e-3, 0.5), temperature=st.floats(0.1, 3.0), seed=seeds)
def test_sghmc_with_friction_one_is_sgld(eta: float, temperature: float, seed: int) -> None:
    """With friction 1 the velocity is forgotten every step: SGHMC is SGLD with h = eta."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    hmc, ld = SGHMC(step_size=eta, friction=1.0, temperature=temperature), SGLD(step_size=eta, temperature=temperature)
    a, b = hmc.init(x.clone()), ld.init(x.clone())
    for _ in range(5):
        noise = torch.randn(4, 3, generator=generator, dtype=torch.float64)
        a = hmc.step(a, 0.7 * a.position, noise=noise)
        b = ld.step(b, 0.7 * b.position, noise=noise)
        torch.testing.assert_close(a.position, b.position, rtol=1e-12, atol=1e-12)


@given(sampler=samplers(), seed=seeds)
def test_step_follows_the_documented_update(sampler: Sampler, seed: int) -> None:
    """One step from a fresh state, given grad and noise, against the update written in each docstring."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    g = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    z = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    T = sampler.temperature
    if isinstance(sampler, SGLD):
        expected = x - sampler.step_size * g + math.sqrt(2 * sampler.step_size * T) * z
    elif isinstance(sampler, SGHMC):
        beta_hat = 0.0 if sampler.running else sampler.noise_estimate  # a running estimate starts at 0
        c = math.sqrt(2 * (sampler.friction - beta_hat) * sampler.step_size * T)
        expected = x + (-sampler.step_size * g + c * z)  # the velocity starts at zero
    else:
        V = (1 - sampler.beta) * g * g
        if sampler.damping_placement == "outside":
            G = 1 / (sampler.damping + V.sqrt())
        else:
            G = 1 / (sampler.damping + V).sqrt()
        expected = x - sampler.step_size * G * g + (2 * sampler.step_size * T * G).sqrt() * z
    state = sampler.step(sampler.init(x.clone()), g, noise=z)
    torch.testing.assert_close(state.position, expected, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------------------------------
# Noise kinds
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_rademacher_noise_is_plus_or_minus_one(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(3)
    n = 200_000
    (buffer,) = draw_noise([torch.empty(n, dtype=dtype)], "rademacher", generator)
    assert set(buffer.unique().tolist()) == {-1.0, 1.0}
    mean = buffer.double().mean().item()
    assert abs(mean) < 5 / math.sqrt(n)  # mean 0, sd 1 / sqrt(n)
    assert buffer.double().var(correction=0).item() == pytest.approx(1.0, abs=25 / n)  # 1 - mean^2


@given(name=st.sampled_from(NAMES), seed=seeds)
def test_samplers_draw_rademacher_noise(name: str, seed: int) -> None:
    sampler = make_sampler(name, step_size=0.01, noise="rademacher")
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(torch.randn(64, 5, generator=generator, dtype=torch.float64))
    for _ in range(3):
        state = sampler.step(state, state.position.clone(), generator)
        assert set(state.noise[0].unique().tolist()) <= {-1.0, 1.0}


@given(h=st.floats(1e-3, 0.5), temperature=st.floats(0.1, 3.0), seed=seeds)
def test_sgld_rademacher_increments(h: float, temperature: float, seed: int) -> None:
    """(x' - x + h g) / sqrt(2 h T) is the injected noise: +-1 for Rademacher noise."""
    sampler = SGLD(step_size=h, temperature=temperature, noise="rademacher")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    before = x.clone()
    g = 0.3 * before
    sampler.step(sampler.init(x), g, generator)
    increments = (x - before + h * g) / math.sqrt(2 * h * temperature)
    torch.testing.assert_close(increments.abs(), torch.ones_like(x), rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------
# Hyperparameters
# ----------------------------------------------------------------------------------------------------------


@given(sampler=samplers(), temperature=st.floats(0.0, 10.0))
def test_replace_returns_a_new_validated_sampler(sampler: Sampler, temperature: float) -> None:
    before = dict(sampler.hyperparameters)
    changed = sampler.replace(temperature=temperature)
    assert changed is not sampler and type(changed) is type(sampler)
    assert changed.temperature == temperature
    assert sampler.hyperparameters == before  # the original is unchanged
    assert {k: v for k, v in changed.hyperparameters.items() if k != "temperature"} == {
        k: v for k, v in before.items() if k != "temperature"
    }
    with pytest.raises(ValueError, match="temperature"):
        sampler.replace(temperature=-1.0)
    assert sampler.hyperparameters == before


@given(sampler=samplers())
def test_hyperparameters_round_trip(sampler: Sampler) -> None:
    name = type(sampler).name
    again = make_sampler(name, **sampler.hyperparameters)
    assert again == sampler and hash(again) == hash(sampler)
    assert again is not sampler
    assert repr(sampler).startswith(type(sampler).__name__ + "(")
    if sampler.temperature != 1.0:
        assert sampler.replace(temperature=1.0) != sampler


# ----------------------------------------------------------------------------------------------------------
# sample()
# ----------------------------------------------------------------------------------------------------------


@given(
    name=st.sampled_from(NAMES),
    n_chains=st.integers(1, 4),
    event_shape=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    n_steps=st.integers(1, 25),
    burn_fraction=st.floats(0.0, 0.99),
    thin=st.integers(1, 5),
    seed=seeds,
)
def test_sample_shape_and_kept_steps(
    name: str, n_chains: int, event_shape: list[int], n_steps: int, burn_fraction: float, thin: int, seed: int
) -> None:
    burn_in = int(burn_fraction * n_steps)
    n_draws = (n_steps - burn_in) // thin
    if n_draws < 1:
        thin = 1
        n_draws = n_steps - burn_in
    sampler = make_sampler(name, step_size=0.05)
    init = torch.randn(n_chains, *event_shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    init_copy = init.clone()

    def grad_fn(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x

    draws = sample(
        sampler, grad_fn, init, n_steps, generator=torch.Generator().manual_seed(seed), burn_in=burn_in, thin=thin
    )
    assert draws.shape == (n_chains, n_draws, *event_shape)
    assert draws.dtype == init.dtype
    assert torch.equal(init, init_copy)  # init is not modified
    # draw j is the position after step burn_in + (j + 1) * thin of the same chain run by hand
    generator = torch.Generator().manual_seed(seed)
    state = sampler.init(init.clone())
    kept = []
    for k in range(1, n_steps + 1):
        state = sampler.step(state, grad_fn(state.position), generator)
        if k > burn_in and (k - burn_in) % thin == 0:
            kept.append(state.position.clone())
    assert torch.equal(draws, torch.stack(kept, dim=1))


def test_as_tensor_list_views() -> None:
    x = torch.zeros(2, 3)
    assert as_tensor_list(x)[0] is x
    parts = (torch.zeros(2), torch.zeros(3))
    assert [t is p for t, p in zip(as_tensor_list(parts), parts, strict=True)] == [True, True]


def test_step_on_network_parameters_needs_no_no_grad():
    """The README's training-loop use: parameters that require grad are the position, no torch.no_grad() needed."""
    from localentropy.samplers import available_samplers, make_sampler

    for name in ["sgld", "sghmc", "psgld", "msgld", "sgnht", "baoab"]:
        assert name in available_samplers()
        model = torch.nn.Linear(3, 2)
        params = list(model.parameters())
        sampler = make_sampler(name, step_size=1e-3)
        state = sampler.init(params)
        before = [p.detach().clone() for p in params]
        model(torch.randn(5, 3)).pow(2).sum().backward()
        state = sampler.step(state, [p.grad for p in params], torch.Generator().manual_seed(0))
        assert state.step == 1
        assert all(p.requires_grad for p in params)
        assert any(not torch.equal(b, p.detach()) for b, p in zip(before, params, strict=True))
