"""The sampler ranking for the LLC: tuned on tuning seeds, compared on paired replicates with a Holm verdict."""

from __future__ import annotations

import numpy as np
import pytest

from localentropy.llc.ranking import rank_samplers


def test_ranking_tunes_compares_and_separates_a_biased_sampler(single_thread) -> None:
    # msgld at momentum 0.5 has a bias of order h / (1 - m)^2; MALA none: at c <= 1 MALA's error is the smaller
    ranking = rank_samplers(
        "regular",
        nbeta=100.0,
        localization=2.0,
        evals_per_chain=600,
        chains=8,
        fractions=(1.0, 0.3),
        samplers=("mala", "msgld"),
        tuning_replicates=1,
        replicates=4,
    )
    assert set(ranking.chosen) == {"mala", "msgld"} and all(c in (1.0, 0.3) for c in ranking.chosen.values())
    assert all(len(e) == 4 for e in ranking.errors.values())
    assert ranking.verdict.n == 4 and ranking.verdict.lowest in ("mala", "msgld")
    assert np.isfinite(ranking.rmse("mala")) and ranking.exact == pytest.approx(200.0 / 202.0)
