"""Our model-level LLC against devinterp's with matched settings (slow: 15 s, 80 s on a loaded machine; skips without
devinterp, ``pip install 'localentropy[llc]'``)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("devinterp")

from localentropy.llc.crosscheck import devinterp_crosscheck


@pytest.mark.slow
def test_matches_devinterp_within_the_chains_standard_error(single_thread) -> None:
    check = devinterp_crosscheck(chains=8, steps=1000)
    assert np.isfinite(check.ours.mean) and np.isfinite(check.theirs)
    # n = 1024 is 32 batches of 32: devinterp's init loss (32 minibatches) is the full-data loss we use
    assert check.theirs_init_loss == pytest.approx(check.ours.loss_at_w_star, rel=1e-5)
    assert abs(check.difference) < 4 * check.difference_se, (check.ours.mean, check.theirs, check.difference_se)
    assert check.difference_se < 0.1 * abs(check.theirs)  # the comparison resolves 10% of the value
