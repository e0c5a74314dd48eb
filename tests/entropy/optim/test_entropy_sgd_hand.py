# ruff: noqa: F403, F405
"""EntropySGD: convergence, closure counts, scoping and the presets against hand-computed trajectories."""

from __future__ import annotations

from tests.entropy.optim.helpers import *

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
