"""``warm_start`` of EntropySGD / EntropyAdam: chains that go on from where the previous outer step left them.

With ``warm_start=True`` the inner chain of outer step t + 1 starts at the last inner iterate x'_L of step t (kept
in the optimizer state as ``"warm_chain"``) instead of at x. Hand computations use SGLD at temperature 0, which
is plain gradient descent on U(x') = f(x') + gamma/2 ||x' - x||^2, so every number is deterministic.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from localentropy.entropy import EntropyAdam, EntropySGD

F64 = torch.float64
RTOL = 1e-12

# f(x) = 1/2 x^T A x - b^T x on R^2
A2 = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
B2 = torch.tensor([1.0, -1.0], dtype=F64)
X0 = torch.tensor([3.0, -2.0], dtype=F64)


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one intra-op thread


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadratic_closure(param: torch.Tensor, A: torch.Tensor, b: torch.Tensor, points: list | None = None):
    """Zero the gradient, f forward and backward, return the loss; ``points`` records where it was called."""

    def closure():
        if param.grad is not None:
            param.grad.zero_()
        if points is not None:
            points.append(param.detach().clone())
        loss = 0.5 * param @ A @ param - b @ param
        loss.backward()
        return loss.detach()

    return closure


def run(opt: torch.optim.Optimizer, param: torch.Tensor, closure, steps: int) -> list[torch.Tensor]:
    trajectory = [param.detach().clone()]
    for _ in range(steps):
        opt.step(closure)
        trajectory.append(param.detach().clone())
    return trajectory


# ---------------------------------------------------------------------------------------------- (a) default


@pytest.mark.parametrize(
    ("sampler", "options"),
    [
        ("sgld", {"step_size": 0.1, "temperature": 0.05}),
        ("sghmc", {"step_size": 0.05, "friction": 0.3, "temperature": 0.05}),
        ("sgld", {"step_size": 0.1, "temperature": 0.05, "noise": "rademacher"}),
    ],
)
def test_warm_start_false_is_the_default_trajectory(sampler, options):
    """warm_start=False and no argument at all take bit-identical steps, and keep no chain in the state."""
    trajectories, optimizers = [], []
    for extra in ({}, {"warm_start": False}):
        param = nn.Parameter(X0.clone())
        opt = EntropySGD(
            [param],
            lr=0.3,
            gamma=1.0,
            sampler=sampler,
            sampler_options=dict(options),
            inner_steps=4,
            averaging="uniform",
            momentum=0.5,
            generator=gen(7),
            **extra,
        )
        trajectories.append(run(opt, param, quadratic_closure(param, A2, B2), 6))
        optimizers.append(opt)
    for got, want in zip(trajectories[1], trajectories[0], strict=True):
        assert torch.equal(got, want)
    for opt in optimizers:
        assert opt.warm_start is False
        assert all("warm_chain" not in state for state in opt.state_dict()["state"].values())


def test_warm_start_false_restarts_at_x_with_noise():
    """Cold chains, noise included, against a hand computation: every outer step's chain starts at x."""
    h, T, gamma, lr, L = 0.1, 0.05, 1.0, 0.3, 3
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=lr,
        gamma=gamma,
        sampler="sgld",
        sampler_options={"step_size": h, "temperature": T},
        inner_steps=L,
        averaging="uniform",
        warm_start=False,
        generator=gen(3),
    )
    got = run(opt, param, quadratic_closure(param, A2, B2), 4)

    hand_gen, x, want = gen(3), X0.clone(), [X0.clone()]
    for _ in range(4):
        xp, total = x.clone(), torch.zeros(2, dtype=F64)
        for _ in range(L):
            xp = xp - h * (A2 @ xp - B2 + gamma * (xp - x))
            xp = xp + math.sqrt(2 * h * T) * torch.empty(2, dtype=F64).normal_(generator=hand_gen)
            total = total + xp
        x = x - lr * gamma * (x - total / L)
        want.append(x.clone())
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=RTOL, atol=1e-14)


# ------------------------------------------------------------------------------------------ (b) by hand


def scalar_optimizer(warm: bool, points: list) -> tuple[EntropySGD, nn.Parameter, object]:
    """f(x) = x^2 - x (a = 2, b = 1) from x = 3; SGLD at T = 0 with h = 0.1, gamma = 1, L = 2, lr = 0.5."""
    param = nn.Parameter(torch.tensor([3.0], dtype=F64))
    opt = EntropySGD(
        [param],
        lr=0.5,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 0.1, "temperature": 0.0},
        inner_steps=2,
        averaging="uniform",
        warm_start=warm,
        generator=gen(0),
    )
    A = torch.tensor([[2.0]], dtype=F64)
    b = torch.tensor([1.0], dtype=F64)
    return opt, param, quadratic_closure(param, A, b, points)


def test_second_chain_starts_at_the_first_chains_end_by_hand():
    """x'_{k+1} = x'_k - h (2 x'_k - 1 + gamma (x'_k - x)), mu = (x'_1 + x'_2) / 2, x <- x - lr gamma (x - mu).

    Step 1 (x = 3, from x'_0 = 3):   x'_1 = 3 - 0.1 * 5 = 2.5;  x'_2 = 2.5 - 0.1 * (4 - 0.5) = 2.15;
                                     mu = 2.325, direction 0.675, x = 3 - 0.5 * 0.675 = 2.6625.
    Step 2 warm (x'_0 = 2.15):       x'_1 = 2.15 - 0.1 * (3.3 - 0.5125) = 1.87125;
                                     x'_2 = 1.87125 - 0.1 * (2.7425 - 0.79125) = 1.676125;
                                     mu = 1.7736875, direction 0.8888125, x = 2.21809375.
    Step 2 cold (x'_0 = 2.6625):     x'_1 = 2.6625 - 0.1 * 4.325 = 2.23;  x'_2 = 2.23 - 0.1 * 3.0275 = 1.92725;
                                     mu = 2.078625, direction 0.583875, x = 2.3705625.
    The closure is called at x'_0 and x'_1 of each step.
    """
    points: list[torch.Tensor] = []
    opt, param, closure = scalar_optimizer(True, points)
    opt.step(closure)
    assert param.item() == pytest.approx(2.6625, rel=RTOL)
    assert opt.state[param]["warm_chain"].item() == pytest.approx(2.15, rel=RTOL)
    opt.step(closure)
    assert param.item() == pytest.approx(2.21809375, rel=RTOL)
    assert param.grad.item() == pytest.approx(0.8888125, rel=RTOL)  # the direction the SGD step used
    assert opt.state[param]["warm_chain"].item() == pytest.approx(1.676125, rel=RTOL)
    want_points = [3.0, 2.5, 2.15, 1.87125]  # step 2 evaluates first at step 1's last iterate, not at x = 2.6625
    assert [p.item() for p in points] == pytest.approx(want_points, rel=RTOL)

    cold_points: list[torch.Tensor] = []
    cold, cold_param, cold_closure = scalar_optimizer(False, cold_points)
    cold.step(cold_closure)
    cold.step(cold_closure)
    assert cold_param.item() == pytest.approx(2.3705625, rel=RTOL)
    assert [p.item() for p in cold_points] == pytest.approx([3.0, 2.5, 2.6625, 2.23], rel=RTOL)
    assert "warm_chain" not in cold.state[cold_param]


def hand_trajectory(
    A: torch.Tensor,
    b: torch.Tensor,
    x0: torch.Tensor,
    *,
    h: float,
    gamma: float,
    lr: float,
    L: int,
    steps: int,
    warm: bool,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Entropy-SGD at T = 0 with uniform averaging; returns the outer iterates and the chains' last iterates."""
    x, chain, xs, chains = x0.clone(), None, [x0.clone()], []
    for _ in range(steps):
        xp = chain.clone() if (warm and chain is not None) else x.clone()
        total = torch.zeros_like(x)
        for _ in range(L):
            xp = xp - h * (A @ xp - b + gamma * (xp - x))
            total = total + xp
        chain = xp
        x = x - lr * gamma * (x - total / L)
        xs.append(x.clone())
        chains.append(chain.clone())
    return xs, chains


def test_warm_trajectory_matches_hand_computation_in_2d():
    settings = {"h": 0.2, "gamma": 0.5, "lr": 0.4, "L": 2, "steps": 6}
    param = nn.Parameter(X0.clone())
    opt = EntropySGD(
        [param],
        lr=settings["lr"],
        gamma=settings["gamma"],
        sampler="sgld",
        sampler_options={"step_size": settings["h"], "temperature": 0.0},
        inner_steps=settings["L"],
        averaging="uniform",
        warm_start=True,
        generator=gen(0),
    )
    closure = quadratic_closure(param, A2, B2)
    want_x, want_chain = hand_trajectory(A2, B2, X0, warm=True, **settings)
    cold_x, _ = hand_trajectory(A2, B2, X0, warm=False, **settings)
    torch.testing.assert_close(param.detach(), want_x[0], rtol=RTOL, atol=1e-14)
    for t in range(settings["steps"]):
        opt.step(closure)
        torch.testing.assert_close(param.detach(), want_x[t + 1], rtol=RTOL, atol=1e-14)
        torch.testing.assert_close(opt.state[param]["warm_chain"], want_chain[t], rtol=RTOL, atol=1e-14)
    assert torch.equal(want_x[1], cold_x[1])  # the first step has nothing to go on from
    assert not torch.allclose(want_x[2], cold_x[2])  # ... the later ones differ


def test_warm_sghmc_keeps_its_velocity():
    """SGHMC at T = 0 (SGD with momentum 1 - alpha on U): warm chains carry the velocity over; cold ones zero it."""
    eta, alpha, gamma, lr, L, steps = 0.1, 0.3, 1.0, 0.4, 3, 4
    for warm in (True, False):
        param = nn.Parameter(X0.clone())
        opt = EntropySGD(
            [param],
            lr=lr,
            gamma=gamma,
            sampler="sghmc",
            sampler_options={"step_size": eta, "friction": alpha, "temperature": 0.0},
            inner_steps=L,
            averaging="uniform",
            warm_start=warm,
            generator=gen(0),
        )
        got = run(opt, param, quadratic_closure(param, A2, B2), steps)
        x, xp, v, want = X0.clone(), X0.clone(), torch.zeros(2, dtype=F64), [X0.clone()]
        for _ in range(steps):
            if not warm:
                xp, v = x.clone(), torch.zeros(2, dtype=F64)
            total = torch.zeros(2, dtype=F64)
            for _ in range(L):
                v = (1 - alpha) * v - eta * (A2 @ xp - B2 + gamma * (xp - x))
                xp = xp + v
                total = total + xp
            x = x - lr * gamma * (x - total / L)
            want.append(x.clone())
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=RTOL, atol=1e-14)


def test_warm_chain_is_a_copy_not_the_parameter():
    points: list[torch.Tensor] = []
    opt, param, closure = scalar_optimizer(True, points)
    opt.step(closure)
    chain = opt.state[param]["warm_chain"]
    assert chain.data_ptr() != param.data_ptr()
    assert chain.item() != param.item()


# ------------------------------------------------------------------------------------ (c) state_dict / resume


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_warm_chain_in_state_dict_and_resume_is_exact(noise):
    def make(param, seed):
        return EntropySGD(
            [param],
            lr=0.3,
            gamma=1.0,
            sampler="sgld",
            sampler_options={"step_size": 0.1, "temperature": 0.05, "noise": noise},
            inner_steps=3,
            averaging="uniform",
            momentum=0.5,
            warm_start=True,
            generator=gen(seed),
        )

    warm_steps, more = 3, 4
    param = nn.Parameter(X0.clone())
    opt = make(param, 11)
    closure = quadratic_closure(param, A2, B2)
    run(opt, param, closure, warm_steps)
    saved = opt.state_dict()
    assert "warm_chain" in saved["state"][0]
    assert torch.equal(saved["state"][0]["warm_chain"], opt.state[param]["warm_chain"])
    buffer = io.BytesIO()
    torch.save({"param": param.detach().clone(), "opt": saved}, buffer)
    expected = run(opt, param, closure, more)

    fresh = nn.Parameter(torch.zeros(2, dtype=F64))
    fresh_opt = make(fresh, 2024)  # another seed: the generator state must come from the checkpoint
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        fresh.copy_(checkpoint["param"])
    fresh_opt.load_state_dict(checkpoint["opt"])
    assert torch.equal(fresh_opt.state[fresh]["warm_chain"], checkpoint["opt"]["state"][0]["warm_chain"])
    got = run(fresh_opt, fresh, quadratic_closure(fresh, A2, B2), more)
    for g, w in zip(got, expected, strict=True):
        assert torch.equal(g, w)
    assert fresh_opt.outer_steps == warm_steps + more


# ---------------------------------------------------------------------------------------------- (d) Adam


def test_entropy_adam_with_warm_start_matches_adam_on_the_hand_directions():
    """Adam initialises its state lazily (when it is empty): the chain must be stored after that, every step."""
    h, gamma, lr, L, steps = 0.2, 0.5, 0.05, 2, 3
    param = nn.Parameter(X0.clone())
    opt = EntropyAdam(
        [param],
        lr=lr,
        gamma=gamma,
        betas=(0.5, 0.9),
        sampler="sgld",
        sampler_options={"step_size": h, "temperature": 0.0},
        inner_steps=L,
        averaging="uniform",
        warm_start=True,
        generator=gen(0),
    )
    closure = quadratic_closure(param, A2, B2)

    reference = nn.Parameter(X0.clone())
    adam = torch.optim.Adam([reference], lr=lr, betas=(0.5, 0.9))
    chain = None
    for t in range(steps):
        opt.step(closure)
        x = reference.detach().clone()
        xp = x.clone() if chain is None else chain.clone()
        total = torch.zeros(2, dtype=F64)
        for _ in range(L):
            xp = xp - h * (A2 @ xp - B2 + gamma * (xp - x))
            total = total + xp
        chain = xp
        reference.grad = gamma * (x - total / L)
        adam.step()
        torch.testing.assert_close(param.detach(), reference.detach(), rtol=RTOL, atol=1e-14)
        state = opt.state[param]
        torch.testing.assert_close(state["warm_chain"], chain, rtol=RTOL, atol=1e-14)
        assert int(state["step"]) == t + 1
        assert {"exp_avg", "exp_avg_sq", "outer_step", "grad_evals"} <= set(state)
    assert opt.outer_steps == steps and opt.grad_evals == steps * L


# ----------------------------------------------------------------------------------------- (e) validation


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
@pytest.mark.parametrize("cls", [EntropySGD, EntropyAdam])
def test_non_bool_warm_start_is_refused(cls, value):
    param = nn.Parameter(X0.clone())
    with pytest.raises(ValueError, match="warm_start"):
        cls([param], lr=0.1, gamma=1.0, sampler="sgld", sampler_options={"step_size": 0.1}, warm_start=value)
