"""The compute measurement of the reproduce step ``scale_compute``: seconds per pass of the scale sweep's model.

The projection of the findings' scale section (docs/distributed.md) needs, for the model the sweep trains, the
seconds of one forward-backward on the global batch and of the work every rank repeats per pass (an SGD step, an
Entropy-SGD inner update), measured in one process on 1 thread, as each rank of the sweep's runs computes.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

from localentropy.experiments.training.scaling import measure_model

REPEATS = 30


def measure_sweep_compute(sweep: dict[str, Any], repeats: int = REPEATS) -> dict[str, Any]:
    """The compute per pass of the base training config of ``sweep`` (a sweep config as read from TOML)."""
    from localentropy.experiments.sweeps.config import parse_sweep_config
    from localentropy.experiments.training.config import INPUT_SHAPES, parse_train_config

    config = parse_sweep_config(copy.deepcopy(sweep), name=str(sweep.get("name", "scale")))
    base = parse_train_config(copy.deepcopy(config.runs[0].config), name="scale")
    shape = INPUT_SHAPES[base.data.source]
    measured = measure_model(base.model.name, shape, base.model.options, base.batch_size, repeats, threads=1)
    return {
        "model": base.model.name,
        "input_shape": list(shape),
        "repeats": repeats,
        "threads": 1,
        "nproc": config.nproc,
        **asdict(measured),
    }
