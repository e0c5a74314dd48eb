"""EntropySGD, EntropyAdam, EntropyOptimizer and LPFSGD against hand-computed trajectories and known minimisers.

Hand computations follow the update rules of ANCHORS.md / MATH.md line by line. Noise is reproduced exactly:
the optimizers draw it with ``buffer.normal_(generator=gen)``, one call per parameter tensor in parameter order,
once per inner step (LPF-SGD: once per sample), so a generator seeded like the optimizer's regenerates it.
"""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from localentropy.entropy import LPFSGD, EntropyAdam, EntropyOptimizer, EntropySGD
from localentropy.entropy.optim import DivergenceError, filter_norms
from localentropy.entropy.problems import Quadratic
from localentropy.experiments.digits import run_digits
from localentropy.samplers import SGLD, MomentumSGLD

F64 = torch.float64
RTOL = 1e-12


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread


# A small 2-D quadratic f(x) = 1/2 x^T A x - b^T x used by the hand computations.
A2 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
B2 = torch.tensor([1.0, -1.0], dtype=F64)
X0 = torch.tensor([3.0, -2.0], dtype=F64)


def grad2(x: torch.Tensor) -> torch.Tensor:
    return A2 @ x - B2


def quadratic_closure(param: torch.Tensor, A: torch.Tensor, b: torch.Tensor, calls: list | None = None):
    """Zero the gradient, f(x) = 1/2 x^T A x - b^T x forward and backward, return the loss."""

    def closure():
        if param.grad is not None:
            param.grad.zero_()
        loss = 0.5 * param @ A @ param - b @ param
        loss.backward()
        if calls is not None:
            calls.append(loss.detach().clone())
        return loss.detach()

    return closure


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hand_inner(
    xs,
    grad_fns,
    gammas,
    *,
    inner_steps,
    step_size,
    alpha,
    noise_std=0.0,
    generator=None,
    momentum=0.0,
    nesterov=False,
    coupling="inside",
):
    """mu after one inner loop, by hand, for a list of parameter tensors (noise drawn per tensor, in order)."""
    xp = [x.clone() for x in xs]
    mu = [x.clone() for x in xs]
    buf = [torch.zeros_like(x) for x in xs]  # the inner momentum buffer, reset every outer step
    for _ in range(inner_steps):
        grads = [fn(p) for fn, p in zip(grad_fns, xp, strict=True)]  # all gradients at the same x' (one closure)
        for i, x in enumerate(xs):
            force = gammas[i] * (xp[i] - x)
            g = grads[i] + force if coupling == "inside" else grads[i]
            if momentum:
                buf[i] = momentum * buf[i] + g
                d = g + momentum * buf[i] if nesterov else buf[i]
            else:
                d = g
            if coupling == "after_momentum":
                d = d + force
            xp[i] = xp[i] - step_size * d
            if noise_std:
                xp[i] = xp[i] + noise_std * torch.empty_like(x).normal_(generator=generator)
            mu[i] = (1 - alpha) * mu[i] + alpha * xp[i]
    return mu


class HandSGD:
    """torch.optim.SGD's update (no dampening) on a given direction, by hand."""

    def __init__(self, lr, momentum=0.0, nesterov=False):
        self.lr, self.momentum, self.nesterov, self.buf = lr, momentum, nesterov, None

    def step(self, x, direction):
        if not self.momentum:
            return x - self.lr * direction
        self.buf = direction.clone() if self.buf is None else self.momentum * self.buf + direction
        update = direction + self.momentum * self.buf if self.nesterov else self.buf
        return x - self.lr * update


# ---------------------------------------------------------------------------------------------------------
# Convergence and training
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("temperature", "momentum", "lr", "tol"),
    [(0.0, 0.0, 1.0, 1e-9), (1e-8, 0.5, 0.5, 1e-3)],
    ids=["T0-plain", "T1e-8-nesterov"],
)
def test_entropy_sgd_minimises_a_quadratic(temperature, momentum, lr, tol):
    """The fixed point of Entropy-SGD on a quadratic is its minimiser A^-1 b (at x*, grad f = 0 and the inner
    chain stays at x*); at T > 0 the inner-loop noise leaves a floor of about sqrt(T / lambda) in mu."""
    problem = Quadratic.random(10, 10, seed=0)
    minimiser = torch.linalg.solve(problem.A, problem.b)
    param = nn.Parameter(torch.zeros(10, dtype=F64))
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": temperature},
        inner_steps=20,
        momentum=momentum,
        nesterov=momentum > 0,
        generator=gen(0),
    )
    closure = quadratic_closure(param, problem.A, problem.b)
    start = float(torch.linalg.norm(param.detach() - minimiser))
    for _ in range(40):
        opt.step(closure)
    error = float(torch.linalg.norm(param.detach() - minimiser))
    assert error < tol * start, (error, start)


def test_digits_accuracy_default_and_presets():
    """220 gradient evaluations on scikit-learn digits (CLI: entropy-sgd 0.971, paper 0.906, authors 0.926)."""
    rows = {
        r.optimizer: r
        for r in run_digits(epochs=10, optimizers=["entropy-sgd", "entropy-sgd paper", "entropy-sgd authors"])
    }
    assert rows["entropy-sgd"].test_accuracy >= 0.93
    assert rows["entropy-sgd paper"].test_accuracy >= 0.85
    assert rows["entropy-sgd authors"].test_accuracy >= 0.85
    for row in rows.values():
        assert row.grad_evals == 220  # L = 5 divides the 220-call budget


# ---------------------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("inner_steps", [1, 3, 7])
def test_closure_call_counts_and_returned_loss(inner_steps):
    param = nn.Parameter(X0.clone())
    calls: list = []
    opt = EntropySGD(
        [param],
        lr=0.1,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": 1e-4},
        inner_steps=inner_steps,
        generator=gen(1),
    )
    closure = quadratic_closure(param, A2, B2, calls)
    for t in range(1, 5):
        x = param.detach().clone()
        before = len(calls)
        loss = opt.step(closure)
        assert len(calls) - before == inner_steps
        # the first call is at x, before any inner step: its loss is f(x)
        assert torch.equal(loss, calls[before])
        torch.testing.assert_close(loss, 0.5 * x @ A2 @ x - B2 @ x, rtol=RTOL, atol=0)
        assert opt.outer_steps == t
        assert opt.grad_evals == inner_steps * t
        state = opt.state_dict()["state"][0]
        assert state["grad_evals"] == inner_steps * t
        assert state["outer_step"] == t


# ---------------------------------------------------------------------------------------------------------
# Scoping and hand-computed trajectories
# ---------------------------------------------------------------------------------------------------------


def test_scoping_advances_gamma_and_the_step_uses_gamma_t():
    """1-D quadratic, T = 0: SGLD is gradient descent and mu is computable by hand."""
    a, b = 2.0, 1.0
    gamma0, scoping, lr, h, alpha, inner = 0.5, 1.0, 0.5, 0.1, 0.75, 3
    param = nn.Parameter(torch.tensor([3.0], dtype=F64))
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=gamma0,
        scoping=scoping,
        sampler="sgld",
        sampler_options={"step_size": h, "temperature": 0.0},
        inner_steps=inner,
        averaging=alpha,
    )
    closure = quadratic_closure(param, torch.tensor([[a]], dtype=F64), torch.tensor([b], dtype=F64))

    def by_hand(x, gamma):
        xp = mu = x
        for _ in range(inner):
            xp = xp - h * (a * xp - b + gamma * (xp - x))
            mu = (1 - alpha) * mu + alpha * xp
        return x - lr * gamma * (x - mu)

    x = 3.0
    for t in range(3):
        assert opt.current_gammas() == pytest.approx([gamma0 * (1 + scoping) ** t], rel=1e-15)
        opt.step(closure)
        expected = by_hand(x, gamma0 * (1 + scoping) ** t)
        assert float(param.detach()) == pytest.approx(expected, rel=RTOL, abs=1e-14)
        if t > 0:  # the test tells gamma_t from gamma_0
            assert abs(by_hand(x, gamma0) - expected) > 1e-3
        x = expected
    assert opt.current_gammas() == pytest.approx([gamma0 * 8], rel=1e-15)


def test_paper_preset_matches_hand_trajectory():
    """Algorithm 1: SGLD noise sqrt(eta') eps xi, mu <- 0.25 mu + 0.75 x', x <- x - lr gamma (x - mu)."""
    eta_p, eps, gamma, scoping, lr, inner = 0.1, 0.2, 0.8, 0.5, 0.5, 3
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=gamma,
        scoping=scoping,
        inner_steps=inner,
        preset="paper",
        sampler_options={"step_size": eta_p, "noise_scale": eps},
        generator=gen(7),
    )
    assert isinstance(opt.sampler, SGLD)
    assert opt.sampler.temperature == pytest.approx(eps**2 / 2)
    closure = quadratic_closure(param, A2, B2)
    hand_gen, x = gen(7), X0.clone()
    for t in range(2):
        gamma_t = gamma * (1 + scoping) ** t
        (mu,) = hand_inner(
            [x],
            [grad2],
            [gamma_t],
            inner_steps=inner,
            step_size=eta_p,
            alpha=0.75,
            noise_std=math.sqrt(eta_p) * eps,
            generator=hand_gen,
        )
        x = x - lr * gamma_t * (x - mu)
        opt.step(closure)
        torch.testing.assert_close(param.detach(), x, rtol=RTOL, atol=1e-13)
    assert torch.equal(opt.generator.get_state(), hand_gen.get_state())  # the same number of draws


def authors_hand(x, inner, eta_p, eps, gamma, hand_gen, coupling):
    (mu,) = hand_inner(
        [x],
        [grad2],
        [gamma],
        inner_steps=inner,
        step_size=eta_p,
        alpha=0.25,
        noise_std=eps * math.sqrt(2 * eta_p),
        generator=hand_gen,
        momentum=0.9,
        nesterov=True,
        coupling=coupling,
    )
    return mu


@pytest.mark.parametrize("coupling", ["inside", "after_momentum"])
def test_authors_preset_matches_hand_trajectory(coupling):
    """Inner Nesterov SGD (m = 0.9) reset every outer step, noise eps sqrt(2 eta') xi, mu <- 0.75 mu + 0.25 x',
    x <- x - lr (x - mu). coupling="after_momentum" is the Lua code's own placement of the coupling."""
    eta_p, eps, gamma, lr, inner = 0.1, 0.2, 0.8, 0.7, 3
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=gamma,
        inner_steps=inner,
        preset="authors",
        coupling=coupling,
        sampler_options={"step_size": eta_p, "noise_scale": eps},
        generator=gen(11),
    )
    assert isinstance(opt.sampler, MomentumSGLD) and opt.sampler.nesterov and opt.sampler.momentum == 0.9
    closure = quadratic_closure(param, A2, B2)
    hand_gen, x = gen(11), X0.clone()
    for _ in range(3):  # the inner buffer restarts at zero each outer step (hand_inner starts it at zero)
        mu = authors_hand(x, inner, eta_p, eps, gamma, hand_gen, coupling)
        x = x - lr * (x - mu)
        opt.step(closure)
        torch.testing.assert_close(param.detach(), x, rtol=RTOL, atol=1e-13)


@pytest.mark.parametrize("inner_nesterov", [False, True])
@pytest.mark.parametrize("outer_nesterov", [False, True])
def test_after_momentum_coupling_and_outer_momentum_match_hand(inner_nesterov, outer_nesterov):
    """msgld with the coupling added after the momentum; outer SGD momentum/Nesterov on x - mu (the port's options)."""
    h, m, T, gamma, lr, inner = 0.05, 0.9, 1e-3, 1.5, 0.4, 2
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=gamma,
        sampler="msgld",
        sampler_options={"step_size": h, "momentum": m, "nesterov": inner_nesterov, "temperature": T},
        coupling="after_momentum",
        averaging=0.25,
        outer_scale="unit",
        momentum=0.9,
        nesterov=outer_nesterov,
        inner_steps=inner,
        generator=gen(3),
    )
    closure = quadratic_closure(param, A2, B2)
    hand_gen, x, outer = gen(3), X0.clone(), HandSGD(lr, 0.9, outer_nesterov)
    for _ in range(3):
        (mu,) = hand_inner(
            [x],
            [grad2],
            [gamma],
            inner_steps=inner,
            step_size=h,
            alpha=0.25,
            noise_std=math.sqrt(2 * h * T / (1 - m)),
            generator=hand_gen,
            momentum=m,
            nesterov=inner_nesterov,
            coupling="after_momentum",
        )
        x = outer.step(x, x - mu)
        opt.step(closure)
        torch.testing.assert_close(param.detach(), x, rtol=RTOL, atol=1e-13)
    torch.testing.assert_close(opt.state[param]["momentum_buffer"], outer.buf, rtol=RTOL, atol=1e-13)


def test_inner_weight_decay_and_uniform_averaging_match_hand():
    h, wd, gamma, lr, inner = 0.1, 0.3, 1.0, 0.5, 3
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=gamma,
        sampler="sgld",
        sampler_options={"step_size": h, "temperature": 0.0},
        weight_decay=wd,
        averaging="uniform",
        inner_steps=inner,
    )
    assert opt.param_groups[0]["inner_weight_decay"] == wd
    assert opt.param_groups[0]["weight_decay"] == 0  # the base SGD's own decay stays off
    closure = quadratic_closure(param, A2, B2)
    x = X0.clone()
    xp, total = x.clone(), torch.zeros_like(x)
    for _ in range(inner):
        xp = xp - h * (grad2(xp) + wd * xp + gamma * (xp - x))
        total = total + xp
    x = x - lr * gamma * (x - total / inner)
    opt.step(closure)
    torch.testing.assert_close(param.detach(), x, rtol=RTOL, atol=1e-13)


# ---------------------------------------------------------------------------------------------------------
# Resume, schedulers, parameter groups, other base optimizers
# ---------------------------------------------------------------------------------------------------------


class FixedBatches:
    """A closure over a fixed list of batches, read in order from ``start``: the same data after a resume."""

    def __init__(self, model, batches, start=0):
        self.model, self.batches, self.i = model, batches, start

    def __call__(self):
        inputs, targets = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.model.zero_grad()
        loss = nn.functional.cross_entropy(self.model(inputs), targets)
        loss.backward()
        return loss.detach()


def tiny_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def tiny_batches(n=5, size=6):
    g = gen(123)
    return [(torch.randn(size, 4, generator=g, dtype=F64), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


RESUMABLE = {
    "entropy-sgd": lambda ps, g: EntropySGD(
        ps,
        lr=0.2,
        gamma=0.5,
        scoping=0.1,
        sampler="sgld",
        sampler_options={"step_size": 0.05, "temperature": 1e-3},
        inner_steps=3,
        momentum=0.9,
        nesterov=True,
        generator=g,
    ),
    "entropy-sgd authors": lambda ps, g: EntropySGD(
        ps,
        lr=0.5,
        gamma=0.5,
        inner_steps=3,
        preset="authors",
        sampler_options={"step_size": 0.05, "noise_scale": 0.03},
        generator=g,
    ),
    "entropy-adam": lambda ps, g: EntropyAdam(
        ps,
        lr=1e-2,
        gamma=0.5,
        sampler="sghmc",
        sampler_options={"step_size": 0.01, "temperature": 1e-3},
        inner_steps=2,
        generator=g,
    ),
    "lpf-sgd": lambda ps, g: LPFSGD(ps, lr=0.1, sigma=0.05, n_samples=2, generator=g),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_resume_from_state_dicts_is_exact(name):
    make, batches, warm, k = RESUMABLE[name], tiny_batches(), 3, 4
    model = tiny_model(0)
    opt = make(model.parameters(), gen(1))
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    closure = FixedBatches(model, batches)
    for _ in range(warm):
        opt.step(closure)
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": scheduler.state_dict()}, buffer)
    position = closure.i
    for _ in range(k):
        opt.step(closure)
        scheduler.step()
    expected = [p.detach().clone() for p in model.parameters()]

    fresh = tiny_model(99)  # different weights and a different noise seed: everything must come from the files
    fresh_opt = make(fresh.parameters(), gen(2024))
    fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2, gamma=0.5)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    fresh.load_state_dict(saved["model"])
    fresh_opt.load_state_dict(saved["opt"])
    fresh_scheduler.load_state_dict(saved["sched"])
    assert fresh_opt.outer_steps == warm
    fresh_closure = FixedBatches(fresh, batches, start=position)
    for _ in range(k):
        fresh_opt.step(fresh_closure)
        fresh_scheduler.step()
    for got, want in zip(fresh.parameters(), expected, strict=True):
        assert torch.equal(got.detach(), want)
    assert fresh_opt.outer_steps == warm + k
    assert fresh_opt.grad_evals == opt.grad_evals


def test_lr_scheduler_changes_the_base_step():
    """A linear loss: the direction D does not depend on x, so successive displacements are -lr_t D."""
    c = torch.tensor([1.0, -2.0], dtype=F64)
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=1.0,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": 0.0},
        inner_steps=3,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        param.grad = None
        loss = c @ param
        loss.backward()
        return loss.detach()

    moves, lrs = [], []
    for _ in range(4):
        before = param.detach().clone()
        lrs.append(opt.param_groups[0]["lr"])
        assert opt.base.param_groups[0]["lr"] == lrs[-1]  # the base optimizer reads the same group dict
        opt.step(closure)
        scheduler.step()
        moves.append(param.detach() - before)
    assert lrs == [1.0, 0.5, 0.25, 0.125]
    for t in range(1, 4):
        torch.testing.assert_close(moves[t], moves[0] * lrs[t], rtol=1e-12, atol=0)


def test_two_param_groups_with_their_own_lr_and_gamma():
    """Each group follows its own hand trajectory; noise is drawn per tensor in order within each inner step."""
    A1, b1 = A2, B2
    A3 = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=F64))
    b3 = torch.tensor([0.5, 0.0, -1.0], dtype=F64)
    p1, p3 = nn.Parameter(X0.clone()), nn.Parameter(torch.ones(3, dtype=F64))
    h, T, inner = 0.05, 1e-2, 3
    opt = EntropySGD(
        [{"params": [p1], "lr": 0.5, "gamma": 1.0}, {"params": [p3], "lr": 0.2, "gamma": 3.0, "scoping": 0.5}],
        lr=0.1,
        gamma=10.0,
        sampler="sgld",
        sampler_options={"step_size": h, "temperature": T},
        inner_steps=inner,
        generator=gen(5),
    )

    def closure():
        p1.grad = p3.grad = None
        loss = 0.5 * p1 @ A1 @ p1 - b1 @ p1 + 0.5 * p3 @ A3 @ p3 - b3 @ p3
        loss.backward()
        return loss.detach()

    hand_gen, x1, x3 = gen(5), X0.clone(), torch.ones(3, dtype=F64)
    for t in range(2):
        gammas = [1.0, 3.0 * 1.5**t]
        assert opt.current_gammas() == pytest.approx(gammas)
        mu1, mu3 = hand_inner(
            [x1, x3],
            [lambda x: A1 @ x - b1, lambda x: A3 @ x - b3],
            gammas,
            inner_steps=inner,
            step_size=h,
            alpha=0.75,
            noise_std=math.sqrt(2 * h * T),
            generator=hand_gen,
        )
        x1 = x1 - 0.5 * gammas[0] * (x1 - mu1)
        x3 = x3 - 0.2 * gammas[1] * (x3 - mu3)
        opt.step(closure)
        torch.testing.assert_close(p1.detach(), x1, rtol=RTOL, atol=1e-13)
        torch.testing.assert_close(p3.detach(), x3, rtol=RTOL, atol=1e-13)


def test_a_frozen_group_does_not_shift_the_gammas_of_the_others():
    """Regression: gamma_t was paired with the groups after those without trainable parameters were dropped."""
    frozen = nn.Parameter(torch.zeros(2, dtype=F64), requires_grad=False)
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [{"params": [frozen], "gamma": 100.0}, {"params": [param], "gamma": 1.0}],
        lr=0.5,
        gamma=5.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": 0.0},
        inner_steps=2,
    )
    (mu,) = hand_inner([X0], [grad2], [1.0], inner_steps=2, step_size=0.1, alpha=0.75)
    opt.step(quadratic_closure(param, A2, B2))
    torch.testing.assert_close(param.detach(), X0 - 0.5 * 1.0 * (X0 - mu), rtol=RTOL, atol=1e-13)
    assert torch.equal(frozen, torch.zeros(2, dtype=F64))


def test_entropy_adam_is_adam_on_the_local_entropy_direction():
    """Regression: Adam initialises a parameter's state lazily when it is empty, so the step counters must be
    written after the base step (EntropyAdam used to fail with KeyError 'exp_avg')."""
    gamma, h, inner = 1.0, 0.1, 3
    param = nn.Parameter(X0.clone())
    opt = EntropyAdam(
        [param],
        lr=0.05,
        gamma=gamma,
        betas=(0.5, 0.99),
        sampler="sgld",
        sampler_options={"step_size": h, "temperature": 0.0},
        inner_steps=inner,
    )
    reference = nn.Parameter(X0.clone())
    adam = torch.optim.Adam([reference], lr=0.05, betas=(0.5, 0.99))
    closure = quadratic_closure(param, A2, B2)
    for _ in range(3):
        x = reference.detach().clone()
        (mu,) = hand_inner([x], [grad2], [gamma], inner_steps=inner, step_size=h, alpha=0.75)
        reference.grad = gamma * (x - mu)
        adam.step()
        opt.step(closure)
        torch.testing.assert_close(param.detach(), reference.detach(), rtol=1e-12, atol=1e-13)
    state = opt.state_dict()["state"][0]
    assert {"exp_avg", "exp_avg_sq", "step", "grad_evals", "outer_step"} <= set(state)
    assert state["grad_evals"] == 3 * inner and float(state["step"]) == 3.0
    torch.testing.assert_close(state["exp_avg"], adam.state[reference]["exp_avg"], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("base", [torch.optim.RMSprop, torch.optim.AdamW, torch.optim.SGD])
def test_entropy_optimizer_accepts_any_base_optimizer(base):
    problem = Quadratic.random(4, 4, seed=1)
    param = nn.Parameter(torch.zeros(4, dtype=F64))
    opt = EntropyOptimizer(
        [param],
        base,
        lr=0.05,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": 0.0},
        inner_steps=5,
    )
    closure = quadratic_closure(param, problem.A, problem.b)
    first = float(opt.step(closure))
    for _ in range(40):
        last = float(opt.step(closure))
    assert last < first
    assert opt.grad_evals == 41 * 5


# ---------------------------------------------------------------------------------------------------------
# LPF-SGD
# ---------------------------------------------------------------------------------------------------------


def test_filter_norms_shapes_and_values():
    weight = torch.randn(5, 3, generator=gen(0))
    conv = torch.randn(4, 3, 2, 2, generator=gen(1))
    bias = torch.randn(5, generator=gen(2))
    scalar = torch.tensor(-2.0)
    assert filter_norms(weight).shape == (5, 1)
    torch.testing.assert_close(filter_norms(weight)[:, 0], weight.norm(dim=1))
    assert filter_norms(conv).shape == (4, 1, 1, 1)
    torch.testing.assert_close(filter_norms(conv).flatten(), conv.flatten(1).norm(dim=1))
    assert filter_norms(bias).shape == (1,)
    torch.testing.assert_close(filter_norms(bias), bias.norm().reshape(1))
    assert filter_norms(scalar).shape == ()  # regression: a 0-d parameter used to break LPFSGD's in-place noise
    assert float(filter_norms(scalar)) == 2.0


def lpf_model():
    torch.manual_seed(0)
    return nn.Linear(3, 4).double()


def test_lpfsgd_calls_the_closure_n_samples_times_with_the_regenerated_noise():
    model, sigma, n_samples = lpf_model(), 0.05, 3
    x = torch.randn(8, 3, generator=gen(9), dtype=F64)
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model.parameters()])
        model.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss.detach()

    opt = LPFSGD(model.parameters(), lr=0.0, sigma=sigma, n_samples=n_samples, generator=gen(4))
    hand_gen = gen(4)
    for t in range(1, 3):
        origin = [p.detach().clone() for p in model.parameters()]
        seen.clear()
        opt.step(closure)
        assert len(seen) == n_samples and opt.grad_evals == n_samples * t and opt.outer_steps == t
        for perturbed in seen:
            for p0, q in zip(origin, perturbed, strict=True):
                xi = torch.empty_like(p0).normal_(generator=hand_gen)
                torch.testing.assert_close(q - p0, xi * sigma * filter_norms(p0), rtol=1e-9, atol=1e-15)


def test_lpfsgd_noise_std_per_row_is_sigma_times_row_norm():
    """Statistical check: per output row, the sample std of the perturbations over N draws is within 5 standard
    errors (1 / sqrt(2 (n - 1)) relative, Gaussian) of sigma ||row||."""
    model, sigma, steps = lpf_model(), 0.1, 300
    origin = [p.detach().clone() for p in model.parameters()]
    deltas: list[list[torch.Tensor]] = [[], []]

    def closure():
        for i, (p, p0) in enumerate(zip(model.parameters(), origin, strict=True)):
            deltas[i].append(p.detach() - p0)
        model.zero_grad()
        loss = model(torch.ones(1, 3, dtype=F64)).sum()
        loss.backward()
        return loss.detach()

    opt = LPFSGD(model.parameters(), lr=0.0, sigma=sigma, momentum=0.0, generator=gen(8))
    for _ in range(steps):
        opt.step(closure)
    weight_deltas = torch.stack(deltas[0])  # (steps, 4, 3)
    bias_deltas = torch.stack(deltas[1])  # (steps, 4)
    for row in range(4):
        draws = weight_deltas[:, row, :].flatten()
        expected = sigma * float(origin[0][row].norm())
        se = 1 / math.sqrt(2 * (draws.numel() - 1))
        assert abs(float(draws.std()) / expected - 1) < 5 * se
        assert abs(float(draws.mean())) < 5 * expected / math.sqrt(draws.numel())
    bias_draws = bias_deltas.flatten()
    expected = sigma * float(origin[1].norm())
    assert abs(float(bias_draws.std()) / expected - 1) < 5 / math.sqrt(2 * (bias_draws.numel() - 1))


def test_lpfsgd_cosine_sigma_schedule():
    sigma, growth, total = 1e-3, 15.0, 4
    param = nn.Parameter(X0.clone())
    opt = LPFSGD([param], lr=0.0, sigma=sigma, sigma_schedule="cosine", sigma_growth=growth, total_steps=total)
    closure = quadratic_closure(param, A2, B2)
    seen = {}
    for t in range(total + 2):
        seen[t] = opt.current_sigmas()[0]
        opt.step(closure)
    assert seen[0] == pytest.approx(sigma, rel=1e-15)
    assert seen[total // 2] == pytest.approx(sigma * (1 + (growth - 1) / 2), rel=1e-14)
    assert seen[total] == pytest.approx(sigma * growth, rel=1e-14)
    assert seen[total + 1] == pytest.approx(sigma * growth, rel=1e-14)  # held after total_steps
    assert all(seen[t] < seen[t + 1] for t in range(total))


@pytest.mark.parametrize("nesterov", [False, True])
def test_lpfsgd_step_is_sgd_momentum_on_the_averaged_perturbed_gradient(nesterov):
    sigma, lr, n_samples = 0.1, 0.1, 3
    param = nn.Parameter(X0.clone())
    opt = LPFSGD([param], lr=lr, sigma=sigma, n_samples=n_samples, momentum=0.9, nesterov=nesterov, generator=gen(6))
    closure = quadratic_closure(param, A2, B2)
    hand_gen, x, outer = gen(6), X0.clone(), HandSGD(lr, 0.9, nesterov)
    for _ in range(3):
        norm = x.norm()  # a 1-D parameter: the whole tensor's norm
        grads = [grad2(x + sigma * norm * torch.empty(2, dtype=F64).normal_(generator=hand_gen)) for _ in range(3)]
        x = outer.step(x, sum(grads) / n_samples)
        opt.step(closure)
        torch.testing.assert_close(param.detach(), x, rtol=1e-12, atol=1e-13)


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def sgld_options():
    return {"sampler": "sgld", "sampler_options": {"step_size": 0.1, "temperature": 0.0}}


@pytest.mark.parametrize("gamma", [0.0, -1.0])
def test_gamma_must_be_positive(gamma):
    with pytest.raises(ValueError, match="gamma"):
        EntropySGD([nn.Parameter(X0.clone())], lr=0.1, gamma=gamma, **sgld_options())


def test_inner_steps_must_be_at_least_one():
    with pytest.raises(ValueError, match="inner_steps"):
        EntropySGD([nn.Parameter(X0.clone())], lr=0.1, gamma=1.0, inner_steps=0, **sgld_options())


@pytest.mark.parametrize(
    "make", [lambda ps: EntropySGD(ps, lr=0.1, gamma=1.0, **sgld_options()), lambda ps: LPFSGD(ps, lr=0.1, sigma=0.1)]
)
def test_step_without_closure_names_the_contract(make):
    opt = make([nn.Parameter(X0.clone())])
    with pytest.raises(RuntimeError, match="closure that zeroes the gradients"):
        opt.step()


def test_nan_loss_raises_divergence_error_and_restores_the_parameters():
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=0.1,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": 1e-4},
        inner_steps=4,
    )
    calls = []
    good = quadratic_closure(param, A2, B2, calls)

    def poisoned():
        loss = good()
        if len(calls) == 2 * 4 + 3:  # the third inner call of outer step 2
            param.grad.fill_(float("nan"))
            return loss * float("nan")
        return loss

    opt.step(poisoned)
    opt.step(poisoned)
    before = param.detach().clone()
    with pytest.raises(DivergenceError, match=r"outer step 2\b.*smaller") as info:
        opt.step(poisoned)
    assert isinstance(info.value, FloatingPointError)
    assert torch.equal(param.detach(), before)
    assert opt.outer_steps == 2 and opt.grad_evals == 8  # the failed step is not counted


def test_exploding_inner_loop_raises_divergence_error():
    """A finite loss at x but a sampler step far above 2 / (curvature + gamma): the iterates overflow."""
    param = nn.Parameter(torch.ones(2, dtype=F64))
    opt = EntropySGD(
        [param],
        lr=0.1,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 50.0, "temperature": 0.0},
        inner_steps=200,
    )
    with pytest.raises(DivergenceError, match="step_size"):
        opt.step(quadratic_closure(param, A2 * 1e3, B2))
    assert torch.equal(param.detach(), torch.ones(2, dtype=F64))


def test_lpfsgd_nan_loss_raises_divergence_error():
    param = nn.Parameter(X0.clone())
    opt = LPFSGD([param], lr=0.1, sigma=0.1, n_samples=2)

    def closure():
        param.grad = torch.full_like(param, float("nan"))
        return torch.tensor(float("nan"))

    with pytest.raises(DivergenceError, match="step 0"):
        opt.step(closure)
    torch.testing.assert_close(param.detach(), X0, rtol=1e-14, atol=1e-14)


def preset_kwargs(**extra):
    return {"lr": 0.1, "gamma": 1.0, "sampler_options": {"step_size": 0.1, "noise_scale": 1e-3}, **extra}


def test_invalid_configurations_are_refused():
    ps = [nn.Parameter(X0.clone())]
    with pytest.raises(ValueError, match="chooses its own sampler"):
        EntropySGD(ps, preset="paper", **preset_kwargs(sampler=SGLD(step_size=0.1)))
    with pytest.raises(ValueError, match="no outer momentum"):
        EntropySGD(ps, preset="authors", **preset_kwargs(momentum=0.9))
    with pytest.raises(ValueError, match="preset"):
        EntropySGD(ps, preset="lua", **preset_kwargs())
    with pytest.raises(ValueError, match="missing"):
        EntropySGD(ps, lr=0.1, gamma=1.0, preset="paper", sampler_options={"step_size": 0.1})
    with pytest.raises(ValueError, match="sampler_options"):
        EntropySGD(ps, lr=0.1, gamma=1.0, sampler=SGLD(step_size=0.1), sampler_options={"temperature": 1.0})
    with pytest.raises(ValueError, match="after_momentum"):
        EntropySGD(ps, lr=0.1, gamma=1.0, coupling="after_momentum", **sgld_options())
    with pytest.raises(ValueError, match="sampler must be"):
        EntropySGD(ps, lr=0.1, gamma=1.0, sampler=42)
    with pytest.raises(ValueError, match="nesterov"):
        EntropySGD(ps, lr=0.1, gamma=1.0, nesterov=True, **sgld_options())
    with pytest.raises(TypeError, match="base_optimizer"):
        EntropyOptimizer(ps, "sgd", lr=0.1, gamma=1.0, **sgld_options())
    with pytest.raises(ValueError, match="total_steps"):
        LPFSGD(ps, lr=0.1, sigma=1e-3, sigma_schedule="cosine")
    with pytest.raises(ValueError, match="n_samples"):
        LPFSGD(ps, lr=0.1, sigma=1e-3, n_samples=0)


def test_temperature_argument_replaces_the_samplers_own():
    template = SGLD(step_size=0.1, temperature=5.0)
    opt = EntropySGD([nn.Parameter(X0.clone())], lr=0.1, gamma=1.0, sampler=template, temperature=1e-3)
    assert opt.sampler.temperature == 1e-3 and opt.sampler.step_size == 0.1
    assert template.temperature == 5.0  # the template is left alone
    copy.deepcopy(opt.state_dict())  # state_dict is plain data
