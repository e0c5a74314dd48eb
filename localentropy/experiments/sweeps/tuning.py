"""``[tuning]`` in a sweep: each optimizer's learning rate, its own options and its sampler's hyperparameters
searched alike before the sweep's runs, which then train at the chosen values.

A space names ``lr``, the sampler's hyperparameters by their names (``step_size``, ``friction``, ...) and the
optimizer's options as ``options.NAME`` (``options.momentum``, ``options.gamma``, ``options.scoping``,
``options.sigma``, ``options.rho``, ``options.inner_steps``: any option the optimizer's kind takes, a range for a
number, ``choices`` for an integer or a flag such as ``options.nesterov``).

Every tuned optimizer gets the same search (:mod:`localentropy.experiments.tuning.search`): the same number of
trials, each trial a training run per tuning seed at the base config's budget (its epochs or effective epochs:
the same gradient evaluations for every method). The objective is the final validation error (for text, the
validation bits per character: :func:`sweep_objective`), the mean over the
tuning seeds ``seed_offset, seed_offset + 1, ...``, which must differ from every seed the sweep reports (a seed
sets the data split, the initial weights and the minibatch order). Each optimizer's search is one job of the
sweep's executor (local processes or Ray); its record is saved in ``<sweep>/tuning/<label>.json``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from localentropy.data.text import TEXT_SOURCES
from localentropy.experiments.core.config import got, path_text
from localentropy.experiments.core.files import json_digest, slug
from localentropy.experiments.sweeps.paths import optimizer_label
from localentropy.experiments.training.optim import OPTIONS, REPLICA_KINDS
from localentropy.experiments.tuning.search import search
from localentropy.experiments.tuning.space import (
    Dimension,
    Space,
    TuningConfig,
    check_names,
    default_space,
    hard_limits,
    tunable_names,
    tuned_labels,
    wrapped_sampler,
)
from localentropy.samplers import available_samplers, sampler_class, sampler_hyperparameters

OPTION_PREFIX = "options."  # a space's name for one of the optimizer's own options
# options never searched: the temperature is the config's (as for samplers), the noise stream and the schedule's
# length are not hyperparameters of the method
FIXED_OPTIONS = ("temperature", "noise_stream", "total_steps")


def _sampler_of(opt: dict[str, Any]) -> str | None:
    sampler = opt.get("sampler")
    return sampler if isinstance(sampler, str) and sampler in available_samplers() else None


def _names(opt: dict[str, Any]) -> list[str]:
    sampler = _sampler_of(opt)
    options = opt.get("sampler_options") if isinstance(opt.get("sampler_options"), dict) else {}
    names = tunable_names(sampler, wrapped_sampler(sampler, options), preset="preset" in opt, lr=True)
    kind = opt.get("kind")
    own = sorted(set(OPTIONS.get(kind, ())) - set(FIXED_OPTIONS)) if isinstance(kind, str) else []
    return [*names, *(f"{OPTION_PREFIX}{name}" for name in own)]


def _center(opt: dict[str, Any]) -> float | None:
    """The configured step size (a wrapper's: its sampler's), around which the default space lies."""
    options = opt.get("sampler_options") if isinstance(opt.get("sampler_options"), dict) else {}
    inner = options.get("sampler") if isinstance(options.get("sampler"), dict) else {}
    step = options.get("step_size", inner.get("step_size"))
    return float(step) if isinstance(step, int | float) and not isinstance(step, bool) and step > 0 else None


def parse_sweep_tuning(
    problems: list[str], tuning: TuningConfig, base: dict[str, Any], selected: list[str] | None
) -> tuple[TuningConfig, dict[str, Space]]:
    """The space of each tuned optimizer of a sweep's ``[tuning]`` (all the sweep runs by default); the problems
    are added to ``problems``."""
    optimizers = base.get("optimizers") if isinstance(base.get("optimizers"), list) else []
    by_label = {optimizer_label(o, i): o for i, o in enumerate(optimizers) if isinstance(o, dict)}
    allowed = selected if selected is not None else list(by_label)
    labels, wrong = tuned_labels(tuning.optimizers, allowed, "optimizers", "an optimizer this sweep runs")
    tuning.optimizers = labels
    names = {label: _names(by_label[label]) for label in labels}
    given, unknown = check_names(tuning, names, {label: _sampler_of(by_label[label]) for label in labels}, "optimizer")
    problems += [f"{path_text(('tuning', *loc))}: {text}" for loc, text in wrong + unknown]
    spaces = {}
    for label in labels:
        opt = by_label[label]
        sampler = _sampler_of(opt)
        options = opt.get("sampler_options") if isinstance(opt.get("sampler_options"), dict) else {}
        lr = opt.get("lr") if isinstance(opt.get("lr"), int | float) and not isinstance(opt.get("lr"), bool) else None
        space = given.get(label) or default_space(
            names[label], wrapped_sampler(sampler, options) or sampler, _center(opt), lr
        )
        if not space:
            problems.append(
                f"{path_text(('tuning', 'space', label))}: missing: optimizer {label!r} has no default "
                f"space (no step size or lr to centre it on); allowed names: {', '.join(names[label])}"
            )
        spaces[label] = space
    data = base.get("data") if isinstance(base.get("data"), dict) else {}
    if data.get("validation_fraction", 0.1) == 0:
        problems.append("tuning: the objective is the validation error; give data.validation_fraction > 0")
    return tuning, spaces


def check_sweep_tuning(problems: list[str], tuning: TuningConfig, spaces: dict[str, Space], runs: list[Any]) -> None:
    """Tuning seeds apart from the reported ones; no swept field that the tuning chooses."""
    tuning_seeds = set(range(tuning.seed_offset, tuning.seed_offset + tuning.seeds))
    reported = {run.config.get("seed", 0) for run in runs}
    if tuning_seeds & reported:
        problems.append(
            "tuning.seed_offset: "
            + got(
                tuning.seed_offset,
                f"tuning seeds apart from the sweep's seeds "
                f"{sorted(reported)[:10]} (the tuning seeds are {tuning.seed_offset} to "
                f"{tuning.seed_offset + tuning.seeds - 1})",
            )
        )
    for run in runs:
        for key, labels in run.touched.items():
            name = key.rsplit(".", 1)[-1]  # a shorthand ("gamma") or the path's last part
            for label in labels or []:
                if label in spaces and (name in spaces[label] or f"{OPTION_PREFIX}{name}" in spaces[label]):
                    problems.append(
                        f"grid / runs: {key!r} sets {name} of {label!r}, which [tuning] chooses; remove one of the two"
                    )
                    return


def apply_values(opt: dict[str, Any], values: dict[str, Any]) -> None:
    """Set the searched values in one optimizer's table (in place): lr, its options (``options.NAME``), or the
    sampler's (a wrapper's sampler's)."""
    sampler = _sampler_of(opt)
    own = set(sampler_hyperparameters(sampler)) if sampler else set()
    wraps = sampler is not None and sampler_class(sampler).wraps_sampler
    for name, value in values.items():
        if name == "lr":
            opt["lr"] = value
            continue
        if name.startswith(OPTION_PREFIX):
            opt.setdefault("options", {})[name.removeprefix(OPTION_PREFIX)] = value
            continue
        options = opt.setdefault("sampler_options", {})
        if wraps and name not in own:
            options["sampler"] = {**options["sampler"], name: value}
        else:
            options[name] = value


def with_chosen(run_config: dict[str, Any], chosen: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A run's training config with each tuned optimizer at its chosen values."""
    config = copy.deepcopy(run_config)
    for i, opt in enumerate(config.get("optimizers", [])):
        values = chosen.get(optimizer_label(opt, i))
        if values:
            apply_values(opt, values)
    return config


def tuning_jobs(
    base: dict[str, Any], tuning: TuningConfig, spaces: dict[str, Space], nproc: int = 1
) -> list[tuple[str, dict, str]]:
    """One job per tuned optimizer: (label, payload for :func:`tune_one`, file name of its record); ``nproc`` > 1:
    every trial of an optimizer with replicas (:data:`REPLICA_KINDS`: Parle) is a ``localentropy train --nproc``
    run, as the sweep's own runs are; any other optimizer's trial runs in one process on the whole batch, which is
    what its data-parallel ranks compute together (the same gradients, averaged; only per-example randomness such
    as dropout masks is drawn from other streams), without the seconds of starting the ranks."""
    jobs = []
    for i, opt in enumerate(base.get("optimizers", [])):
        label = optimizer_label(opt, i)
        if label not in spaces:
            continue
        config = {**copy.deepcopy(base), "optimizers": [copy.deepcopy(opt)], "name": f"tuning-{slug(label)}"}
        payload = {
            "label": label,
            "config": config,
            "tuning": tuning.as_dict(),
            "threads": base.get("threads", 1),
            "space": {n: d.as_dict() for n, d in spaces[label].items()},
            "nproc": nproc if opt.get("kind") in REPLICA_KINDS else 1,
        }
        jobs.append((label, payload, f"{slug(label)}.json"))
    return jobs


def job_key(payload: dict[str, Any]) -> str:
    """A tuning job's fingerprint (its config, space, trials and tuning seeds): equal keys run the same search."""
    return json_digest(payload)


_SPLITS: dict[str, Any] = {}  # a worker's loaded data, by data config and seed: the trials share the tuning seeds


def validation_error(config_dict: dict[str, Any]) -> tuple[float, int]:
    """Train the config's one optimizer (no files kept) and return (final validation error, gradient evaluations);
    +inf when it diverged."""
    from localentropy.experiments.training.config import parse_train_config
    from localentropy.experiments.training.trainer import OptimizerRun, load_splits

    config = parse_train_config(copy.deepcopy(config_dict), name=str(config_dict.get("name", "tuning")))
    key = json.dumps([config_dict.get("data"), config.seed], sort_keys=True, default=str)
    splits = _SPLITS.get(key) or _SPLITS.setdefault(key, load_splits(config))

    class Trial(OptimizerRun):  # a trial keeps no checkpoint: it is rerun whole if interrupted
        def save(self) -> None:
            return None

        def restore(self) -> bool:
            return False

    with tempfile.TemporaryDirectory() as tmp:
        from localentropy.experiments.core.rundir import RunDirectory

        record = Trial(config, config.optimizers[0], splits, RunDirectory(tmp), io.StringIO()).train()
    return _objective(record, config_dict)


def launched_validation_error(config_dict: dict[str, Any], nproc: int) -> tuple[float, int]:
    """:func:`validation_error` of a trial that runs as ``localentropy train --nproc`` (data-parallel ranks, Parle's
    replicas): its config written as TOML, one run into a temporary directory, its one record read back."""
    from localentropy.experiments.training.launch import launch_table

    with tempfile.TemporaryDirectory(prefix="tuning-trial-") as tmp:
        run_dir, _ = launch_table(config_dict, Path(tmp) / "run", nproc)  # a failed rank raises
        record = json.loads((run_dir / "results.json").read_text())["records"][0]
    return _objective(record, config_dict)


class Objective(NamedTuple):
    """What a trial is scored by: its name, the key of the run's final metrics that holds it, and how to show it."""

    name: str
    key: str
    show: Callable[[float], str]


ERROR = Objective("validation error", "val_error", lambda v: f"{100 * v:.2f} %")
# a language model's: the held-out bits per character (its loss); the error rate of the next-character guess is
# nearly flat near the source's entropy rate, where trials differ by less than its noise
BITS = Objective("validation bits per character", "val_bits_per_char", lambda v: f"{v:.4f}")
OBJECTIVES = {o.name: o for o in (ERROR, BITS)}


def sweep_objective(config: dict[str, Any]) -> Objective:
    """The objective of a (base or trial) config: bits per character for text, the validation error otherwise."""
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    return BITS if data.get("source") in TEXT_SOURCES else ERROR


def _objective(record: dict[str, Any], config: dict[str, Any]) -> tuple[float, int]:
    """(final value of the config's objective, gradient evaluations) of a trial's record; +inf when it diverged."""
    evals = int(record["rows"][-1]["grad_evals"]) if record["rows"] else 0
    final = record.get("final") or {}
    value = final.get(sweep_objective(config).key) if record["status"] == "ok" else None
    return (float(value) if value is not None and math.isfinite(value) else math.inf), evals


def tune_one(payload: dict[str, Any], directory: str, nproc: int = 1) -> dict[str, Any]:
    """Search one optimizer's space (what a worker process or Ray task runs); returns its tuning record. ``nproc``
    (> 1 for a sweep whose runs are ``train --nproc``; the executor passes it as it does to a run, so that Ray
    reserves the trial's processes) is overridden by the job's own (:func:`tuning_jobs`): the trials of an optimizer
    with replicas run through the launcher, the others in this process."""
    import torch

    torch.set_num_threads(int(payload.get("threads", 1)))
    tuning = TuningConfig(**{k: v for k, v in payload["tuning"].items() if k != "space"})
    space = {n: Dimension(**d) for n, d in payload["space"].items()}
    opt = payload["config"]["optimizers"][0]
    sampler = _sampler_of(opt)
    options = opt.get("sampler_options") if isinstance(opt.get("sampler_options"), dict) else {}
    samplers = (wrapped_sampler(sampler, options), sampler)

    nproc = int(payload.get("nproc", nproc))  # the job's own: 1 for an optimizer without replicas

    def evaluate(values: dict[str, Any], unit: int) -> tuple[float, int]:
        config = copy.deepcopy(payload["config"])
        apply_values(config["optimizers"][0], values)
        config["seed"] = tuning.seed_offset + unit
        return validation_error(config) if nproc == 1 else launched_validation_error(config, nproc)

    limits = {name: hard_limits(name, samplers) for name in space}
    return search(space, evaluate, tuning, tuning.seeds, limits)
