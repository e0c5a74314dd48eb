"""``localentropy reproduce --fresh-seeds K``: rerun the steps behind the findings' claims on K seeds never used
before, and say claim by claim whether the two batches are consistent and what the union of their units gives.

A sweep step runs with ``grid.seed`` replaced by the fresh seeds; a comparison run step (``kind = "run"``) with
its replicates ``first_replicate = offset .. offset + K - 1`` (the replicate index its seeds are hashed from).
The seeds come from the range reserved for replication (:mod:`localentropy.experiments.core.seeds`) and are
checked disjoint from the step's evaluation seeds and their tuning seeds. Each fresh step runs into
``<out>/fresh/<step>/`` (its own run directory: resumable, rerun when its config changes) and its
``results.json`` records ``fresh_seeds`` (offset, K, round, the seeds and the evaluation seeds they avoid).
``<out>/fresh/replication.json`` and ``replication.md`` then compare every claim of the original step
(``<out>/<step>/``) with the fresh one (:mod:`localentropy.experiments.reproduce.claims`); the findings document
shows the same beside each claim.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from localentropy.experiments.comparison.suite import SUITE_FILE
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.files import atomic_write_json
from localentropy.experiments.core.seeds import check_disjoint, fresh_offset, fresh_seeds
from localentropy.experiments.reproduce.steps import Step

QUICK_FRESH_CAP = 3  # --quick with --fresh-seeds: at most this many fresh seeds per step
FRESH_DIR = "fresh"


def evaluation_seeds(step: Step, config: dict[str, Any]) -> list[int]:
    """The seeds (sweep) or replicate indices (comparison run) the step's config reports on."""
    if step.kind == "sweep":
        seeds = config.get("grid", {}).get("seed")
        if not isinstance(seeds, list) or not seeds:
            raise ConfigError(
                [f"step {step.name}: --fresh-seeds replaces the sweep's grid.seed list, and {step.config} has none"]
            )
        return [int(s) for s in seeds]
    if step.kind == "run":
        first = int(config.get("first_replicate", 0))
        return list(range(first, first + int(config.get("replicates", 10))))
    raise ConfigError([f"--fresh-seeds: step {step.name} is a {step.kind} computation, not a run or sweep"])


def fresh_config(step: Step, config: dict[str, Any], k: int, round_: int = 0) -> tuple[dict[str, Any], dict]:
    """The step's config on ``k`` fresh seeds, and the record of them; refuses seeds that meet the step's."""
    seeds = fresh_seeds(k, round_)
    used = evaluation_seeds(step, config)
    field = "grid.seed" if step.kind == "sweep" else "replicates"
    check_disjoint(seeds, used, f"step {step.name} ({step.config}, {field})")
    data = copy.deepcopy(config)
    if step.kind == "sweep":
        data["grid"]["seed"] = seeds
    else:
        data["first_replicate"], data["replicates"] = seeds[0], k
    record = {
        "k": k,
        "round": round_,
        "offset": fresh_offset(round_),
        "seeds": seeds,
        "evaluation_seeds": used,
        "unit": "seed" if step.kind == "sweep" else "replicate",
    }
    return data, record


def fresh_dir(out: Path, step: Step | str) -> Path:
    return out / FRESH_DIR / (step if isinstance(step, str) else step.name)


def results_path(step_out: Path) -> Path:
    """A step's results file: its results.json, or the suite.json of a comparison of several problems."""
    path = step_out / "results.json"
    return path if path.is_file() or not (step_out / SUITE_FILE).is_file() else step_out / SUITE_FILE


def record_fresh(step_out: Path, record: dict[str, Any]) -> None:
    """Write the fresh-seed record into the step's results file (idempotent: a skipped step rewrites the same)."""
    path = results_path(step_out)
    results = json.loads(path.read_text())
    if results.get("fresh_seeds") != record:
        atomic_write_json(path, {**results, "fresh_seeds": record})
