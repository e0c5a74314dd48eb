"""Fixtures of the optimizer tests that run under training frameworks."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def accelerate_state() -> Iterator[Callable[[], None]]:
    """accelerate keeps process-wide singletons (its state, the gradient state): the test starts and ends without
    them, and calls the fixture's value to drop them mid-test (before building a second Accelerator or Trainer)."""
    state = pytest.importorskip("accelerate.state")

    def reset() -> None:
        state.AcceleratorState._reset_state(True)
        state.GradientState._reset_state()

    reset()
    yield reset
    reset()
