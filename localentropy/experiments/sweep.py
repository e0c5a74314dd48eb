"""``localentropy sweep``: many training runs from one base config, on local processes or on Ray.

A sweep config names a base training config (a ``train_*.toml`` file or an inline ``[base]`` table) and the
values to try for any of its fields by dotted path: a ``[grid]`` (Cartesian product) and / or a list of
``[[runs]]`` (each a table of overrides; the grid is crossed with every listed run). Every expanded run config
is validated by the training config parser before anything runs; a bad sweep raises :class:`ConfigError`
listing every problem. Each run is one ``localentropy train`` run in its own run directory under
``<sweep>/runs/<run id>``, executed by :func:`run_one` either in a ``ProcessPoolExecutor`` (spawn) or as a Ray
task: the same function either way. Completed runs are skipped on a re-run; a failed run is recorded with its
error and does not stop the others. Fields, executors and outputs: docs/sweeps.md.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import re
import sys
import time
import tomllib
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from localentropy.experiments.config import ConfigError, _Reader, _shown, read_toml
from localentropy.experiments.rundir import MARKER, RunDirectory, atomic_write_bytes, atomic_write_json, environment

SCHEMA = 1
EXECUTORS = ("local", "ray")
RAY_EXTRA = "ray"
OPTIMIZER_AXIS = "optimizer"
MAX_RUNS = 10_000
MAX_NAME = 64  # run names become directory names (the training config's rule)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# the training config's fields (train_config.parse_train_config); ``name`` is set by the sweep (the run id)
TRAIN_FIELDS = ("seed", "threads", "batch_size", "eval_batch_size", "epochs", "effective_epochs", "data", "model",
                "schedule", "flatness", "optimizers")  # fmt: skip
# bare names that set a field of every optimizer that takes it (``optimizers[*].<path>``)
SHORTHANDS: dict[str, tuple[str, ...]] = {
    "lr": ("lr",),
    **{k: ("options", k) for k in ("gamma", "scoping", "inner_steps", "temperature", "averaging", "outer_scale",
                                   "coupling", "warm_start", "sigma", "n_samples", "rho")},
    **{k: ("sampler_options", k) for k in ("step_size", "noise_scale", "friction", "noise")},
}  # fmt: skip


class _Star:
    """``optimizers[*]``: every optimizer the rest of the path applies to."""

    def __repr__(self) -> str:
        return "*"


STAR = _Star()
Segment = str | int | _Star | tuple[str]  # a key, a list index, the wildcard, an optimizer label ("label",)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_BRACKET = re.compile(r"""\[(?:(-?\d+)|(\*)|"([^"]*)"|'([^']*)')\]""")


def parse_path(text: str) -> tuple[Segment, ...]:
    """``optimizers[0].options.gamma`` -> ("optimizers", 0, "options", "gamma"); raises ValueError."""
    segments: list[Segment] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "[" and segments:
            m = _BRACKET.match(text, pos)
            if m is None:
                raise ValueError(f"a bracket must hold an index, * or a quoted label (at character {pos})")
            index, star, dq, sq = m.groups()
            segments.append(int(index) if index is not None else STAR if star else ((dq if dq is not None else sq),))
            pos = m.end()
            continue
        if segments:
            if text[pos] != ".":
                raise ValueError(f"expected '.' or '[' at character {pos}")
            pos += 1
        m = _KEY.match(text, pos)
        if m is None:
            raise ValueError(f"expected a field name at character {pos}")
        segments.append(m.group())
        pos = m.end()
    if not segments:
        raise ValueError("an empty path")
    return tuple(segments)


def format_path(path: tuple[Segment, ...]) -> str:
    out = ""
    for s in path:
        if isinstance(s, str):
            out += ("." if out else "") + s
        elif isinstance(s, tuple):
            out += f'["{s[0]}"]'
        else:
            out += f"[{s}]"
    return out


@dataclass
class Axis:
    """One swept field: its key as written, the path it sets (None: the optimizer selection), its values."""

    key: str
    path: tuple[Segment, ...] | None
    values: list[Any]


@dataclass
class SweepRun:
    """One expanded run: its id, the overrides that took effect, the optimizers each one touched, its config."""

    id: str
    overrides: dict[str, Any]
    touched: dict[str, list[str] | None]  # key -> labels of the optimizers it set (None: a global field)
    config: dict[str, Any]  # the raw training config (validated)


@dataclass
class SweepConfig:
    name: str
    base: dict[str, Any]  # the base training config, the fixed overrides (``set``) applied
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    runs_given: list[dict[str, Any]]
    axes: list[Axis]
    runs: list[SweepRun] = field(default_factory=list)

    def resolved(self) -> dict[str, Any]:
        """What the sweep directory's config.json holds: a changed sweep is refused (the run-directory rules)."""
        return {
            "schema": SCHEMA, "name": self.name, "base": self.base, "set": self.fixed, "grid": self.grid,
            "runs": self.runs_given,
            "run_ids": [r.id for r in self.runs],
        }  # fmt: skip


# ---------------------------------------------------------------------------------------------------- paths


def _label(opt: Any, i: int) -> str:
    if not isinstance(opt, dict):
        return f"optimizer{i}"
    label = opt.get("label", opt.get("kind", f"optimizer{i}"))
    return label if isinstance(label, str) else f"optimizer{i}"


def _applies(opt: dict[str, Any], rest: tuple[Segment, ...]) -> bool:
    """Whether an ``optimizers[*]`` path's remainder is a field that this optimizer takes."""
    from localentropy.experiments.train_optim import ENTROPY_KINDS, OPTIONS
    from localentropy.samplers import available_samplers, sampler_hyperparameters

    kind = opt.get("kind")
    head = rest[0] if rest else None
    if head == "options" and len(rest) >= 2:
        return kind in OPTIONS and rest[1] in OPTIONS[kind]
    if head in ("sampler_options", "sampler", "preset"):
        if kind not in ENTROPY_KINDS:
            return False
        if head != "sampler_options" or len(rest) < 2:
            return True
        if "preset" in opt:
            return rest[1] in {"step_size", "noise_scale"} | ({"momentum"} if opt["preset"] == "authors" else set())
        sampler = opt.get("sampler")
        return sampler in available_samplers() and rest[1] in sampler_hyperparameters(sampler)
    return True


def _optimizer_indices(optimizers: list[Any], segment: Segment, rest: tuple[Segment, ...]) -> list[int]:
    if isinstance(segment, _Star):
        return [i for i, o in enumerate(optimizers) if isinstance(o, dict) and _applies(o, rest)]
    if isinstance(segment, tuple):
        return [i for i, o in enumerate(optimizers) if _label(o, i) == segment[0]]
    assert isinstance(segment, int)
    return [segment % len(optimizers)] if -len(optimizers) <= segment < len(optimizers) else []


def check_path(base: dict[str, Any], path: tuple[Segment, ...]) -> str | None:
    """Why ``path`` cannot be set in the base config (None: it can)."""
    if path[0] not in TRAIN_FIELDS:
        return f"unknown field {path[0]!r}; sweepable: {', '.join(TRAIN_FIELDS)}, {OPTIMIZER_AXIS!r} and the " \
               f"shorthands {', '.join(SHORTHANDS)}"  # fmt: skip
    if path[0] == "optimizers":
        optimizers = base.get("optimizers")
        if len(path) < 3 or isinstance(path[1], str):
            return "give an optimizer and a field: optimizers[<index>|*|\"<label>\"].<field> (or the 'optimizer' axis)"
        if not isinstance(optimizers, list) or not optimizers:
            return "the base config has no [[optimizers]]"
        rest = path[2:]
        if not _optimizer_indices(optimizers, path[1], rest):
            labels = ", ".join(repr(_label(o, i)) for i, o in enumerate(optimizers))
            if isinstance(path[1], int):
                return f"no optimizer {path[1]}: the base config has {len(optimizers)} ({labels})"
            if isinstance(path[1], tuple):
                return f"no optimizer labelled {path[1][0]!r}; labels: {labels}"
            return f"no optimizer of the base config takes {format_path(rest)} ({labels})"
        for i in _optimizer_indices(optimizers, path[1], rest):
            reason = _check_walk(optimizers[i], rest, path)
            if reason is not None:
                return reason
        return None
    return _check_walk(base, path, path)


def _check_walk(node: Any, rest: tuple[Segment, ...], path: tuple[Segment, ...]) -> str | None:
    """A path may create missing tables, but not go through a value that is not a table (or a list, by index)."""
    offset = len(path) - len(rest)
    for i, segment in enumerate(rest):
        here = format_path(path[: offset + i + 1])
        if isinstance(segment, (tuple, _Star)):
            return "a label or * is only for optimizers[...]"
        if isinstance(segment, int):
            if not isinstance(node, list) or not -len(node) <= segment < len(node):
                return f"{here}: no such list element in the base config"
            node = node[segment]
            continue
        if not isinstance(node, dict):
            return f"{format_path(path[: offset + i])} is {_shown(node)}, not a table: nothing below it can be set"
        if segment not in node:  # missing tables are created; a list index into a missing list cannot be
            if all(isinstance(s, str) for s in rest[i + 1 :]):
                return None
            return f"{here}: not in the base config, so it has no list elements"
        node = node[segment]
    return None


def _set(node: Any, path: tuple[Segment, ...], value: Any) -> None:
    for segment in path[:-1]:
        node = node[segment] if isinstance(segment, int) else node.setdefault(segment, {})
    node[path[-1]] = copy.deepcopy(value)


def apply_override(config: dict[str, Any], path: tuple[Segment, ...], value: Any) -> list[str] | None:
    """Set ``path`` in ``config`` (in place); the labels of the optimizers it set, or None for a global field."""
    if path[0] != "optimizers":
        _set(config, path, value)
        return None
    optimizers = config["optimizers"]
    rest = path[2:]
    touched = []
    for i in _optimizer_indices(optimizers, path[1], rest):
        _set(optimizers[i], rest, value)
        touched.append(_label(optimizers[i], i))
    return touched


# --------------------------------------------------------------------------------------------------- config


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML's dotted keys nest (``model.options.dropout = [..]`` is a table): flatten them back into paths."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, full))
        else:
            out[full] = value
    return out


def _value_id(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value_id(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_value_id(v)}" for k, v in value.items()) + "}"
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def run_id(overrides: dict[str, Any], short: dict[str, str]) -> str:
    """A directory name from the overrides (stable when the grid grows): ``entropy-sgd_gamma-0.1_seed-0``.

    The selected optimizer appears as its label alone, every other field as ``<last path segment>-<value>``.

    Run names are at most 64 letters, digits, '_', '.' and '-' (the training config's rule); a longer one is cut
    and ends in a hash of the overrides.
    """
    if not overrides:
        return "base"
    text = "_".join(_safe(_value_id(v)) if k == OPTIMIZER_AXIS else f"{_safe(short[k])}-{_safe(_value_id(v))}"
                    for k, v in overrides.items())  # fmt: skip
    digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return text if len(text) <= MAX_NAME else f"{text[: MAX_NAME - 9]}-{digest}"


def _short_names(keys: list[str]) -> dict[str, str]:
    """The last segment of each key's path; the whole key where two keys share it."""

    def last(key: str) -> str:
        try:
            return str(parse_path(key)[-1])
        except ValueError:
            return key

    names = {k: last(k) for k in keys}
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {k: (n if counts[n] == 1 else k) for k, n in names.items()}


def _resolve_key(r: _Reader, key: str, where: str, base: dict[str, Any]) -> tuple[Segment, ...] | bool | None:
    """The path a key sets; None for the optimizer axis; False (and a problem) when it cannot be swept."""
    if key == OPTIMIZER_AXIS:
        return None
    if key == "name":
        r.problems.append(f"{where}: 'name' cannot be swept (each run is named by its overrides)")
        return False
    if key in SHORTHANDS:
        path: tuple[Segment, ...] = ("optimizers", STAR, *SHORTHANDS[key])
    else:
        try:
            path = parse_path(key)
        except ValueError as exc:
            r.problems.append(f"{where}: not a dotted path ({exc})")
            return False
    reason = check_path(base, path)
    if reason is not None:
        r.problems.append(f"{where}: {reason}")
        return False
    return path


def _check_optimizer_values(r: _Reader, values: list[Any], where: str, base: dict[str, Any]) -> None:
    optimizers = base.get("optimizers") if isinstance(base.get("optimizers"), list) else []
    labels = [_label(o, i) for i, o in enumerate(optimizers)]
    for i, value in enumerate(values):
        if value not in labels:
            r.problem(f"{where}[{i}]" if where.startswith("grid") else where, value,
                      f"an optimizer label of the base config: {', '.join(map(repr, labels))}")  # fmt: skip


def _load_base(r: _Reader, raw: Any, source: str | None) -> dict[str, Any]:
    if isinstance(raw, dict):
        return copy.deepcopy(raw)
    if not isinstance(raw, str) or not raw.strip():
        r.problem("base", raw, "a path to a training config (relative to this file) or an inline [base] table")
        return {}
    path = Path(raw).expanduser()
    if not path.is_absolute() and source is not None:
        path = Path(source).parent / path
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        r.problems.append(f"base: training config not found: {path}")
    except IsADirectoryError:
        r.problems.append(f"base: {path} is a directory, not a TOML file")
    except UnicodeDecodeError as exc:
        r.problems.append(f"base: {path} is not UTF-8 text: {exc.reason}")
    except (ValueError, RecursionError) as exc:
        r.problems.append(f"base: {path} is not valid TOML: {exc}")
    return {}


def parse_sweep_config(data: Any, *, name: str = "sweep", source: str | None = None) -> SweepConfig:
    """Validate a sweep config (as read from TOML) and expand its runs; raise ConfigError listing every problem."""
    from localentropy.experiments.train_config import parse_train_config

    r = _Reader()
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a table of fields, got {type(data).__name__}"], source)
    r.unknown(data, {"name", "base", "set", "grid", "runs"}, "")
    sweep_name = r.string(data.get("name", name), "name") or name
    if not NAME.fullmatch(sweep_name) or len(sweep_name) > MAX_NAME:
        r.problem("name", sweep_name, f"at most {MAX_NAME} letters, digits, '_', '.' and '-', not starting with '.' or "
                  "'-' (it names the sweep directory)")  # fmt: skip
    before = len(r.problems)
    base = _load_base(r, r.get(data, "base", "base"), source)
    base.pop("name", None)
    if len(r.problems) > before:  # nothing below can be checked without the base
        raise ConfigError(r.problems, source)
    fixed = _flatten(r.table(data.get("set", {}), "set"))
    for key, value in fixed.items():  # fixed overrides of every run, applied to the base
        path = _resolve_key(r, key, f"set.{key}" if _KEY.fullmatch(key) else f'set."{key}"', base)
        if path is None:
            r.problems.append("set.optimizer: select optimizers with the 'optimizer' axis of [grid] or [[runs]]")
        elif path is not False:
            apply_override(base, path, value)  # type: ignore[arg-type]

    grid_raw = _flatten(r.table(data.get("grid", {}), "grid"))
    runs_raw = data.get("runs", [])
    if not isinstance(runs_raw, list):
        r.problem("runs", runs_raw, "an array of [[runs]] tables of overrides")
        runs_raw = []
    if not grid_raw and not runs_raw:
        r.problems.append("grid / runs: give a [grid] of values to sweep and / or a list of [[runs]]")
    paths: dict[str, tuple[Segment, ...] | None] = {}
    axes: list[Axis] = []
    for key, values in grid_raw.items():
        where = f"grid.{key}" if _KEY.fullmatch(key) else f'grid."{key}"'
        if not isinstance(values, list) or not values:
            r.problem(where, values, "a non-empty list of values to try")
            continue
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            r.problem(where, values, "distinct values")
        path = _resolve_key(r, key, where, base)
        if path is False:
            continue
        if path is None:
            _check_optimizer_values(r, values, where, base)
        paths[key] = path  # type: ignore[assignment]
        axes.append(Axis(key=key, path=path, values=list(values)))  # type: ignore[arg-type]
    runs_given: list[dict[str, Any]] = []
    for i, entry in enumerate(runs_raw):
        table = _flatten(r.table(entry, f"runs[{i}]"))
        runs_given.append(table)
        for key, value in table.items():
            where = f"runs[{i}].{key}"
            if key in grid_raw:
                r.problems.append(f"{where}: also swept in [grid]; set it in one place")
                continue
            if key not in paths:
                path = _resolve_key(r, key, where, base)
                if path is False:
                    continue
                paths[key] = path  # type: ignore[assignment]
            if paths[key] is None:
                _check_optimizer_values(r, [value], where, base)
    listed_keys = [k for t in runs_given for k in t if k in paths and k not in grid_raw]
    for key in dict.fromkeys(listed_keys):  # a listed field becomes an axis too (for the report)
        values = list(
            {json.dumps(t[key], sort_keys=True, default=str): t[key] for t in runs_given if key in t}.values()
        )
        axes.append(Axis(key=key, path=paths[key], values=values))
    count = max(len(runs_given), 1) * math.prod(len(a.values) for a in axes if a.key in grid_raw)
    if count > MAX_RUNS:
        r.problems.append(f"grid / runs: {count} runs; at most {MAX_RUNS}")
    if r.problems:
        raise ConfigError(r.problems, source)

    grid = {a.key: a.values for a in axes if a.key in grid_raw}
    config = SweepConfig(name=sweep_name, base=base, fixed=fixed, grid=grid, runs_given=runs_given, axes=axes)
    short = _short_names([a.key for a in axes])
    grid_axes = [a for a in axes if a.key in grid_raw]
    seen: dict[str, str] = {}
    problems: dict[str, list[str]] = {}
    order = [a.key for a in axes]
    for listed in runs_given or [{}]:
        for combo in itertools.product(*(a.values for a in grid_axes)):
            wanted = {**listed, **{a.key: v for a, v in zip(grid_axes, combo, strict=True)}}
            wanted = {k: wanted[k] for k in order if k in wanted}
            run = _expand(base, wanted, paths, short)
            fingerprint = json.dumps(run.overrides, sort_keys=True, default=str)
            if fingerprint in seen:  # an override that sets nothing in this run (e.g. gamma for Adam): the same run
                continue
            if run.id in seen.values():
                run.id = f"{run.id[: MAX_NAME - 9]}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"
            seen[fingerprint] = run.id
            run.config["name"] = run.id
            try:
                parse_train_config(copy.deepcopy(run.config), name=run.id)
            except ConfigError as exc:
                for p in exc.problems:
                    problems.setdefault(p, []).append(run.id)
            config.runs.append(run)
    if problems:
        total = len(config.runs)
        raise ConfigError([f"{p} (run {ids[0]}" + (f" and {len(ids) - 1} more of {total})" if len(ids) > 1 else ")")
                           for p, ids in problems.items()], source)  # fmt: skip
    return config


def _expand(base: dict[str, Any], wanted: dict[str, Any], paths: dict[str, Any], short: dict[str, str]) -> SweepRun:
    config = copy.deepcopy(base)
    overrides: dict[str, Any] = {}
    touched: dict[str, list[str] | None] = {}
    selected = wanted.get(OPTIMIZER_AXIS)
    for key, value in wanted.items():
        if paths[key] is None:
            continue
        labels = apply_override(config, paths[key], value)
        if labels is not None and selected is not None:
            labels = [label for label in labels if label == selected]
        if labels is None or labels:
            overrides[key], touched[key] = value, labels
    if selected is not None:
        config["optimizers"] = [o for i, o in enumerate(config["optimizers"]) if _label(o, i) == selected]
        overrides[OPTIMIZER_AXIS], touched[OPTIMIZER_AXIS] = selected, [selected]
        overrides = {k: overrides[k] for k in wanted if k in overrides}
    return SweepRun(id=run_id(overrides, short), overrides=overrides, touched=touched, config=config)


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep config; its name defaults to the file's stem."""
    path = Path(path)
    data = read_toml(path)
    return parse_sweep_config(data, name=path.stem, source=str(path))


# ------------------------------------------------------------------------------------------------ execution


def _curve(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("epoch", "effective_epochs", "seconds", "grad_evals", "test_error", "val_error",
                                     "train_loss")}  # fmt: skip


def summarise_results(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-optimizer part of a training run's results.json that the sweep report needs."""
    return [{
        "label": rec["label"], "kind": rec["kind"], "status": rec["status"], "message": rec.get("message"),
        "final": rec.get("final"), "curve": [_curve(row) for row in rec.get("rows", [])],
    } for rec in results["records"]]  # fmt: skip


def run_one(run_config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Train one expanded config into ``run_dir``: what the process pool and the Ray task both execute.

    Never raises for a failure of the run itself: returns {"status": "ok" | "diverged" | "failed", "message",
    "state", "wall_seconds", "records", "log", "traceback"}. The torch thread count is the config's ``threads``
    (1 unless configured).
    """
    import torch

    from localentropy.experiments.train import run_training
    from localentropy.experiments.train_config import parse_train_config

    start = time.perf_counter()
    log = io.StringIO()
    outcome: dict[str, Any] = {"status": "failed", "message": None, "state": None, "records": [], "traceback": None}
    try:
        config = parse_train_config(copy.deepcopy(run_config), name=str(run_config.get("name", "run")))
        torch.set_num_threads(config.threads)
        path, state = run_training(config, run_dir, progress=log)
        records = summarise_results(json.loads((path / "results.json").read_text()))
        bad = [r for r in records if r["status"] != "ok"]
        outcome.update(status="diverged" if bad else "ok", state=state, records=records,
                       message="; ".join(str(r["message"]) for r in bad) or None)  # fmt: skip
    except Exception as exc:  # the run failed: record it, let the others go on
        outcome.update(message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    outcome["wall_seconds"] = time.perf_counter() - start
    outcome["log"] = log.getvalue()
    return outcome


def _failed(message: str) -> dict[str, Any]:
    return {"status": "failed", "message": message, "state": None, "records": [], "traceback": None,
            "wall_seconds": None, "log": ""}  # fmt: skip


Job = tuple[str, dict[str, Any], str]  # run id, training config, run directory
Done = Callable[[str, dict[str, Any]], None]


def _execute_inline(jobs: list[Job], done: Done) -> None:
    for run, config, directory in jobs:
        done(run, run_one(config, directory))


def _execute_local(jobs: list[Job], workers: int, done: Done) -> None:
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=context)
    futures = {pool.submit(run_one, config, directory): run for run, config, directory in jobs}
    try:
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker process died (BrokenProcessPool) or could not unpickle
                    outcome = _failed(f"{type(exc).__name__}: {exc}")
                done(futures[future], outcome)
    except BaseException:  # ^C or SIGTERM: stop the workers now (their runs resume from their checkpoints)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _execute_ray(jobs: list[Job], workers: int | None, address: str | None, done: Done) -> None:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            f"--executor ray needs Ray: pip install 'localentropy[{RAY_EXTRA}]' (or pip install 'ray>=2.40')"
        ) from exc
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers or None, **options)
        started = True
    pending: dict[Any, str] = {}
    try:
        task = ray.remote(run_one)
        cap = workers if workers else len(jobs)
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < cap:
                run, config, directory = queue.pop(0)
                threads = int(config.get("threads", 1))
                pending[task.options(num_cpus=threads, max_retries=0).remote(config, directory)] = run
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                run = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as exc:  # the worker died or the task could not run (ray.exceptions.RayError)
                    outcome = _failed(f"{type(exc).__name__}: {exc}")
                done(run, outcome)
    except BaseException:  # ^C or SIGTERM: cancel the tasks in flight (their runs resume from their checkpoints)
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started:
            ray.shutdown()


def _outcome_from_run_dir(run_dir: Path) -> dict[str, Any] | None:
    try:
        records = summarise_results(json.loads((run_dir / "results.json").read_text()))
    except (OSError, json.JSONDecodeError, KeyError):
        return None
    bad = [r for r in records if r["status"] != "ok"]
    return {"status": "diverged" if bad else "ok", "message": "; ".join(str(r["message"]) for r in bad) or None,
            "state": "skip", "records": records, "traceback": None, "wall_seconds": None, "log": ""}  # fmt: skip


def default_out(config: SweepConfig) -> Path:
    return Path("runs") / config.name


def _one_line(run: str, outcome: dict[str, Any]) -> str:
    finals = [f"{r['label']} {100 * r['final']['test_error']:.2f} %" for r in outcome["records"]
              if r.get("final") and r["final"].get("test_error") is not None]  # fmt: skip
    wall = outcome.get("wall_seconds")
    text = f"{run}: {outcome['status']}"
    if finals:
        text += " (test error " + ", ".join(finals) + ")"
    if outcome["status"] != "ok" and outcome.get("message"):
        text += f": {outcome['message'].splitlines()[0][:200]}"
    return text + (f" [{wall:.0f} s]" if wall is not None else "")


def run_sweep(
    config: SweepConfig | str | Path, out: str | Path | None = None, *, executor: str = "local",
    workers: int | None = None, address: str | None = None, force: bool = False, progress: TextIO | None = None,
) -> tuple[Path, str, dict[str, Any]]:  # fmt: skip
    """Run a sweep into a directory; returns (directory, "fresh" | "resume" | "retry" | "skip", results).

    ``executor``: "local" (a spawn ``ProcessPoolExecutor`` of ``workers`` processes, default 1), "ray" (tasks on
    ``ray.init(address=address)``, or on a local instance of ``workers`` CPUs), or "inline" (this process, one
    run after another: for debugging). Runs whose directory is complete are not redone; runs that failed before
    are retried (also when the sweep itself is complete).
    """
    from localentropy.experiments.sweep_report import write_sweep_report

    if executor not in (*EXECUTORS, "inline"):
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    config = config if isinstance(config, SweepConfig) else load_sweep_config(config)
    progress = progress if progress is not None else sys.stderr
    out_dir = RunDirectory(out if out is not None else default_out(config))
    resolved = config.resolved()
    state = out_dir.prepare(resolved, force=force)
    runs_dir = out_dir.path / "runs"
    todo = [run for run in config.runs if not (runs_dir / run.id / MARKER).is_file()]
    if state == "skip":
        if not todo:
            return out_dir.path, "skip", json.loads((out_dir.path / "results.json").read_text())
        (out_dir.path / MARKER).unlink(missing_ok=True)  # a complete sweep with failed runs: retry them
        state = "retry"
    total = len(config.runs)
    where = f"Ray at {address}" if executor == "ray" and address else executor
    print(f"sweep {config.name}: {total} runs, {total - len(todo)} already complete, {len(todo)} to run "
          f"({where}, {workers or ('all' if executor == 'ray' else 1)} worker(s)) -> {out_dir.path}",
          file=progress, flush=True)  # fmt: skip
    outcomes: dict[str, dict[str, Any]] = {}
    counter = itertools.count(total - len(todo) + 1)

    def done(run: str, outcome: dict[str, Any]) -> None:
        log = outcome.pop("log", "") or ""
        if outcome.get("traceback"):
            log += "\n" + outcome["traceback"]
        if log:
            atomic_write_bytes(out_dir.path / "logs" / f"{run}.log", log.encode())
        out_dir.save_record(run, outcome)
        outcomes[run] = outcome
        print(f"[{next(counter)}/{total}] {_one_line(run, outcome)}", file=progress, flush=True)

    jobs = [(run.id, run.config, str(runs_dir / run.id)) for run in todo]
    if jobs:
        if executor == "inline":
            _execute_inline(jobs, done)
        elif executor == "local":
            _execute_local(jobs, workers or 1, done)
        else:
            _execute_ray(jobs, workers, address, done)
    results = collect_results(config, out_dir, outcomes)
    atomic_write_json(out_dir.path / "results.json", results)
    write_sweep_report(out_dir.path, results)
    out_dir.mark_complete()
    return out_dir.path, state, results


def collect_results(config: SweepConfig, out_dir: RunDirectory, outcomes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sweep's results.json: the axes and, per run, its overrides, status and per-optimizer summaries."""
    runs = []
    for run in config.runs:
        outcome = outcomes.get(run.id) or out_dir.load_record(run.id)
        run_dir = out_dir.path / "runs" / run.id
        if (run_dir / MARKER).is_file() and (outcome is None or outcome.get("status") == "failed"):
            outcome = _outcome_from_run_dir(run_dir)
        if outcome is None:
            outcome = _failed("no outcome recorded (the run never finished)")
        if run.id not in outcomes and outcome.get("status") != "failed":
            outcome = {**outcome, "state": "skip"}
        runs.append({
            "id": run.id, "dir": f"runs/{run.id}", "overrides": run.overrides, "touched": run.touched,
            **{k: outcome.get(k) for k in ("status", "message", "state", "wall_seconds", "records")},
        })  # fmt: skip
    statuses = [r["status"] for r in runs]
    return {
        "schema": SCHEMA, "name": config.name, "config": config.resolved(),
        "axes": [{"key": a.key, "path": None if a.path is None else format_path(a.path), "values": a.values}
                 for a in config.axes],
        "counts": {s: statuses.count(s) for s in ("ok", "diverged", "failed")},
        "meta": environment("cpu"), "runs": runs,
    }  # fmt: skip
