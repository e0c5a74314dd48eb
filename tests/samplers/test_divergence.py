"""Divergence is never silent: ``sample`` and the estimators name the sampler, its step size, the step and the
number of chains, or drop and count the diverged chains; Entropy-SGD's message names the step size and outer step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from localentropy.entropy import EntropySGD, LocalEntropyEstimator
from localentropy.entropy.optim import DivergenceError
from localentropy.samplers import PSGLD, SGLD, SGNHT, SamplerDivergenceError, SampleResult, make_sampler, sample

pytestmark = pytest.mark.usefixtures("single_thread")
F64 = torch.float64


def stiff_half(x: torch.Tensor) -> torch.Tensor:
    """grad U = c x with c = 1 for the first half of the chains and 100 for the second half."""
    c = torch.ones(x.shape[0], 1, dtype=x.dtype)
    c[x.shape[0] // 2 :] = 100.0
    return c * x


def test_a_diverging_sgnht_chain_raises_an_error_naming_sgnht_and_its_step_size() -> None:
    init = torch.ones(8, 3, dtype=F64)
    with pytest.raises(SamplerDivergenceError) as info:
        sample(SGNHT(step_size=0.2), stiff_half, init, 400, generator=torch.Generator().manual_seed(0))
    message = str(info.value)
    assert "SGNHT" in message and "step_size=0.2" in message
    assert "4 of 8 chains" in message and "by step" in message and "smaller step size" in message
    assert "on_divergence='drop'" in message
    assert info.value.diverged.tolist() == [False] * 4 + [True] * 4
    assert 1 <= info.value.first_step <= 400


def test_divergence_during_burn_in_is_reported_as_such() -> None:
    init = torch.ones(4, 2, dtype=F64)
    with pytest.raises(SamplerDivergenceError, match=r"SGLD at step_size=0.1: 2 of 4 chains .* within the first"):
        sample(SGLD(0.1), stiff_half, init, 600, burn_in=500, generator=torch.Generator().manual_seed(0))


def test_drop_keeps_the_finite_chains_and_counts_the_others() -> None:
    init = torch.ones(6, 2, dtype=F64)
    result = sample(
        SGLD(0.1), stiff_half, init, 400, thin=2, on_divergence="drop", generator=torch.Generator().manual_seed(1)
    )
    assert isinstance(result, SampleResult)
    assert result.n_diverged == 3 and result.draws.shape == (3, 200, 2)
    assert torch.isfinite(result.draws).all()
    steps = result.first_nonfinite_step
    assert (steps[:3] == -1).all() and (steps[3:] > 0).all() and (steps[3:] % 2 == 0).all()
    # with no divergence, drop returns every chain
    clean = sample(SGLD(0.1), lambda x: x, init, 50, on_divergence="drop", generator=torch.Generator().manual_seed(1))
    assert clean.n_diverged == 0 and clean.draws.shape == (6, 50, 2)


def test_a_bad_divergence_policy_and_adaptation_in_burn_in_are_refused() -> None:
    init = torch.ones(2, 2, dtype=F64)
    with pytest.raises(ValueError, match="on_divergence"):
        sample(SGLD(0.1), lambda x: x, init, 10, on_divergence="ignore")
    with pytest.raises(ValueError, match=r"burn_in must be >= 20.*freeze_after"):
        sample(PSGLD(0.1, freeze_after=20), lambda x: x, init, 50, burn_in=10)
    draws = sample(PSGLD(0.1, freeze_after=20), lambda x: x, init, 50, burn_in=20)
    assert draws.shape == (2, 30, 2)


def test_the_estimator_raises_or_drops_diverged_chains() -> None:
    def grad_fn(x: torch.Tensor) -> torch.Tensor:
        return stiff_half(x)

    x = torch.ones(2, dtype=F64)
    estimator = LocalEntropyEstimator(grad_fn, 1.0, SGLD(0.1, temperature=0.01), 400)
    with pytest.raises(SamplerDivergenceError, match=r"SGLD at step_size=0.1: 2 of 4 chains .*by step \d+ of the 400"):
        estimator.estimate(x, 4, torch.Generator().manual_seed(0))
    dropping = LocalEntropyEstimator(grad_fn, 1.0, SGLD(0.1, temperature=0.01), 400, on_divergence="drop")
    result = dropping.estimate(x, 4, torch.Generator().manual_seed(0))
    assert result.n_diverged == 2 and result.chain_grads.shape == (2, 2) and result.draws.shape[0] == 2
    assert torch.isfinite(result.grad).all()
    all_bad = LocalEntropyEstimator(lambda y: 100.0 * y, 1.0, SGLD(0.1), 400, on_divergence="drop")
    with pytest.raises(SamplerDivergenceError, match="2 of 2 chains"):
        all_bad.estimate(x, 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="burn_in must be >= 5"):
        LocalEntropyEstimator(grad_fn, 1.0, make_sampler("psgld", step_size=0.1, freeze_after=5), 20)


def test_entropy_sgd_divergence_names_the_step_size_and_the_outer_step() -> None:
    param = nn.Parameter(torch.ones(2, dtype=F64))
    opt = EntropySGD(
        [param],
        lr=0.1,
        gamma=1.0,
        sampler="sgld",
        sampler_options={"step_size": 50.0, "temperature": 0.0},
        inner_steps=200,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 500.0 * (param**2).sum()
        loss.backward()
        return loss

    with pytest.raises(DivergenceError, match=r"outer step 0 \(sampler SGLD at step_size=50.0") as info:
        opt.step(closure)
    assert "measured stable range" in str(info.value)
    assert torch.equal(param.detach(), torch.ones(2, dtype=F64))
