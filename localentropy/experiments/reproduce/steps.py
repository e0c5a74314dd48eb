"""The registered steps of ``localentropy reproduce``: each declares its question, its config and the findings
section it feeds; adding a step is one :func:`register_step` call.

A step is an ordinary ``localentropy run`` (``kind="run"``) or ``sweep`` (``"sweep"``) of a shipped config
(``localentropy/configs``), or a computation of this package (``"targets"``, ``"accuracy"``, ``"speed"``,
``"atlas"``: the samplers' accuracy atlas of docs/samplers.md, and ``"compute"``: the seconds per pass of a shipped
sweep config's model). ``quick``
holds what ``--quick`` changes (fewer seeds, replicates, budgets, epochs); ``full_minutes`` and ``quick_minutes``
are measured on this project's 2-core machine (2026-11-28), rounded up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from localentropy.experiments.core.config import ConfigError

KINDS = ("run", "sweep", "targets", "accuracy", "speed", "atlas", "compute")
CONFIG_KINDS = ("run", "sweep", "compute")  # the kinds that read a shipped config file
# the findings document's sections
SECTIONS = ("cost", "smoothing", "samplers", "sensitivity", "overhead", "recurrent", "scale", "llc")


@dataclass(frozen=True)
class Step:
    """One experiment behind the findings: ``kind`` says how it runs, ``config`` which file (if any)."""

    name: str
    kind: str
    config: str | None
    question: str
    full_minutes: float
    quick_minutes: float
    section: str = ""
    quick: dict[str, Any] = field(default_factory=dict, compare=False)
    timed: bool = False  # its wall-clock seconds are findings: its runs go one at a time (timed alone)


_STEPS: dict[str, Step] = {}


def register_step(
    name: str,
    *,
    kind: str,
    question: str,
    section: str,
    full_minutes: float,
    quick_minutes: float,
    config: str | None = None,
    quick: dict[str, Any] | None = None,
    timed: bool = False,
) -> Step:
    """Add a step (run in registration order); a name may be registered once. ``timed``: the findings state
    ratios of its runs' seconds, so its runs go one at a time whatever ``--workers`` says."""
    if name in _STEPS:
        raise ValueError(f"a reproduce step named {name!r} is already registered")
    if kind not in KINDS:
        raise ValueError(f"step {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if section not in SECTIONS:
        raise ValueError(f"step {name!r}: section must be one of {', '.join(SECTIONS)}, got {section!r}")
    if (config is None) != (kind not in CONFIG_KINDS):
        raise ValueError(f"step {name!r}: a {kind} step {'needs' if config is None else 'takes no'} config file")
    step = Step(name, kind, config, question, full_minutes, quick_minutes, section, dict(quick or {}), timed)
    _STEPS[name] = step
    return step


def registered_steps() -> tuple[Step, ...]:
    return tuple(_STEPS.values())


def select_steps(names: str | Iterable[str] | None) -> tuple[Step, ...]:
    """The steps named (``"a,b"`` or a list), in registration order; all of them for None.

    An unknown name is bad input: :class:`ConfigError` naming it and the allowed names.
    """
    if names is None:
        return registered_steps()
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    unknown = [n for n in wanted if n not in _STEPS]
    if unknown or not wanted:
        got = ", ".join(map(repr, unknown)) if unknown else "no step"
        raise ConfigError([f"--steps: unknown step(s) {got}; allowed: {', '.join(_STEPS)}"])
    return tuple(s for s in _STEPS.values() if s.name in wanted)


def expected_minutes(quick: bool, steps: Iterable[Step] | None = None) -> float:
    return sum(s.quick_minutes if quick else s.full_minutes for s in (registered_steps() if steps is None else steps))


# The steps behind docs/findings.md, in the order they run. Question labels are the review's.
# Minutes: each step's wall time in the full reproduction of 2026-12-07 (``localentropy reproduce --fresh-seeds 5``,
# every comparison tuned; ``records/timings.json`` of its directory), rounded up to a tenth of a minute: 57.9 minutes
# for the 19 steps and 20.9 for the fresh reruns of the 14 with claims, 78.8 in all. Low-priority jobs shared the
# cores during its first 25 minutes (nice 19: they took little of them, but the load average read ~4 then). A fresh
# rerun costs its step's minutes scaled by the number of fresh seeds over the original's. The notes above some
# steps below are earlier measurements and estimates, kept for the sizes they justify; the figures are these.
# The quick minutes below are each step's wall time in one --quick run alone on the machine (2026-12-07 18:00 UTC,
# load below 1, 6.1 minutes of wall time in all with every comparison tuned, ``records/timings.json``), rounded up
# to a tenth of a minute.
register_step(
    "shootout",
    kind="run",
    config="shootout.toml",
    question="Q3",
    section="samplers",
    full_minutes=1,
    quick_minutes=0.2,
    quick={"replicates": 4, "budgets": 2, "tuning": {"trials": 9, "replicates": 2}},
)
register_step(
    "smoothing_sharp_wide",
    kind="run",
    config="smoothing.toml",
    question="Q2",
    section="smoothing",
    full_minutes=0.3,
    quick_minutes=0.1,
    quick={"replicates": 6, "budgets": 2},
)
register_step(
    "smoothing_quadratic",
    kind="run",
    config="smoothing_quadratic.toml",
    question="Q2",
    section="smoothing",
    full_minutes=0.1,
    quick_minutes=0.1,
    quick={"replicates": 6, "budgets": 2},
)
register_step(
    "smoothing_targets",
    kind="targets",
    question="Q2",
    section="smoothing",
    full_minutes=0.1,
    quick_minutes=0.1,
    quick={"n_grid": 241},
)
register_step(
    "flatness",
    kind="sweep",
    config="sweep_flatness.toml",
    question="Q2",
    section="smoothing",
    full_minutes=2.6,
    quick_minutes=0.5,
    quick={"seeds": 3, "set": {"effective_epochs": 30}, "tuning": {"trials": 2, "seeds": 1}},
)
# cost (issue 35: every optimizer tuned alike, then 20 runs of 40 effective epochs, one at a time; the tuning trials,
# which are not timed, two at a time):
# CPU time (user + sys, /usr/bin/time -v) measured at a load of ~7 on the 2 cores (2026-12-07): 4 runs of 40
# effective epochs 145.7 s (36.4 s a run, process start and evaluations included), 8 tuning trials 240.8 s more
# (30.1 s a trial on one seed): 24 trials on 2 tuning seeds, two at a time, + 20 runs = 24.2 minutes, 12.1 of them
# the runs (a fresh rerun, which reuses the tuning); alone on the machine less (the 100-epoch runs of before took
# 60 s each alone, 84 s of CPU each at that load). --quick (2 seeds, 6 effective epochs, 2 trials on 1 tuning
# seed): 125 s of CPU at load ~4.5, reproduce's start included. Before the tuning: 20 minutes alone at 100
# effective epochs (2026-11-28). Measured alone (`reproduce --steps cost --fresh-seeds 2`, 2026-12-07 18:39 UTC, load
# below 1): the step 1599 s (26.7 minutes: the searches about 15, the 20 runs 33-48 s each), the fresh rerun of
# 2 seeds 287 s with every search reused. Rerun alone at d2a7af7 (2026-12-07 22:57 UTC, the runs measured alone:
# other processes at most 0.01 cores): 1511 s, 25.2 minutes, the registered figure.
register_step(
    "cost",
    kind="sweep",
    config="sweep_cost.toml",
    question="Q1",
    section="cost",
    full_minutes=25.2,
    quick_minutes=1.5,
    quick={"seeds": 2, "set": {"effective_epochs": 6}, "tuning": {"trials": 2, "seeds": 1}},
    timed=True,  # Q1's seconds per effective epoch: one run at a time
)
register_step(
    "samplers_training",
    kind="sweep",
    config="sweep_samplers.toml",
    question="Q3",
    section="samplers",
    full_minutes=1.3,
    quick_minutes=0.4,
    quick={"seeds": 3, "tuning": {"trials": 4, "seeds": 1}},
)
register_step(
    "sensitivity",
    kind="sweep",
    config="sweep_sensitivity.toml",
    question="S3",
    section="sensitivity",
    full_minutes=0.9,
    quick_minutes=0.5,
    quick={"seeds": 2, "tuning": {"trials": 2, "seeds": 1}},
)
register_step(
    "scoping",
    kind="sweep",
    config="sweep_scoping.toml",
    question="S3",
    section="sensitivity",
    full_minutes=0.5,
    quick_minutes=0.3,
    quick={"seeds": 2, "tuning": {"trials": 2, "seeds": 1}},
)
register_step(
    "overhead_training",
    kind="sweep",
    config="sweep_overhead.toml",
    question="S4",
    section="overhead",
    full_minutes=1.4,
    quick_minutes=0.5,
    quick={"seeds": 2, "tuning": {"trials": 2, "seeds": 1}},
)
register_step(
    "overhead_accuracy",
    kind="accuracy",
    question="S4",
    section="overhead",
    full_minutes=0.4,
    quick_minutes=0.1,
    quick={"replicates": 3, "outer_steps": 30, "inner_steps": (1, 5, 20)},
)
register_step(
    "overhead_speed",
    kind="speed",
    question="S4",
    section="overhead",
    full_minutes=3.6,
    quick_minutes=0.3,
    quick={"args": ["--quick"]},
)
# the recurrent steps tune every optimizer alike before 5 seeds each (char: 10 trials on 1 tuning seed; row: 12 on
# 2, its validation split being small). Full, from full sweeps timed with `/usr/bin/time -v` (user + sys, 2026-12-07,
# at load ~6, so the wall time is the CPU time over 2 workers): char 60 runs of about 14 s of CPU time, 14 CPU
# minutes, 7 of wall time alone; row 116 runs in 422-461 s of CPU time, 4 minutes of wall time. A fresh-seed rerun
# reuses the tuning: 20 runs each, 2.5 and under 1 minute. --quick: 2 trials, 2 seeds, 1 effective epoch (the char-LSTM
# on 100,000 characters): 16 short runs each; both steps together took 78 s of CPU time (`reproduce --quick --steps
# recurrent_char,recurrent_row`, 3.2 minutes of wall time at load ~7), so about 0.3 minutes each alone.
register_step(
    "recurrent_char",
    kind="sweep",
    config="sweep_recurrent_char.toml",
    question="R1",
    section="recurrent",
    full_minutes=5.8,
    quick_minutes=0.2,
    quick={
        "seeds": 2,
        "set": {"effective_epochs": 1, "data.options.length": 100_000},
        "tuning": {"trials": 2, "seeds": 1},
    },
)
register_step(
    "recurrent_row",
    kind="sweep",
    config="sweep_recurrent_row.toml",
    question="R1",
    section="recurrent",
    full_minutes=3,
    quick_minutes=0.3,
    quick={"seeds": 2, "set": {"effective_epochs": 1}, "tuning": {"trials": 2, "seeds": 1}},
)
# the samplers' accuracy atlas (docs/samplers.md; ``localentropy samplers --accuracy``), for docs/samplers.md, not the
# findings: 3.1 minutes full, 0.7 quick
register_step(
    "atlas", kind="atlas", question="Q3", section="samplers", full_minutes=2.2, quick_minutes=0.3, quick={"quick": True}
)
# the scale steps (issue 35: SGD-DDP, Entropy-SGD-DDP and Parle tuned alike first). Each `train --nproc 2` launch
# takes 23-28 s, nearly all of it starting processes and loading data (23 s at load ~2, 2026-12-07). Full: Parle's
# 8 trials on 2 tuning seeds (16 launches), SGD-DDP's and Entropy-SGD-DDP's 32 trials in one process (~3 s each),
# then 5 runs of all three (~34 s each): about 10 minutes alone, estimated from those parts (the first version, with
# 1 tuning seed and every trial launched, took 13.7 minutes at load ~6). A fresh-seed rerun reuses the tuning: K runs.
# --quick (1 trial each, no extension, 2 seeds of 3 effective epochs): Parle's 1 launch and 2 runs, ~1.4 minutes;
# quick runs are no faster than full ones, their training being ~0.5 s of the ~25.
register_step(
    "scale",
    kind="sweep",
    config="sweep_scale.toml",
    question="P1",
    section="scale",
    full_minutes=4.6,
    quick_minutes=0.7,
    quick={"seeds": 2, "set": {"effective_epochs": 3}, "tuning": {"trials": 1, "seeds": 1, "max_extensions": 0}},
)
register_step(
    "scale_compute",
    kind="compute",
    config="sweep_scale.toml",
    question="P1",
    section="scale",
    full_minutes=0.1,
    quick_minutes=0.1,
    quick={"repeats": 10},
)
# the LLC: every sampler on the exact toys and a deep linear network, tuned alike (issue 34). Full: 13.1 minutes of
# wall time at load ~5 on the 2 cores, 4.4 minutes of CPU time (2026-12-07). --quick: 48 chains of 500 steps on the
# same budget (pSGLD adapts for 100), 3 trials of 2 replicates, 2 replicates, no draws kept: 24 s of wall time at
# load ~3.5 (21 s of CPU time). It takes the registered --quick total from 9.9 to 10.3 minutes, over the 10 budgeted.
register_step(
    "llc_samplers",
    kind="run",
    config="llc_samplers.toml",
    question="Q3",
    section="llc",
    full_minutes=4.2,
    quick_minutes=0.4,
    quick={
        "replicates": 2,
        "budgets": 1,
        "set": {"chains": 48, "keep_draws": False},
        "tuning": {"trials": 3, "replicates": 2},
    },
)
# the LLC along training: Entropy-SGD, SGD, SAM and LPF-SGD on digits, tuned alike (16 trials on 2 tuning seeds), the
# LLC at each final weight vector, 6 seeds. Full: 94 s of wall time with 2 workers at load ~4, 88 s of CPU
# (2026-12-07; before the tuning 54 s); --quick (2 seeds, 2 effective epochs, the flatness
# passes on 300 examples): 26 s at load ~4. With llc_samplers' 0.4 it takes the --quick total to 10.8 minutes.
register_step(
    "llc_training",
    kind="sweep",
    config="sweep_llc.toml",
    question="Q2",
    section="llc",
    full_minutes=0.6,
    quick_minutes=0.2,
    quick={
        "seeds": 2,
        "set": {"effective_epochs": 2, "flatness.examples": 300, "flatness.power_iterations": 10},
        "tuning": {"trials": 2, "seeds": 1, "max_extensions": 0},
    },
)
