"""The LLC as a flatness measure: its step from the minimum's stiffness, and in ``localentropy train``."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from localentropy.llc.measure import llc_flatness


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    x = torch.randn(256, 3, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    return model, x, y


def test_step_is_a_fraction_of_the_stability_limit_and_reproducible(single_thread) -> None:
    model, x, y = _setup()
    kw = {"chains": 2, "steps": 30, "burn_in": 10, "batch_size": 64, "eigen_iterations": 10}
    a = llc_flatness(model, nn.functional.cross_entropy, x, y, generator=torch.Generator().manual_seed(1), **kw)
    b = llc_flatness(model, nn.functional.cross_entropy, x, y, generator=torch.Generator().manual_seed(1), **kw)
    assert a == b
    assert a.nbeta == pytest.approx(256 / math.log(256))
    assert a.step_size == pytest.approx(0.1 / (a.nbeta * abs(a.top_eigenvalue) + 100.0))
    assert math.isfinite(a.value) and a.mcse > 0 and len(a.per_chain) == 2 and a.n == 256


def test_train_configs_accept_llc_and_leave_it_out_by_default() -> None:
    from localentropy.experiments.training.config import DEFAULT_MEASURES, MEASURES, FlatnessConfig

    assert "llc" in MEASURES and "llc" not in DEFAULT_MEASURES
    assert FlatnessConfig().measures == list(DEFAULT_MEASURES)


@pytest.mark.slow
def test_training_reports_the_llc_when_asked(tmp_path, single_thread) -> None:
    """One epoch of SGD on digits, then the LLC at the final weights (about 5 s; 40 s on a loaded machine)."""
    pytest.importorskip("sklearn")
    from tests.experiments.training.test_train import config, records, train

    cfg = config(["sgd"], epochs=1, flatness={"measures": ["llc"]})
    results = train(cfg, tmp_path / "run")
    llc = records(results)["sgd"]["flatness"]["llc"]
    assert "error" not in llc and math.isfinite(llc["value"]) and llc["chains"] == 2
    row = next(csv.DictReader((tmp_path / "run" / "final.csv").open()))
    assert float(row["llc"]) == pytest.approx(llc["value"]) and float(row["llc_mcse"]) > 0
