"""Smoothing targets on SharpWide(1): which basin -F and f_sigma pick, exactness of the minimisers, outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from localentropy.entropy.problems import SharpWide
from localentropy.experiments.targets import (
    DEFAULT_SETTINGS,
    _neg_local_entropy_grid,
    compute_targets,
    plot_targets,
    targets_table,
)

pytestmark = pytest.mark.usefixtures("single_thread")

PROBLEM = SharpWide(1)


@pytest.fixture(scope="module")
def result():
    return compute_targets()  # runs on one torch thread by itself


def setting(result, gamma, temperature):
    (match,) = [s for s in result["settings"] if (s["gamma"], s["temperature"]) == (gamma, temperature)]
    return match


def minimiser(result, gamma, temperature, objective):
    return setting(result, gamma, temperature)["objectives"][objective]["minimiser"]


def test_json_round_trip_and_layout(result):
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert len(result["settings"]) == len(DEFAULT_SETTINGS)
    assert len(result["x"]) == 601 and result["x"][0] == -3.0 and result["x"][-1] == 3.0
    assert result["loss"]["minimiser"]["basin"] == "sharp"  # f itself prefers the deep, sharp minimum
    for s in result["settings"]:
        assert s["sigma"] == pytest.approx(math.sqrt(s["temperature"] / s["gamma"]))
        for summary in s["objectives"].values():
            values = np.array(summary["values"])
            assert values.shape == (601,) and values.min() == 0.0
            # the refined minimiser is no higher than the grid's minimum
            assert summary["minimiser"]["value"] <= 1e-12


def test_local_entropy_basins_follow_the_documented_regimes(result):
    # SharpWide docstring: T <= 0.1 keeps the sharp minimum; gamma = T = 0.5 leaves only the wide one
    assert minimiser(result, 1.0, 0.01, "neg_local_entropy")["basin"] == "sharp"
    entropy = setting(result, 0.5, 0.5)["objectives"]["neg_local_entropy"]
    assert entropy["minimiser"]["basin"] == "wide"
    assert [m["basin"] for m in entropy["local_minima"]] == ["wide"] and entropy["wide_minus_sharp"] is None
    assert abs(entropy["grad_at_f_minima"]["sharp"]) > 0.05  # the sharp minimum is no longer stationary


def test_tiny_sigma_keeps_the_sharp_minimum():
    tiny = compute_targets([(100.0, 0.01)], n_grid=301)  # sigma = 0.01, a tenth of the sharp width
    (s,) = tiny["settings"]
    assert s["sigma"] == pytest.approx(0.01)
    smoothed = s["objectives"]["smoothed_loss"]
    assert smoothed["minimiser"]["basin"] == "sharp"
    assert smoothed["minimiser"]["x"] == pytest.approx(tiny["f_minima"]["sharp"]["x"], abs=1e-3)
    assert smoothed["wide_minus_sharp"] > 0.25


@pytest.mark.parametrize(("gamma", "temperature"), [(1.0, 1.0), (0.5, 0.5)])
def test_large_sigma_picks_the_wide_minimum(result, gamma, temperature):
    smoothed = setting(result, gamma, temperature)["objectives"]["smoothed_loss"]
    assert smoothed["minimiser"]["basin"] == "wide"
    assert [m["basin"] for m in smoothed["local_minima"]] == ["wide"]


def test_smoothed_loss_depends_on_sigma_alone(result):
    same_sigma = [s for s in result["settings"] if s["sigma"] == pytest.approx(math.sqrt(0.1))]
    assert len(same_sigma) >= 2
    first = same_sigma[0]["objectives"]["smoothed_loss"]["values"]
    for s in same_sigma[1:]:
        np.testing.assert_allclose(s["objectives"]["smoothed_loss"]["values"], first, atol=1e-12)


def test_refined_minimisers_are_stationary(result):
    def exact_grad(key, s, x):
        point = torch.tensor([x], dtype=torch.float64)
        if key == "loss":
            return float(PROBLEM.grad(point)[0])
        if key == "neg_local_entropy":
            return float(PROBLEM.local_entropy_grad(point, s["gamma"], s["temperature"])[0])
        return float(PROBLEM.smoothed_grad(point, s["sigma"])[0])

    checked = 0
    for s in [None, *result["settings"]]:
        summaries = {"loss": result["loss"]} if s is None else s["objectives"]
        for key, summary in summaries.items():
            for m in summary["local_minima"]:
                assert not m["at_edge"]
                g = exact_grad(key, s, m["x"])
                assert abs(g) < 1e-6, (key, s and (s["gamma"], s["temperature"]), m)
                assert g == pytest.approx(m["grad"], abs=1e-12)
                checked += 1
    assert checked >= 2 * len(result["settings"]) + 2


def test_grid_quadrature_matches_the_problem():
    x = np.linspace(-3.0, 3.0, 7)
    for gamma, temperature in [(1.0, 0.01), (0.3, 0.3), (10.0, 1.0)]:
        exact = -PROBLEM.local_entropy(torch.from_numpy(x[:, None]), gamma, temperature).numpy()
        np.testing.assert_allclose(_neg_local_entropy_grid(PROBLEM, x, gamma, temperature), exact, atol=1e-10)


def test_quadrature_error_is_recorded_and_small(result):
    assert all(0.0 <= s["quadrature_error"] < 1e-10 for s in result["settings"])


def test_plot_writes_a_png(result, tmp_path):
    path = plot_targets(result, tmp_path / "targets.png")
    assert path == tmp_path / "targets.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_table_has_one_row_per_setting(result):
    lines = targets_table(result)
    assert len(lines) == 2 + len(result["settings"])
    assert lines[0].startswith("| gamma | T | sigma") and lines[1].startswith("|---")
    for line, s in zip(lines[2:], result["settings"], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 9
        assert float(cells[0]) == s["gamma"] and float(cells[1]) == s["temperature"]
    row = lines[2 + DEFAULT_SETTINGS.index((0.5, 0.5))]
    assert "(wide)" in row and "—" in row and "no (g" in row


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="gamma and temperature"):
        compute_targets([(0.0, 0.1)], n_grid=11)
    with pytest.raises(ValueError, match="n_grid"):
        compute_targets([(1.0, 0.1)], n_grid=2)
