"""Cost of one sampler step, in units of one gradient evaluation G, on the paper's MNIST MLP.

    python benchmarks/bench_samplers.py [--repeats N] [--warmup N] [--json [PATH]] [--threads 2]
                                        [--device cpu|cuda] [--hidden 1024] [--batch 128]

A thin wrapper of :mod:`localentropy.experiments.speed.samplers` (its ``main``), which describes the rows and the
timing. A bare ``--json`` writes benchmarks/results/samplers.json.
"""

from __future__ import annotations

from pathlib import Path

from localentropy.experiments.speed.samplers import main

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "samplers.json"

if __name__ == "__main__":
    main(default_json=DEFAULT_JSON)
