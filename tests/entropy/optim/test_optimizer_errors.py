# ruff: noqa: F403, F405
"""Optimizer errors: bad settings are refused naming the field; divergence raises and restores the parameters."""

from __future__ import annotations

from tests.entropy.optim.helpers import *

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


def test_one_preset_vocabulary_the_optimizer_takes_the_estimators_sgld_convention() -> None:
    """'authors-sgld' means the same inner loop in an optimizer as in a comparison config's estimator."""
    from localentropy.entropy.presets import ESTIMATOR_PRESETS, OPTIMIZER_PRESETS, estimator_preset

    assert set(ESTIMATOR_PRESETS) <= set(OPTIMIZER_PRESETS)
    opt = EntropySGD(
        [torch.nn.Parameter(torch.zeros(3))],
        lr=0.1,
        gamma=0.3,
        preset="authors-sgld",
        sampler_options={"step_size": 0.01, "noise_scale": 1e-3},
    )
    convention = estimator_preset("authors-sgld")
    assert opt.sampler.name == convention.sampler and opt.sampler.temperature == convention.temperature(1e-3)
    assert (opt.averaging, opt.outer_scale, opt.coupling) == (convention.averaging, "unit", "inside")
