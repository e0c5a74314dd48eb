"""The accuracy atlas: targets with exact moments, the stability bisection, the metrics and their MCSEs, pSGLD frozen
against unfrozen on the banana, registration-driven entries, the result files and the CLI (small cases only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from localentropy.cli import main
from localentropy.experiments.atlas import run_atlas
from localentropy.experiments.atlas.cli import END, START, replace_section
from localentropy.experiments.atlas.entries import Entry, atlas_entries
from localentropy.experiments.atlas.measure import (
    coupled_gaussian,
    entropy_sgd_regime,
    moment_errors,
    run_chains,
    stability_limit,
)
from localentropy.experiments.atlas.targets import banana, ill_conditioned_gaussian, target_bank
from localentropy.samplers import SGLD, available_samplers, register_sampler
from localentropy.samplers import registry as sampler_registry
from tests.stats import sghmc_covariance

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("target", target_bank(), ids=lambda t: t.name)
def test_targets_have_consistent_maps_and_exact_draws(target) -> None:
    rng = np.random.default_rng(0)
    x = target.draw(200_000, rng)
    se = np.sqrt(np.diag(target.covariance) / x.shape[0])
    assert np.all(np.abs(x.mean(0).numpy() - target.mean) < 5 * se)
    cov = np.cov(x.numpy().T)
    scale = np.sqrt(np.outer(np.diag(target.covariance), np.diag(target.covariance)))
    assert np.all(np.abs(cov - target.covariance) / scale < 0.03)
    points = x[:6].clone().requires_grad_(True)
    grad = torch.autograd.grad(target.potential(points).sum(), points, create_graph=True)[0]
    torch.testing.assert_close(grad, target.grad(x[:6]))
    trace = sum(torch.autograd.grad(grad[:, i].sum(), points, retain_graph=True)[0][:, i] for i in range(target.dim))
    torch.testing.assert_close(trace, target.laplacian(x[:6]))
    # E |grad U|^2 = T E[Laplacian U] at T = 1: the configurational temperature of exact draws is 1
    assert float((target.grad(x) ** 2).sum(1).mean() / target.laplacian(x).mean()) == pytest.approx(1.0, abs=0.02)


def test_the_stability_limit_of_sgld_on_a_gaussian_is_two_over_lambda_max() -> None:
    target = ill_conditioned_gaussian(dim=5, condition=10.0, seed=1)  # lambda_max = 1
    limit = stability_limit(Entry("sgld", "sgld"), target, n_chains=8, n_steps=300, seed=0)
    # no divergence in 300 steps: at most a little above 2 (|1 - h| ^ 300 must reach 30 standard deviations)
    assert 1.9 <= limit <= 2.1


def test_an_exact_sampler_matches_the_truth_and_a_biased_one_does_not() -> None:
    target = ill_conditioned_gaussian(dim=4, condition=10.0, seed=2)
    exact = moment_errors(run_chains(Entry("mala", "mala"), target, 0.5, n_chains=128, n_steps=800, burn_in=50, seed=1))
    assert exact["cov_error"] < 2.5 * exact["cov_mcse"] and exact["mean_error"] < 2.5 * exact["mean_mcse"]
    assert exact["temperature"] == pytest.approx(1.0, abs=3 * exact["temperature_mcse"] + 1e-3)
    biased = moment_errors(
        run_chains(Entry("sgld", "sgld"), target, 1.0, n_chains=128, n_steps=800, burn_in=50, seed=1)
    )
    # SGLD's covariance is M^-1 (I - h M / 2)^-1, so T_conf = tr(M^2 Sigma) / tr(M) = sum lambda / (1 - h lambda / 2)
    # / sum lambda
    eig = np.linalg.eigvalsh(target.hessian)
    expected = np.sum(eig / (1 - eig / 2)) / np.sum(eig)
    assert biased["temperature"] == pytest.approx(expected, abs=4 * biased["temperature_mcse"])
    assert biased["cov_error"] > 5 * biased["cov_mcse"]


def test_gradient_noise_raises_sgld_temperature_by_h_v_over_two() -> None:
    target = ill_conditioned_gaussian(dim=4, condition=10.0, seed=2)
    h, noise = 0.05, 10.0
    stats = run_chains(
        Entry("sgld", "sgld"), target, h, n_chains=128, n_steps=1500, burn_in=100, seed=3, grad_noise=noise
    )
    measured = moment_errors(stats)
    eig = np.linalg.eigvalsh(target.hessian)
    expected = (1 + h * noise / 2) * np.sum(eig / (1 - h * eig / 2)) / np.sum(eig)  # SGLD's exact law, with noise
    assert measured["temperature"] == pytest.approx(expected, abs=4 * measured["temperature_mcse"])


def test_sghmc_running_noise_estimate_brings_the_noisy_temperature_back_to_its_noise_free_law() -> None:
    """Without the estimate SGHMC samples its exact law with velocity noise eta^2 V + 2 alpha eta T (T_conf about
    1 + eta V / (2 alpha) = 1.25 here); with it, that of beta_hat = eta V / (2 T) known (the noise-free law)."""
    target = ill_conditioned_gaussian(dim=4, condition=10.0, seed=2)
    eta, friction, noise = 0.05, 0.5, 5.0
    kwargs = {"n_chains": 128, "n_steps": 1500, "burn_in": 300, "seed": 3, "grad_noise": noise}
    plain = moment_errors(run_chains(Entry("sghmc", "sghmc", {"friction": friction}), target, eta, **kwargs))
    running = moment_errors(
        run_chains(
            Entry("sghmc running", "sghmc", {"friction": friction, "noise_estimate": "running"}), target, eta, **kwargs
        )
    )
    M = target.hessian

    def t_conf(temperature: float) -> float:  # tr(M^2 Sigma) / tr(M), Sigma SGHMC's exact law at this temperature
        return float(np.trace(M @ M @ sghmc_covariance(M, eta, friction, temperature)) / np.trace(M))

    assert plain["temperature"] == pytest.approx(
        t_conf(1 + eta * noise / (2 * friction)), abs=4 * plain["temperature_mcse"]
    )
    assert running["temperature"] == pytest.approx(t_conf(1.0), abs=4 * running["temperature_mcse"] + 0.02)
    assert plain["temperature"] - running["temperature"] > 0.2


def test_frozen_psgld_has_no_measurable_covariance_bias_on_the_banana_unlike_unfrozen() -> None:
    target = banana()
    frozen = Entry("psgld frozen", "psgld", {"freeze_after": 200, "debias": True, "damping": 0.03})
    unfrozen = Entry("psgld", "psgld")
    h = 0.02  # about 1/32 of either one's limit
    kwargs = {"n_chains": 256, "n_steps": 2200, "burn_in": 200, "seed": 1}
    f = moment_errors(run_chains(frozen, target, h, **kwargs))
    u = moment_errors(run_chains(unfrozen, target, h, **kwargs))
    assert f["cov_error"] <= 2 * f["cov_mcse"]
    assert u["cov_error"] > 10 * f["cov_error"]


def test_entropy_sgd_regime_reports_the_local_entropy_gradient_error() -> None:
    base = ill_conditioned_gaussian(dim=4, condition=10.0, seed=2)
    anchor = base.mean + 1.0
    coupled = coupled_gaussian(base, 1.0, anchor)
    np.testing.assert_allclose(coupled.hessian, base.hessian + np.eye(4))
    short = entropy_sgd_regime(
        Entry("sgld", "sgld"), coupled, anchor, 1.0, 0.1, inner_steps=5, outer_steps=4, n_chains=64, seed=0
    )
    long = entropy_sgd_regime(
        Entry("sgld", "sgld"), coupled, anchor, 1.0, 0.1, inner_steps=200, outer_steps=4, n_chains=64, seed=0
    )
    assert short["n_diverged"] == 0 and short["grad_error"] > long["grad_error"]  # the transient of short chains


def test_every_registered_sampler_is_an_entry_including_a_users_own() -> None:
    class MySGLD(SGLD):
        name = "atlas-test-sgld"

    register_sampler("atlas-test-sgld", MySGLD)
    try:
        labels = [e.label for e in atlas_entries()]
        assert set(available_samplers()) <= set(labels) and "atlas-test-sgld" in labels
        assert "psgld frozen" in labels
        target = banana()
        for entry in atlas_entries():
            assert entry.missing() == []
            assert entry.build(0.01, target, 100) is not None
    finally:
        sampler_registry._REGISTRY.pop("atlas-test-sgld")


def test_run_atlas_writes_results_with_config_versions_and_seed_and_one_seed_gives_the_same_numbers(tmp_path):
    first = run_atlas(tmp_path / "a", quick=True, samplers=["sgld"], targets=["banana"], seed=5)
    second = run_atlas(tmp_path / "b", quick=True, samplers=["sgld"], targets=["banana"], seed=5)
    assert first["rows"] == second["rows"] and first["entropy_sgd"] == second["entropy_sgd"] == []
    saved = json.loads((tmp_path / "a" / "atlas.json").read_text())
    assert saved["seed"] == 5 and saved["config"]["quick"] is True and saved["environment"]["versions"]["torch"]
    (row,) = saved["rows"]
    assert row["sampler"] == "sgld" and row["limit"] > 0 and len(row["runs"]) == 3 and "noisy" in row
    text = (tmp_path / "a" / "atlas.md").read_text()
    assert "**banana**" in text and "| sgld |" in text and (tmp_path / "a" / "atlas.png").stat().st_size > 1000


def test_cli_accuracy_and_its_errors(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{START}\nold\n{END}\noutro\n")
    out = tmp_path / "atlas"
    assert main(["samplers", "--accuracy", "--quick", "--sampler", "sgld", "--out", str(out), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text and "| sgld |" in text
    assert "](atlas/atlas.png)" in text
    assert main(["samplers", "--accuracy", "--sampler", "nope"]) == 2
    assert "nope is not registered" in capsys.readouterr().err
    assert main(["samplers", "--quick"]) == 2
    assert main(["samplers", "--accuracy", "--doc", str(tmp_path / "missing.md")]) == 2
    with pytest.raises(ValueError, match="atlas section"):
        replace_section("no markers", "x")


def test_a_frozen_preconditioner_needs_enough_damping_when_chains_start_at_a_stationary_point() -> None:
    """Started at the banana's mode (zero gradient) G is about 1 / damping for the first steps: damping 0.01 leaves
    a covariance error of about 0.5 at h = 0.1, damping 0.03 none measurable (the pSGLD docstring's figures)."""
    target = banana()
    rng = np.random.default_rng(0)
    mode = torch.tensor([[0.0, -0.5]], dtype=torch.float64).repeat(256, 1) + 1e-6 * target.draw(256, rng)
    errors = {}
    for damping in (0.01, 0.03):
        entry = Entry("psgld frozen", "psgld", {"freeze_after": 200, "debias": True, "damping": damping})
        stats = run_chains(entry, target, 0.1, n_chains=256, n_steps=4200, burn_in=200, seed=0, start=mode)
        errors[damping] = moment_errors(stats)
    assert errors[0.01]["cov_error"] > 0.3 and errors[0.01]["cov_error"] > 2 * errors[0.01]["cov_mcse"]
    assert errors[0.03]["cov_error"] <= 2 * errors[0.03]["cov_mcse"]
    assert errors[0.03]["cov_error"] < errors[0.01]["cov_error"] / 4
