"""The seed ranges of every experiment, reserved in one place so that evaluation, tuning and replication never
share a seed.

* **Evaluation seeds** are the ones a config declares (a sweep's ``grid.seed``, a comparison run's replicates
  ``0 .. replicates - 1``): the numbers reported. Configs keep them below :data:`TUNING_SEED_OFFSET`.
* **Tuning seeds** (choosing step sizes and other hyperparameters) are the evaluation seeds shifted by
  :data:`TUNING_SEED_OFFSET`, so tuning never sees a reported seed.
* **Fresh seeds** (``localentropy reproduce --fresh-seeds K``: replicating a claim on seeds never used before)
  are ``FRESH_SEED_OFFSET + round * FRESH_BLOCK + 0 .. K - 1``; round 0 is the first replication, a later round
  draws a block no earlier round used.

A comparison run's replicate seeds are hashed from the config's seed and the replicate's index
(:func:`localentropy.experiments.comparison.runner.replicate_seed`): there the ranges apply to the index. Every
seed derived from a config's seed and a name (a record, an optimizer, a purpose) is :func:`stable_seed`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from localentropy.experiments.core.config import ConfigError

TUNING_SEED_OFFSET = 1_000_000
FRESH_SEED_OFFSET = 2_000_000
FRESH_BLOCK = 100_000  # the most fresh seeds one replication round may take
MAX_FRESH_ROUNDS = 1000  # rounds 0 .. 999: the fresh range ends at 102_000_000, far below any seed bound


def stable_seed(*parts: Any) -> int:
    """A seed from the config's seed and a record's or run's name, the same on every machine and Python."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)


def tuning_seeds(evaluation: Iterable[int]) -> list[int]:
    """The tuning seed paired with each evaluation seed."""
    return [TUNING_SEED_OFFSET + int(s) for s in evaluation]


def fresh_offset(round_: int = 0) -> int:
    """The first fresh seed of replication round ``round_``."""
    if not 0 <= round_ < MAX_FRESH_ROUNDS:
        raise ConfigError([f"fresh-seed round: an integer from 0 to {MAX_FRESH_ROUNDS - 1}, got {round_!r}"])
    return FRESH_SEED_OFFSET + round_ * FRESH_BLOCK


def fresh_seeds(k: int, round_: int = 0) -> list[int]:
    """``k`` seeds never used by a config's evaluation or tuning seeds (nor by another round)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= FRESH_BLOCK:
        raise ConfigError([f"--fresh-seeds: an integer from 1 to {FRESH_BLOCK}, got {k!r}"])
    start = fresh_offset(round_)
    return list(range(start, start + k))


def check_disjoint(fresh: Iterable[int], evaluation: Iterable[int], where: str) -> None:
    """Refuse fresh seeds that meet the evaluation seeds or their tuning seeds: :class:`ConfigError` naming the
    field (``where``), the seeds in common and the ranges reserved."""
    fresh_set = {int(s) for s in fresh}
    evaluation = [int(s) for s in evaluation]
    clash = sorted(fresh_set & set(evaluation))
    tuning_clash = sorted(fresh_set & set(tuning_seeds(evaluation)))
    if clash or tuning_clash:
        which = (f"evaluation seed(s) {_few(clash)}" if clash else "") + (" and " if clash and tuning_clash else "")
        which += f"tuning seed(s) {_few(tuning_clash)}" if tuning_clash else ""
        raise ConfigError(
            [
                f"{where}: the fresh seeds {min(fresh_set)}..{max(fresh_set)} include the {which}; evaluation seeds "
                f"must lie below {TUNING_SEED_OFFSET} (tuning seeds are them + {TUNING_SEED_OFFSET}, fresh seeds start "
                f"at {FRESH_SEED_OFFSET})"
            ]
        )


def _few(values: list[int]) -> str:
    return ", ".join(map(str, values[:5])) + (f" (and {len(values) - 5} more)" if len(values) > 5 else "")
