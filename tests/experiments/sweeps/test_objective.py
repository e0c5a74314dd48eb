"""A tuned sweep's objective: the validation error, or for text the validation bits per character."""

from __future__ import annotations

import math

from localentropy.experiments.core.config import read_toml
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.sweeps import tuning


def _record(status: str = "ok", **final: float) -> dict:
    return {"status": status, "rows": [{"grad_evals": 40}], "final": final}


def test_text_trials_are_scored_by_bits_and_the_others_by_their_error() -> None:
    text = {"data": {"source": "markov-text"}}
    images = {"data": {"source": "mnist5k"}}
    assert tuning.sweep_objective(text) is tuning.BITS and tuning.sweep_objective(images) is tuning.ERROR
    assert tuning._objective(_record(val_error=0.6, val_bits_per_char=2.34), text) == (2.34, 40)
    assert tuning._objective(_record(val_error=0.06, val_bits_per_char=None), images) == (0.06, 40)
    assert tuning._objective(_record("diverged", val_bits_per_char=2.34), text) == (math.inf, 40)
    char = read_toml(shipped_dir() / "sweep_recurrent_char.toml")
    assert tuning.sweep_objective(char["base"]).name == "validation bits per character"
