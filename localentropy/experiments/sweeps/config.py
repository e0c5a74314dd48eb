"""Sweep configs of ``localentropy sweep``: dotted paths into a training config, the grid and the run list.

A sweep config names a base training config (a ``train_*.toml`` file or an inline ``[base]`` table) and the
values to try for any of its fields by dotted path: a ``[grid]`` (Cartesian product) and / or a list of
``[[runs]]`` (each a table of overrides; the grid is crossed with every listed run). :func:`parse_sweep_config`
expands them into runs with stable ids and validates every expanded run config with the training config parser
before anything runs; a bad sweep raises :class:`ConfigError` listing every problem. Fields: docs/sweeps.md.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, WithJsonSchema

from localentropy.experiments.core.config import (
    Check,
    ConfigError,
    Table,
    got,
    integer,
    read_toml,
    run_name,
    table,
    validate_named,
)
from localentropy.experiments.core.files import json_digest, slug
from localentropy.experiments.core.shipped import find_base
from localentropy.experiments.sweeps.paths import (
    KEY_PATTERN,
    OPTIMIZER_AXIS,
    SHORTHANDS,
    STAR,
    Segment,
    apply_override,
    check_path,
    optimizer_label,
    parse_path,
)
from localentropy.experiments.sweeps.tuning import check_sweep_tuning, parse_sweep_tuning
from localentropy.experiments.tuning.space import Space, SweepTuning, TuningConfig

SCHEMA = 1
EXECUTORS = ("local", "ray")
RAY_EXTRA = "ray"
MAX_RUNS = 10_000
MAX_NAME = 64  # run names become directory names (the training config's rule)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


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
    tuning: TuningConfig | None = None
    spaces: dict[str, Space] = field(default_factory=dict)  # per tuned optimizer, the space it searches
    nproc: int = 1  # > 1: each run is `localentropy train --nproc N` (data-parallel, or Parle's replicas)

    def resolved(self) -> dict[str, Any]:
        """What the sweep directory's config.json holds: a changed sweep is refused (the run-directory rules)."""
        return (
            {
                "schema": SCHEMA,
                "name": self.name,
                "base": self.base,
                "set": self.fixed,
                "grid": self.grid,
                "runs": self.runs_given,
                "run_ids": [r.id for r in self.runs],
            }
            | ({} if self.tuning is None else {"tuning": self.tuning_dict()})
            | ({"nproc": self.nproc} if self.nproc != 1 else {})
        )

    def tuning_dict(self) -> dict[str, Any]:
        """The ``[tuning]`` as run: its fields and the space of every tuned optimizer (defaults filled in)."""
        assert self.tuning is not None
        spaces = {label: {n: d.as_dict() for n, d in space.items()} for label, space in self.spaces.items()}
        return {**self.tuning.as_dict(), "spaces": spaces}


# --------------------------------------------------------------------------------------------------- config


def _base(value: Any) -> str | dict[str, Any]:
    if isinstance(value, dict) or (isinstance(value, str) and value.strip()):
        return value
    raise ValueError


BASE_RULE = (
    "a path to a training config (relative to this file), a shipped training config's name or an inline [base] table"
)


class SweepFile(Table):
    """A sweep config as written: the base training config, the fixed overrides and the values to sweep."""

    name: run_name(NAME, "letters, digits, '_', '.' and '-', not starting with '.' or '-'") = Field(
        "sweep",
        description="The sweep's name; the sweep directory defaults to runs/<name> (default: the config file's stem).",
    )
    base: Annotated[
        str | dict[str, Any],
        BeforeValidator(Check(BASE_RULE, _base)),
        WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, {"type": "object"}]}),
    ] = Field(description="The training config every run starts from: " + BASE_RULE + ".")
    set: table() = Field(default_factory=dict, description="Overrides of every run, by dotted path.")
    grid: table() = Field(
        default_factory=dict,
        description="Dotted path (or `optimizer`, or a shorthand) -> the list of values to "
        "try; the runs are the Cartesian product.",
    )
    runs: list[table()] = Field(
        default_factory=list, description="Listed runs, each a table of overrides (crossed with the grid)."
    )
    tuning: SweepTuning | None = Field(
        None, description="Search each optimizer's step size (and lr) alike before the runs: `[tuning]`."
    )
    nproc: integer(1, 1024) = Field(
        1, description="> 1: each run is `localentropy train --nproc N` (data-parallel, or Parle's replicas)."
    )


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


def run_id(overrides: dict[str, Any], short: dict[str, str]) -> str:
    """A directory name from the overrides (stable when the grid grows): ``entropy-sgd_gamma-0.1_seed-0``.

    The selected optimizer appears as its label alone, every other field as ``<last path segment>-<value>``.

    Run names are at most 64 letters, digits, '_', '.' and '-' (the training config's rule); a longer one is cut
    and ends in a hash of the overrides.
    """
    if not overrides:
        return "base"
    text = "_".join(
        slug(_value_id(v)) if k == OPTIMIZER_AXIS else f"{slug(short[k])}-{slug(_value_id(v))}"
        for k, v in overrides.items()
    )
    return text if len(text) <= MAX_NAME else f"{text[: MAX_NAME - 9]}-{json_digest(overrides, 8)}"


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


def _resolve_key(problems: list[str], key: str, where: str, base: dict[str, Any]) -> tuple[Segment, ...] | bool | None:
    """The path a key sets; None for the optimizer axis; False (and a problem) when it cannot be swept."""
    if key == OPTIMIZER_AXIS:
        return None
    if key == "name":
        problems.append(f"{where}: 'name' cannot be swept (each run is named by its overrides)")
        return False
    if key in SHORTHANDS:
        path: tuple[Segment, ...] = ("optimizers", STAR, *SHORTHANDS[key])
    else:
        try:
            path = parse_path(key)
        except ValueError as exc:
            problems.append(f"{where}: not a dotted path ({exc})")
            return False
    reason = check_path(base, path)
    if reason is not None:
        problems.append(f"{where}: {reason}")
        return False
    return path


def _check_optimizer_values(problems: list[str], values: list[Any], where: str, base: dict[str, Any]) -> None:
    optimizers = base.get("optimizers") if isinstance(base.get("optimizers"), list) else []
    labels = [optimizer_label(o, i) for i, o in enumerate(optimizers)]
    for i, value in enumerate(values):
        if value not in labels:
            at = f"{where}[{i}]" if where.startswith("grid") else where
            known = ", ".join(map(repr, labels))
            problems.append(f"{at}: {got(value, f'an optimizer label of the base config: {known}')}")


def _load_base(problems: list[str], raw: str | dict[str, Any], source: str | None) -> dict[str, Any]:
    if isinstance(raw, dict):
        return copy.deepcopy(raw)
    path = find_base(raw, Path(source).parent if source is not None else None)
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        problems.append(f"base: training config not found: {path}, and no shipped config has that name")
    except IsADirectoryError:
        problems.append(f"base: {path} is a directory, not a TOML file")
    except UnicodeDecodeError as exc:
        problems.append(f"base: {path} is not UTF-8 text: {exc.reason}")
    except (ValueError, RecursionError) as exc:
        problems.append(f"base: {path} is not valid TOML: {exc}")
    return {}


def parse_sweep_config(data: Any, *, name: str = "sweep", source: str | None = None) -> SweepConfig:
    """Validate a sweep config (as read from TOML) and expand its runs; raise ConfigError listing every problem."""
    from localentropy.experiments.training.config import parse_train_config
    from localentropy.experiments.training.launch import check_data_parallel

    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a table of fields, got {type(data).__name__}"], source)
    problems: list[str] = []
    try:
        top: SweepFile | None = validate_named(SweepFile, data, name, source)
    except ConfigError as exc:
        problems, top = exc.problems, None
    base_given = top.base if top is not None else data.get("base")
    if not isinstance(base_given, str | dict) or any(p.startswith("base:") for p in problems):
        raise ConfigError(problems, source)  # nothing below can be checked without the base
    base = _load_base(problems, base_given, source)
    if any(p.startswith("base:") for p in problems):
        raise ConfigError(problems, source)
    base.pop("name", None)
    sweep_name = top.name if top is not None else name
    nproc = top.nproc if top is not None else 1
    tables = {key: data.get(key) if isinstance(data.get(key), dict) else {} for key in ("set", "grid")}
    fixed = _flatten(tables["set"])
    for key, value in fixed.items():  # fixed overrides of every run, applied to the base
        path = _resolve_key(problems, key, f"set.{key}" if KEY_PATTERN.fullmatch(key) else f'set."{key}"', base)
        if path is None:
            problems.append("set.optimizer: select optimizers with the 'optimizer' axis of [grid] or [[runs]]")
        elif path is not False:
            apply_override(base, path, value)  # type: ignore[arg-type]

    grid_raw = _flatten(tables["grid"])
    runs_raw = data.get("runs", []) if isinstance(data.get("runs", []), list) else []
    if not grid_raw and not runs_raw:
        problems.append("grid / runs: give a [grid] of values to sweep and / or a list of [[runs]]")
    paths: dict[str, tuple[Segment, ...] | None] = {}
    axes: list[Axis] = []
    for key, values in grid_raw.items():
        where = f"grid.{key}" if KEY_PATTERN.fullmatch(key) else f'grid."{key}"'
        if not isinstance(values, list) or not values:
            problems.append(f"{where}: {got(values, 'a non-empty list of values to try')}")
            continue
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            problems.append(f"{where}: {got(values, 'distinct values')}")
        path = _resolve_key(problems, key, where, base)
        if path is False:
            continue
        if path is None:
            _check_optimizer_values(problems, values, where, base)
        paths[key] = path  # type: ignore[assignment]
        axes.append(Axis(key=key, path=path, values=list(values)))  # type: ignore[arg-type]
    runs_given: list[dict[str, Any]] = []
    for i, entry in enumerate(runs_raw):
        table = _flatten(entry) if isinstance(entry, dict) else {}
        runs_given.append(table)
        for key, value in table.items():
            where = f"runs[{i}].{key}"
            if key in grid_raw:
                problems.append(f"{where}: also swept in [grid]; set it in one place")
                continue
            if key not in paths:
                path = _resolve_key(problems, key, where, base)
                if path is False:
                    continue
                paths[key] = path  # type: ignore[assignment]
            if paths[key] is None:
                _check_optimizer_values(problems, [value], where, base)
    listed_keys = [k for t in runs_given for k in t if k in paths and k not in grid_raw]
    for key in dict.fromkeys(listed_keys):  # a listed field becomes an axis too (for the report)
        values = list(
            {json.dumps(t[key], sort_keys=True, default=str): t[key] for t in runs_given if key in t}.values()
        )
        axes.append(Axis(key=key, path=paths[key], values=values))
    count = max(len(runs_given), 1) * math.prod(len(a.values) for a in axes if a.key in grid_raw)
    if count > MAX_RUNS:
        problems.append(f"grid / runs: {count} runs; at most {MAX_RUNS}")
    if problems:
        raise ConfigError(problems, source)

    grid = {a.key: a.values for a in axes if a.key in grid_raw}
    config = SweepConfig(
        name=sweep_name, base=base, fixed=fixed, grid=grid, runs_given=runs_given, axes=axes, nproc=nproc
    )
    short = _short_names([a.key for a in axes])
    grid_axes = [a for a in axes if a.key in grid_raw]
    seen: dict[str, str] = {}
    run_problems: dict[str, list[str]] = {}
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
                run.id = f"{run.id[: MAX_NAME - 9]}-{json_digest(run.overrides, 8)}"
            seen[fingerprint] = run.id
            run.config["name"] = run.id
            try:
                parsed = parse_train_config(copy.deepcopy(run.config), name=run.id)
                if nproc > 1:  # what `localentropy train --nproc` refuses (token streams, too few GPUs)
                    check_data_parallel(parsed, None, nproc)
            except ConfigError as exc:
                for p in exc.problems:
                    run_problems.setdefault(p, []).append(run.id)
            config.runs.append(run)
    if top is not None and top.tuning is not None:
        selected = next((a.values for a in axes if a.path is None), None)
        config.tuning, config.spaces = parse_sweep_tuning(problems, top.tuning, base, selected)
        check_sweep_tuning(problems, config.tuning, config.spaces, config.runs)
        if problems:
            raise ConfigError(problems, source)
    if run_problems:
        total = len(config.runs)
        raise ConfigError(
            [
                f"{p} (run {ids[0]}" + (f" and {len(ids) - 1} more of {total})" if len(ids) > 1 else ")")
                for p, ids in run_problems.items()
            ],
            source,
        )
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
        config["optimizers"] = [o for i, o in enumerate(config["optimizers"]) if optimizer_label(o, i) == selected]
        overrides[OPTIMIZER_AXIS], touched[OPTIMIZER_AXIS] = selected, [selected]
        overrides = {k: overrides[k] for k in wanted if k in overrides}
    return SweepRun(id=run_id(overrides, short), overrides=overrides, touched=touched, config=config)


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep config; its name defaults to the file's stem."""
    path = Path(path)
    data = read_toml(path)
    return parse_sweep_config(data, name=path.stem, source=str(path))
