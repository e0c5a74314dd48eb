"""The model-level LLC: the same chains as the potential form on a full batch, minibatches, devinterp's mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from localentropy.llc import default_nbeta, devinterp_settings, estimate_llc, estimate_llc_model
from localentropy.samplers import make_sampler


def _regression(n: int = 60, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(3, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 3, generator=g, dtype=torch.float64))
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = x @ model.weight.detach().T + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return model, x, y


def _loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).sum(-1).mean()


def test_full_batch_model_chain_is_the_potential_chain() -> None:
    """One chain, one full batch: the model form runs the potential form's chain to rounding (same noise order)."""
    model, x, y = _regression()
    w_star = model.weight.detach().reshape(-1).clone()

    def potential(w: torch.Tensor) -> torch.Tensor:
        pred = torch.einsum("cij,nj->cni", w.reshape(-1, 2, 3), x)
        return ((pred - y) ** 2).sum(-1).mean(-1)

    kw = {
        "nbeta": 40.0,
        "localization": 2.0,
        "sampler_options": {"step_size": 1e-3},
        "chains": 1,
        "steps": 50,
        "burn_in": 10,
    }
    by_model = estimate_llc_model(model, _loss, [(x, y)], generator=torch.Generator().manual_seed(3), **kw)
    by_potential = estimate_llc(potential, w_star, generator=torch.Generator().manual_seed(3), **kw)
    assert np.allclose(by_model.loss_trace, by_potential.loss_trace, rtol=1e-12, atol=0)
    assert by_model.loss_at_w_star == pytest.approx(by_potential.loss_at_w_star, rel=1e-14)
    assert torch.equal(model.weight.detach().reshape(-1), w_star)  # w* untouched


def test_minibatch_defaults_and_free_energy() -> None:
    model, x, y = _regression(n=64)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    result = estimate_llc_model(
        model,
        _loss,
        loader,
        localization=10.0,
        sampler_options={"step_size": 1e-4},
        chains=2,
        steps=30,
        burn_in=6,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.n == 64 and result.nbeta == pytest.approx(64 / math.log(64))
    assert result.loss_trace.shape == (2, 24)
    assert result.free_energy == pytest.approx(64 * result.loss_trace.mean())
    with torch.no_grad():
        full = float(_loss(model(x), y))
    assert result.loss_at_w_star == pytest.approx(full, rel=1e-12)
    assert np.isfinite(result.mean)


def test_model_form_errors() -> None:
    model, x, y = _regression()
    kw = {"localization": 1.0, "chains": 1, "steps": 10, "burn_in": 2}
    with pytest.raises(ValueError, match="needs the exact potential"):
        estimate_llc_model(model, _loss, [(x, y)], sampler="mala", sampler_options={"step_size": 0.1}, **kw)
    with pytest.raises(ValueError, match="the data loader yields no examples"):
        estimate_llc_model(model, _loss, [], sampler_options={"step_size": 0.1}, **kw)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        default_nbeta(1)
    with pytest.raises(ValueError, match="noise_level must be 1"):
        devinterp_settings(lr=1e-3, n_beta=10.0, noise_level=0.5)


def test_devinterp_mapping_reproduces_its_update() -> None:
    """devinterp: w <- w - lr/2 (n_beta g + loc (w - w*)) + sqrt(lr) xi; ours: SGLD with step_size lr / 2."""
    lr, n_beta, loc = 3e-3, 25.0, 7.0
    settings = devinterp_settings(lr=lr, n_beta=n_beta, localization=loc)
    assert settings["sampler"] == "sgld" and settings["nbeta"] == n_beta and settings["localization"] == loc
    g = torch.Generator().manual_seed(0)
    w, w_star, grad, xi = (torch.randn(1, 5, generator=g, dtype=torch.float64) for _ in range(4))
    expected = w - lr / 2 * (n_beta * grad + loc * (w - w_star)) + math.sqrt(lr) * xi
    sampler = make_sampler("sgld", temperature=1.0, **settings["sampler_options"])
    state = sampler.step(sampler.init(w.clone()), n_beta * grad + loc * (w - w_star), noise=xi)
    assert torch.allclose(state.position, expected, rtol=1e-14)
