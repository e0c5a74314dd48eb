"""Shared test configuration: hypothesis profiles and a single-threaded torch for small-tensor tests.

Choose a hypothesis profile with the environment variable HYPOTHESIS_PROFILE ("default", "ci" or
"thorough"); "default" is used when it is unset.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from localentropy._threads import torch_threads

settings.register_profile("default", max_examples=25, deadline=None)
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def single_thread():
    """Run the test with one intra-op thread, then restore the previous setting.

    The sampler tests work on tiny tensors (a few hundred chains in 2 to 10 dimensions). On the 2-core
    development machine a multi-threaded BLAS turned the (n_chains, d) @ (d, d) gradient into sporadic
    stalls: the same 3,000-step run took 0.1 s with one thread and anywhere from 0.2 s to 60 s with two.
    """
    with torch_threads(1):
        yield
