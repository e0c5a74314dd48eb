"""All speed benchmarks of the inner loop in one command: tables on stdout, everything in one JSON file.

    python benchmarks/run_all.py [--json [PATH]] [--quick] [--device cpu|cuda] [--threads 2]
                                 [--sections entropy,samplers,estimator] [--hidden 1024] [--batch 128]
                                 [--max-other-cores C] [--quiet-wait S] [--max-seconds S]

A thin wrapper of :mod:`localentropy.experiments.speed.run_all` (also ``python -m localentropy.experiments.speed``),
which describes the sections and the timing; docs/performance.md gives the tables and the targets. A bare
``--json`` writes benchmarks/results/run_all.json.
"""

from __future__ import annotations

from pathlib import Path

from localentropy.experiments.speed.run_all import run

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "run_all.json"

if __name__ == "__main__":
    run(command="python benchmarks/run_all.py", default_json=DEFAULT_JSON)
