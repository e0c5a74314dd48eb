"""estimate_llc against exact answers: SGLD's exact law on the regular toy, MALA on the singular toys and the deep
scalar networks."""

from __future__ import annotations

import math

import arviz_stats
import numpy as np
import pytest
import torch
from scipy import stats

from localentropy.llc import estimate_llc
from localentropy.llc.dln import scalar_network_exact
from localentropy.llc.estimate import diverged_chains, summarise
from localentropy.llc.problems import DeepLinearProblem
from localentropy.llc.toys import exact_llc, toy
from localentropy.samplers import SamplerDivergenceError

W0 = torch.zeros(2, dtype=torch.float64)


def _replicates(name: str, sampler: str, options: dict, nbeta: float, loc: float, r: int, **kw) -> list:
    problem = toy(name)
    settings = {"chains": 16, "steps": 2000, "burn_in": 500} | kw
    return [
        estimate_llc(
            problem.loss,
            W0,
            nbeta=nbeta,
            localization=loc,
            sampler=sampler,
            sampler_options=options,
            generator=torch.Generator().manual_seed(seed),
            **settings,
        )
        for seed in range(r)
    ]


def _check_against(results: list, truth: float, family: int) -> None:
    """The mean over independent replicates is within a Bonferroni z of the truth, with the SE from the replicates'
    own MCSEs; and the MCSE is calibrated: the replicates' spread agrees with it (chi-square bounds)."""
    estimates = np.array([r.mean for r in results])
    mcse = np.array([r.mcse for r in results])
    se = math.sqrt(np.mean(mcse**2) / len(results))
    z = stats.norm.isf(1e-3 / (2 * family))
    assert abs(estimates.mean() - truth) < z * se, (estimates.mean(), truth, se)
    ratio = estimates.std(ddof=1) / math.sqrt(np.mean(mcse**2))
    dof = len(results) - 1
    low, high = (math.sqrt(stats.chi2.ppf(q, dof) / dof) for q in (1e-3 / 2, 1 - 1e-3 / 2))
    assert low / 1.3 < ratio < high * 1.3, ratio  # 30% slack for the MCSE's own estimation error


def test_sgld_on_the_regular_toy_matches_its_exact_discrete_law() -> None:
    # SGLD on U = (nbeta + loc/2)|w|^2 (Hessian M = 2 nbeta + loc) has the stationary covariance M^-1 (1 - h M / 2)^-1
    nbeta, loc, c = 500.0, 1.0, 0.2
    m = 2 * nbeta + loc
    results = _replicates("regular", "sgld", {"step_size": c / m}, nbeta, loc, r=6)
    _check_against(results, exact_llc(toy("regular"), nbeta, loc) / (1 - c / 2), family=1)


@pytest.mark.parametrize("name", ["crossing", "quartic"])
def test_mala_matches_the_exact_singular_values(name: str) -> None:
    # MALA's accept/reject removes the discretisation bias: the exact value within MCSE at any stable step. The soft
    # directions relax in time ~ 1 / loc, about 0.1 * M / 0.5 = 400 steps here: burn-in 500 of 1250
    nbeta, loc = 1000.0, 10.0
    results = _replicates(name, "mala", {"step_size": 0.5 / (2 * nbeta + loc)}, nbeta, loc, r=6, steps=1250)
    _check_against(results, exact_llc(toy(name), nbeta, loc), family=2)


def test_result_fields_and_arviz_draws() -> None:
    problem = toy("crossing")
    result = estimate_llc(
        problem.loss,
        W0,
        nbeta=100.0,
        localization=1.0,
        sampler_options={"step_size": 1e-3},
        chains=4,
        steps=60,
        burn_in=10,
        generator=torch.Generator().manual_seed(0),
        n=1000,
    )
    assert result.per_chain.shape == (4,) and result.loss_trace.shape == (4, 50)
    assert (result.chains, result.draws, result.grad_evals) == (4, 50, 240)
    assert result.mean == pytest.approx(result.per_chain.mean())
    assert result.mean == pytest.approx(100.0 * (result.loss_trace.mean() - result.loss_at_w_star))
    assert result.free_energy == pytest.approx(1000 * result.loss_trace.mean())
    assert result.mcse == pytest.approx(100.0 * float(arviz_stats.mcse(result.loss_trace, method="mean")))
    tree = result.to_datatree()
    llc = tree["posterior"]["llc"]
    assert llc.dims == ("chain", "draw") and llc.shape == (4, 50)
    assert float(llc.mean()) == pytest.approx(result.mean)
    assert float(arviz_stats.ess(tree, var_names=["loss"])["loss"]) == pytest.approx(result.ess_bulk)


def test_same_seed_same_numbers_and_every_sampler_runs() -> None:
    problem = toy("quartic")
    for sampler in ["sgld", "sghmc", "msgld", "baoab", "sgnht", "mala", "psgld"]:
        options = {"step_size": 1e-3} | ({"debias": True, "damping": 1.0} if sampler == "psgld" else {})
        runs = [
            estimate_llc(
                problem.loss,
                W0,
                nbeta=100.0,
                localization=1.0,
                sampler=sampler,
                sampler_options=options,
                chains=3,
                steps=40,
                burn_in=10,
                generator=torch.Generator().manual_seed(7),
            )
            for _ in range(2)
        ]
        assert np.array_equal(runs[0].loss_trace, runs[1].loss_trace), sampler
        assert np.isfinite(runs[0].mean), sampler


def test_bad_settings_get_clear_errors() -> None:
    loss = toy("regular").loss
    kw = {"nbeta": 10.0, "localization": 1.0, "chains": 2, "steps": 20, "burn_in": 5}
    with pytest.raises(ValueError, match="temperature is fixed at 1"):
        estimate_llc(loss, W0, sampler_options={"step_size": 0.01, "temperature": 2.0}, **kw)
    with pytest.raises(ValueError, match="unknown sampler 'langevin'; available samplers: baoab"):
        estimate_llc(loss, W0, sampler="langevin", sampler_options={"step_size": 0.01}, **kw)
    with pytest.raises(ValueError, match="missing required hyperparameter"):
        estimate_llc(loss, W0, **kw)
    with pytest.raises(ValueError, match="steps - burn_in must be >= 4"):
        estimate_llc(loss, W0, sampler_options={"step_size": 0.01}, **(kw | {"burn_in": 18}))
    with pytest.raises(ValueError, match="nbeta"):
        estimate_llc(loss, W0, sampler_options={"step_size": 0.01}, **(kw | {"nbeta": -1.0}))
    with pytest.raises(ValueError, match="w_star must be a 1-D tensor"):
        estimate_llc(loss, W0[None], sampler_options={"step_size": 0.01}, **kw)
    with pytest.raises(ValueError, match=r"potential must map a \[chains, d\] tensor to \[chains\] values"):
        estimate_llc(lambda w: w, W0, sampler_options={"step_size": 0.01}, **kw)
    with pytest.raises(ValueError, match="burn_in must be >= 10"):
        estimate_llc(loss, W0, sampler="psgld", sampler_options={"step_size": 0.01, "freeze_after": 10}, **kw)
    with pytest.raises(SamplerDivergenceError, match="SGLD at step_size=10: 2 of 2 chains of the LLC measure"):
        estimate_llc(loss, W0, sampler_options={"step_size": 10.0}, **(kw | {"steps": 400}))


def _runaway_potential(w: torch.Tensor) -> torch.Tensor:
    """The regular toy plus 1e6 past |w1| > 0.9 (the gradient unchanged): a chain that crosses reads a runaway
    loss and comes back, finite throughout."""
    return (w**2).sum(-1) + 1e6 * (w[:, 0].abs() > 0.9)


def test_diverged_chains_flags_nonfinite_and_finite_runaways() -> None:
    # chains 0..3 near lambda 1 (d = 2: reference max(median, 1)); chain 4 finite at 1e3 x; chain 5 NaN
    trace = np.ones((6, 10)) * 0.01
    trace[4] = 10.0
    trace[5, 3] = math.nan
    bad = diverged_chains(trace, 0.0, nbeta=100.0, dim=2)
    assert bad.tolist() == [False, False, False, False, True, True]
    # the threshold is 100 x max(median |lambda_c|, d / 2): lambda_c = 99 stays, 101 is flagged at median 1
    trace = np.full((3, 4), 0.01)
    trace[2] = 0.99
    assert not diverged_chains(trace, 0.0, nbeta=100.0, dim=2).any()
    trace[2] = 1.01
    assert diverged_chains(trace, 0.0, nbeta=100.0, dim=2).tolist() == [False, False, True]


def test_a_finite_runaway_chain_is_diverged_raised_or_dropped_and_counted() -> None:
    # one chain starts far out (a finite runaway) by shifting its trace: built with summarise on a crafted trace
    kw = {"nbeta": 10.0, "localization": 1.0, "sampler": "sgld", "sampler_options": {}, "grad_evals": 0, "dim": 2}
    rng = np.random.default_rng(0)
    trace = rng.chisquare(2, size=(4, 50)) / 20  # nbeta L ~ chi2_2 / 2: lambda about 1
    trace[1] += 1e8  # finite, far out
    with pytest.raises(SamplerDivergenceError, match="1 of 4 chains of the LLC measure diverged"):
        summarise(trace, 0.0, **kw)
    dropped = summarise(trace, 0.0, **kw, on_divergence="drop")
    assert dropped.n_diverged == 1 and dropped.chains == 3
    kept = summarise(np.delete(trace, 1, axis=0), 0.0, **kw)
    assert dropped.mean == kept.mean and dropped.mcse == kept.mcse and kept.n_diverged == 0
    with pytest.raises(SamplerDivergenceError):  # every chain diverged: no estimate to give
        summarise(trace * math.nan, 0.0, **kw, on_divergence="drop")
    # chains that all sit far out are not runaways of each other: the median moves with them
    assert summarise(trace + 1e8, 0.0, **kw).n_diverged == 0
    with pytest.raises(ValueError, match="on_divergence"):
        summarise(trace, 0.0, **kw, on_divergence="ignore")


def test_estimate_llc_flags_a_chain_that_runs_away_but_stays_finite() -> None:
    # with seed 2, 3 of 8 chains cross |w1| = 0.9 (4 sd of the measure), where the loss is 1e6 larger: finite, a runaway
    kw = {"nbeta": 10.0, "localization": 1.0, "chains": 8, "steps": 200, "burn_in": 50}
    options = {"step_size": 0.04}
    with pytest.raises(SamplerDivergenceError, match="chains of the LLC measure diverged"):
        estimate_llc(_runaway_potential, W0, sampler_options=options, generator=torch.Generator().manual_seed(2), **kw)
    result = estimate_llc(
        _runaway_potential,
        W0,
        sampler_options=options,
        generator=torch.Generator().manual_seed(2),
        on_divergence="drop",
        **kw,
    )
    assert result.n_diverged == 3 and result.chains == 8 - result.n_diverged
    assert np.isfinite(result.mean) and result.mean < 100 * 1.0  # the kept chains' lambda is O(d / 2)


@pytest.mark.parametrize("depth", [3, 4])
def test_mala_matches_the_exact_value_of_a_deep_scalar_network(depth: int) -> None:
    # L = (w_1 ... w_M)^2 at w* = 0: exact at finite nbeta by one-dimensional quadrature, far below Aoyagi's 1/2
    nbeta, loc = 1000.0, 10.0
    problem = DeepLinearProblem([1] * (depth + 1), 0)
    results = [
        estimate_llc(
            problem.loss,
            problem.w_star,
            nbeta=nbeta,
            localization=loc,
            sampler="mala",
            sampler_options={"step_size": 0.5 / (2 * nbeta + loc)},
            chains=16,
            steps=1250,
            burn_in=500,
            generator=torch.Generator().manual_seed(seed),
        )
        for seed in range(6)
    ]
    truth = scalar_network_exact(depth, nbeta, loc).llc
    assert truth < 0.5 - 0.1  # the finite-nbeta deficit is real at this nbeta
    _check_against(results, truth, family=2)


def test_chains_start_where_asked_and_a_wrong_shape_is_refused() -> None:
    problem = toy("crossing")
    initial = torch.tensor([[0.3, 0.2], [-0.1, 0.4]], dtype=torch.float64)
    settings = {"nbeta": 100.0, "localization": 1.0, "sampler_options": {"step_size": 1e-4}, "steps": 5, "burn_in": 0}
    result = estimate_llc(problem.loss, W0, chains=2, initial=initial, **settings)
    assert np.allclose(result.loss_trace[:, 0], problem.loss(initial).numpy())  # the first kept draw is the start
    with pytest.raises(ValueError, match=r"initial must be a \[chains, d\] = \[3, 2\] tensor, got \(2, 2\)"):
        estimate_llc(problem.loss, W0, chains=3, initial=initial, **settings)
