# ruff: noqa: F403, F405
"""EntropyOptimizer: exact resume, schedulers, parameter groups, Entropy-Adam and other base optimizers."""

from __future__ import annotations

from tests.entropy.optim.helpers import *

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
