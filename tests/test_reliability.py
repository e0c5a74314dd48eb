"""Reliability of the commands: bad input, divergence, reproducibility and safety.

* Bad input: hypothesis drives ``main(argv)`` in-process with malformed configs (wrong types, missing and unknown
  keys, NaN, inf, negative and huge numbers, unicode, empty files, binary garbage) for ``run``, ``train``,
  ``sweep`` and ``report``, and with bad flags: exit status 2, one readable message naming the field, no traceback,
  no output directory. A few real ``python -m localentropy`` processes confirm it from the console.
* Divergence: an estimator whose step size exceeds 2 / lambda_max is recorded as diverged (step, sampler, likely
  cause) while the others go on; every optimizer of ``train`` is stopped within an epoch; no NaN is ever shown.
* Reproducibility: the same config and seed give the same numbers (all but timing) for ``run`` and ``train``.
* Safety: no eval / exec / unsafe unpickling in the package, labels cannot write outside the run directory,
  checkpoints load with ``weights_only=True`` and a malicious checkpoint or CIFAR batch runs nothing.

Interruption (SIGKILL, SIGTERM, SIGINT) and resume: tests/test_kill_resume.py. What each test guarantees:
docs/reliability.md. ``HYPOTHESIS_PROFILE=thorough`` tries ten times as many malformed inputs.
"""

from __future__ import annotations

import ast
import copy
import csv
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localentropy.cli import build_parser, main
from localentropy.experiments.comparison.runner import run_comparison
from localentropy.experiments.training.config import parse_train_config
from localentropy.experiments.training.trainer import load_checkpoint, run_training
from localentropy.samplers import available_samplers

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "localentropy"
SUBCOMMANDS = set(build_parser()._subparsers._group_actions[0].choices)
HAS_SWEEP = "sweep" in SUBCOMMANDS  # `localentropy sweep` (added alongside this file): fuzzed when present
# Malformed inputs per fuzz test: a few hundred in all under the default profile (about 30 s), 10x under "thorough".
FUZZ_EXAMPLES = 8 * settings.default.max_examples
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
TRIED: Counter[str] = Counter()  # malformed inputs tried per command, reported at the end of the module


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module", autouse=True)
def _report_fuzz_counts(request):
    yield
    if TRIED:
        total = sum(TRIED.values())
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(TRIED.items()))
        line = f"test_reliability: {total} malformed inputs tried, every one exit 2 without a traceback ({detail})"
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("\n" + line)
        else:  # pragma: no cover
            print(line)


# ----------------------------------------------------------------------------------------------------------------
# TOML writing (the fuzz writes real files: the CLI reads them as a user's would)
# ----------------------------------------------------------------------------------------------------------------


def _string(text: str) -> str:
    """A TOML basic string (JSON's surrogate pairs are not TOML: escape by code point)."""
    escaped = "".join(
        c if c not in '"\\' and (c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F)) else f"\\u{ord(c):04x}" for c in text
    )
    return f'"{escaped}"'


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(type(v))


def to_toml(data: dict[str, Any]) -> str:
    """A TOML document for ``data``: scalars first, then [tables], then [[arrays of tables]]."""
    lines, tables, arrays = [], [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            arrays.append((key, value))
        else:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, table in tables:
        lines += ["", f"[{_key(key)}]"] + [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{_key(key)}]]"] + [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Valid base configs (each checked to run, below) and what makes a value of each field malformed
# ----------------------------------------------------------------------------------------------------------------

RUN_BASE: dict[str, Any] = {
    "name": "fz", "seed": 1, "replicates": 2, "chains": 2, "gamma": 1.0, "temperature": 0.1, "threads": 1,
    "keep_draws": False, "ksd": False,
    "problem": {"kind": "quadratic", "dim": 2, "condition": 2.0, "n_negative": 0, "seed": 0},
    "points": {"kind": "random", "count": 1, "scale": 1.0},
    "estimators": [
        {"label": "a", "sampler": "sgld", "step_size_fraction": 0.5, "burn_in_fraction": 0.2, "averaging": "uniform",
         "budgets": [8]},
        {"label": "s", "kind": "smoothing", "sigma": "matched", "order": 1, "budgets": [4]},
    ],
}  # fmt: skip
TRAIN_BASE: dict[str, Any] = {
    "name": "fz", "seed": 0, "batch_size": 32, "epochs": 1, "eval_batch_size": 500, "threads": 1,
    "data": {"source": "digits", "validation_fraction": 0.1, "test_fraction": 0.2, "train_limit": 64,
             "test_limit": 64},
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "schedule": {"kind": "constant"},
    "flatness": {"measures": [], "examples": 10, "hutchinson_samples": 2, "power_tol": 0.01,
                 "local_entropy": {"steps": 2, "burn_in": 0}},
    "optimizers": [
        {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
        {"label": "esgd", "kind": "entropy-sgd", "lr": 0.1, "options": {"gamma": 1.0, "inner_steps": 2},
         "sampler": "sgld", "sampler_options": {"step_size": 0.01, "temperature": 1e-4}},
    ],
}  # fmt: skip
SWEEP_BASE: dict[str, Any] = {
    "name": "fz",
    "base": {k: copy.deepcopy(v) for k, v in TRAIN_BASE.items() if k != "name"},
    "grid": {"seed": [1, 2]},
}

NOT_A_NUMBER = st.sampled_from(["1", "", "nan", "é", "1e3", True, False, [], [1.0], {}, {"a": 1}])
NONFINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE = st.sampled_from([2**64, -(2**64), 10**30, -(10**30), 10**400, -(10**400)])  # 10**400 overflows a float
NOT_A_TABLE = st.sampled_from([0, 1.5, "table", True, [], [1, 2], [{"a": 1}, 2]])
NOT_A_BOOL = st.sampled_from([0, 1, "true", "yes", 1.0, [], {}])
NOT_A_LIST = st.sampled_from([0, 1.5, "x", True, {"a": 1}])


def bad_int(low: int, high: int | None = None) -> st.SearchStrategy:
    """Values an integer field in [low, high] refuses: other types (floats too: 10.0 is not 10), out of range."""
    outside = st.integers(max_value=low - 1)
    if high is not None:
        outside |= st.integers(min_value=high + 1)
    floats = st.floats(allow_nan=True, allow_infinity=True)
    return NOT_A_NUMBER | floats | outside | HUGE.filter(lambda v: v < low or (high is not None and v > high))


def bad_number(low: float | None, high: float | None = None, *, low_open: bool = False) -> st.SearchStrategy:
    """Values a finite number field in [low, high] (or (low, high]) refuses."""
    options = [NOT_A_NUMBER, NONFINITE,
               HUGE.filter(lambda v: high is not None or (low is not None and v < low) or abs(v) > 1e308)]  # fmt: skip
    if low is not None:
        options.append(st.floats(max_value=low, exclude_max=not low_open, allow_nan=False, allow_infinity=False))
        options.append(st.integers(max_value=math.floor(low) - (0 if low_open and float(low).is_integer() else 1)))
    if high is not None:
        options.append(st.floats(min_value=high, exclude_min=True, allow_nan=False, allow_infinity=False))
        options.append(st.integers(min_value=math.floor(high) + 1))
    return st.one_of(*options)


def bad_choice(choices: tuple[str, ...] | list[str]) -> st.SearchStrategy:
    return st.text(max_size=12).filter(lambda t: t not in choices) | NOT_A_NUMBER.filter(lambda v: v not in choices)


def bad_label() -> st.SearchStrategy:
    return (
        st.sampled_from(["", " ", "\t"])
        | st.text(min_size=65, max_size=80).filter(lambda t: t.strip())  # longer than 64 characters
        | st.sampled_from([0, 1.5, True, [], {}, ["a"]])
    )


def bad_name() -> st.SearchStrategy:
    """Names refused by run, train and sweep: they name the run directory (letters, digits, '_', '.', '-'; <= 64)."""
    return (
        st.sampled_from(["", "../x", "a/b", "/abs", ".hidden", "..", "-x", "a=b", "with space", "a\x00b", "x" * 65])
        | st.sampled_from(["é", "ü"])
        | st.text(min_size=1, max_size=10).filter(lambda t: not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", t))
        | st.sampled_from([0, True, [], {}])
    )


def unknown_key(known: set[str]) -> st.SearchStrategy:
    return st.text(min_size=1, max_size=12).filter(lambda k: k not in known and k.strip() == k and k)


Path_ = tuple[Any, ...]
# (path, strategy of malformed values, text the message must contain)
Mutation = tuple[str, Path_, Any, tuple[str, ...]]


def _set(data: dict[str, Any], path: Path_, value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _delete(data: dict[str, Any], path: Path_) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


RUN_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("seed",), bad_int(0, 2**63 - 1)),
    (("replicates",), bad_int(2, 100_000)),
    (("chains",), bad_int(1, 100_000)),
    (("gamma",), bad_number(0.0, low_open=True) | st.just([])),
    (("temperature",), bad_number(0.0, low_open=True) | st.lists(bad_number(0.0, low_open=True), min_size=1)),
    (("threads",), bad_int(1, 1024)),
    (("keep_draws",), NOT_A_BOOL),
    (("ksd",), NOT_A_BOOL),
    (("name",), bad_name()),
    (("problem",), NOT_A_TABLE),
    (("problem", "kind"), bad_choice(("quadratic", "double-well", "sharp-wide", "python"))),
    (("problem", "dim"), bad_int(1, 10_000)),
    (("problem", "condition"), bad_number(1.0)),
    (("problem", "n_negative"), bad_int(0, 2)),
    (("problem", "seed"), bad_int(0)),
    (("points",), NOT_A_TABLE),
    (("points", "kind"), bad_choice(("random", "origin", "explicit"))),
    (("points", "count"), bad_int(1, 1000)),
    (("points", "scale"), bad_number(0.0)),
    (("estimators",), NOT_A_LIST | st.just([]) | st.just([5])),
    (("estimators", 0), NOT_A_TABLE),
    (("estimators", 0, "label"), bad_label() | st.just("s"), ("label",)),  # "s": the other estimator's label
    (("estimators", 0, "kind"), bad_choice(("local-entropy", "smoothing"))),
    (("estimators", 0, "sampler"), bad_choice(available_samplers())),
    (("estimators", 0, "step_size_fraction"), bad_number(0.0, 1.0, low_open=True)),
    (("estimators", 0, "burn_in_fraction"), bad_number(0.0, 0.9)),
    (("estimators", 0, "averaging"), bad_choice(("uniform",)).filter(lambda v: not isinstance(v, int | float))
     | bad_number(0.0, 1.0, low_open=True)),
    (("estimators", 0, "budgets"), bad_int(4, 10_000_000) | st.just([]) | st.lists(bad_int(4, 10**7), min_size=1)),
    (("estimators", 0, "hyperparameters"), NOT_A_TABLE | st.just({"zz": 0.1}), ("estimators[0]",)),
    (("estimators", 0), st.builds(lambda v: {"sampler": "sgld", "hyperparameters": {"step_size": v}, "budgets": [8]},
                                  bad_number(0.0, low_open=True)), ("estimators[0]", "step_size")),
    (("estimators", 0), st.builds(lambda v: {"sampler": "sghmc", "step_size_fraction": 0.5, "budgets": [8],
                                             "hyperparameters": {"friction": v}},
                                  st.sampled_from([math.nan, math.inf, -1.0, "x", True, 10**400, [1]])),
     ("estimators[0]", "friction")),
    (("estimators", 1, "sigma"), bad_choice(("matched",)).filter(lambda v: not isinstance(v, int | float))
     | bad_number(0.0, low_open=True)),
    (("estimators", 1, "order"), bad_int(0, 1)),
    (("estimators", 1, "budgets"), bad_int(1, 10_000_000)),
]  # fmt: skip
RUN_REQUIRED: list[Path_] = [("problem",), ("problem", "kind"), ("problem", "dim"), ("estimators",),
                             ("estimators", 0, "budgets"), ("estimators", 0, "sampler"),
                             ("estimators", 0, "step_size_fraction"), ("estimators", 1, "budgets")]  # fmt: skip
RUN_TABLES: list[Path_] = [(), ("problem",), ("points",), ("estimators", 0), ("estimators", 1)]

TRAIN_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("seed",), bad_int(0, 2**62)),
    (("threads",), bad_int(1, 1024)),
    (("batch_size",), bad_int(1)),
    (("eval_batch_size",), bad_int(1)),
    (("epochs",), bad_int(1, 100_000)),
    (("effective_epochs",), bad_number(0.0, 100_000, low_open=True)),  # bad, and with epochs: two budgets
    (("name",), bad_name()),
    (("data",), NOT_A_TABLE),
    (("data", "source"), bad_choice(("digits", "mnist5k", "mnist1d", "mnist", "fashion-mnist", "cifar10"))),
    (("data", "path"), st.text(max_size=5) | NOT_A_NUMBER),  # digits needs no path
    (("data", "validation_fraction"), bad_number(0.0, 0.9)),
    (("data", "test_fraction"), bad_number(0.0, 0.9, low_open=True)),
    (("data", "train_limit"), bad_int(1)),
    (("data", "test_limit"), bad_int(1)),
    (("model",), NOT_A_TABLE),
    (("model", "name"), bad_choice(("mlp", "lenet", "small-mnistfc", "all-cnn-c", "resnet18", "mnist1d-mlp"))),
    (("model", "options"), NOT_A_TABLE),
    (("schedule", "kind"), bad_choice(("constant", "step", "multistep", "cosine"))),
    (("flatness", "measures"), NOT_A_LIST | st.lists(bad_choice(("top_eigenvalue", "trace", "density", "sharpness",
                                                                  "local_entropy")), min_size=1)),
    (("flatness", "examples"), bad_int(1)),
    (("flatness", "hutchinson_samples"), bad_int(2)),
    (("flatness", "power_tol"), bad_number(0.0, low_open=True)),
    (("flatness", "local_entropy", "steps"), bad_int(1)),
    (("optimizers",), NOT_A_LIST | st.just([]) | st.just([5])),
    (("optimizers", 0, "kind"), bad_choice(("sgd", "adam", "entropy-sgd", "entropy-adam", "lpf-sgd", "sam"))),
    (("optimizers", 0, "lr"), bad_number(0.0, low_open=True)),
    (("optimizers", 0, "label"), bad_label() | st.just("esgd"), ("label",)),
    (("optimizers", 0, "options"), NOT_A_TABLE),
    (("optimizers", 0, "options", "momentum"), bad_number(0.0, 1.0).filter(lambda v: v != 1.0)
     | st.just(1.0) | st.just(1), ("optimizers[0]", "momentum")),
    (("optimizers", 0, "options", "nesterov"), NOT_A_BOOL, ("optimizers[0]", "nesterov")),
    (("optimizers", 0, "options", "weight_decay"), bad_number(0.0), ("optimizers[0]", "weight_decay")),
    (("optimizers", 1, "sampler"), bad_choice(available_samplers())),
    (("optimizers", 1, "sampler_options", "step_size"), bad_number(0.0, low_open=True), ("optimizers[1]", "step_size")),
    (("optimizers", 1, "options", "inner_steps"), bad_int(1), ("optimizers[1]", "inner_steps")),
    (("optimizers", 1, "options", "gamma"), bad_number(0.0, low_open=True), ("optimizers[1]", "gamma")),
]  # fmt: skip
TRAIN_REQUIRED: list[Path_] = [("epochs",), ("data",), ("data", "source"), ("model",), ("model", "name"),
                               ("optimizers",), ("optimizers", 0, "kind"), ("optimizers", 0, "lr"),
                               ("optimizers", 1, "sampler"), ("optimizers", 1, "options", "gamma")]  # fmt: skip
TRAIN_TABLES: list[Path_] = [(), ("data",), ("model",), ("schedule",), ("flatness",), ("flatness", "local_entropy"),
                             ("optimizers", 0), ("optimizers", 0, "options"), ("optimizers", 1),
                             ("optimizers", 1, "sampler_options"), ("model", "options")]  # fmt: skip

KNOWN_KEYS = {
    "name", "seed", "replicates", "chains", "gamma", "temperature", "threads", "keep_draws", "ksd", "problem",
    "points", "estimators", "kind", "dim", "condition", "n_negative", "factory", "options", "count", "scale",
    "values", "label", "budgets", "sampler", "hyperparameters", "step_size_fraction", "burn_in_fraction",
    "averaging", "preset", "noise_scale", "sigma", "order", "batch_size", "eval_batch_size", "epochs",
    "effective_epochs", "data", "model", "schedule", "flatness", "optimizers", "source", "path",
    "validation_fraction", "test_fraction", "train_limit", "test_limit", "lr", "sampler_options", "measures",
    "step_size", "milestones", "min_lr", "base", "set", "grid", "runs", "hidden", "dropout", "momentum", "nesterov",
    "inner_steps", "scoping", "weight_decay", "dampening", "friction", "noise", "betas", "eps", "amsgrad", "rho",
    "n_samples", "examples", "power_iterations", "power_tol", "hutchinson_samples", "lanczos_steps", "lanczos_runs",
    "broadening", "sharpness_epsilon", "sharpness_iterations", "local_entropy", "burn_in", "steps",
}  # fmt: skip


@st.composite
def mutations(draw, fields, required, tables, unknown_prefix: Path_ = ()) -> Mutation:
    """One change that makes a valid config malformed, and what the error message must mention."""
    how = draw(st.sampled_from(["value", "value", "value", "missing", "unknown"]))
    if how == "value":
        field = draw(st.sampled_from(fields))
        path = unknown_prefix + field[0]
        return ("set", path, draw(field[1]), field[2] if len(field) > 2 else (_dotted(path),))
    if how == "missing":
        path = unknown_prefix + draw(st.sampled_from(required))
        return ("delete", path, None, tuple(t for t in (_dotted(path[:-1]), str(path[-1])) if t))
    table = unknown_prefix + draw(st.sampled_from(tables))
    key = draw(unknown_key(KNOWN_KEYS))
    return ("set", (*table, key), draw(st.integers() | st.text(max_size=4) | st.booleans()), ("unknown",))


def apply(base: dict[str, Any], changes: list[Mutation]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for op, path, value, _ in changes:
        try:
            if op == "set":
                _set(data, path, value)
            else:
                _delete(data, path)
        except (KeyError, IndexError, TypeError):  # an earlier change replaced a table: this one has no target
            pass
    return data


@st.composite
def malformed_file(draw, base: dict[str, Any], fields, required, tables, prefix: Path_ = ()) -> tuple[bytes, tuple]:
    """(file content, text its error message must contain): a mutated config, or a broken file."""
    kind = draw(st.sampled_from(["mutated"] * 6 + ["nul", "utf8", "truncated", "binary", "text", "empty"]))
    text = to_toml(base)
    if kind == "mutated":
        changes = draw(st.lists(mutations(fields, required, tables, prefix), min_size=1, max_size=3))
        mentions = changes[0][3] if len(changes) == 1 else ()
        return to_toml(apply(base, changes)).encode("utf-8", "surrogatepass"), mentions
    if kind == "nul":  # TOML forbids control characters anywhere
        at = draw(st.integers(0, len(text)))
        return (text[:at] + "\x00" + text[at:]).encode(), ("not valid TOML",)
    if kind == "utf8":
        at = draw(st.integers(0, len(text)))
        return text.encode()[:at] + b"\xff" + text.encode()[at:], ("not UTF-8",)
    if kind == "truncated":  # cut before the last required table: it is missing (or the cut breaks the syntax)
        last = max(text.find(marker) for marker in ("[[optimizers]]", "[[estimators]]", "[grid]"))
        return text[: draw(st.integers(0, max(last, 0)))].encode(), ()
    if kind == "binary":
        return draw(st.binary(max_size=200)), ()
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"), ()
    return b"", ("missing",)


def assert_refused(command: str, rc: int, out: str, err: str, out_dir: Path, mentions: tuple[str, ...] = ()) -> None:
    assert rc == 2, (command, rc, err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err
    assert err.strip(), "no message"
    assert err.startswith(f"localentropy {command}: error: ") or "usage: localentropy" in err, err
    for text in mentions:
        assert text in err, (text, err)
    assert not (out_dir / "COMPLETE").exists()
    assert not out_dir.exists() or not any(out_dir.iterdir()), sorted(out_dir.rglob("*"))  # nothing was written


class Workspace:
    """Fresh file names under one directory for the examples of a hypothesis test."""

    def __init__(self, root: Path) -> None:
        self.root, self.n = root, 0

    def next(self) -> Path:
        self.n += 1
        path = self.root / f"e{self.n}"
        path.mkdir()
        return path


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    return Workspace(tmp_path)


def _fuzz_config(command: str, workspace: Workspace, capsys, content: bytes, mentions: tuple[str, ...]) -> None:
    where = workspace.next()
    config, out = where / "c.toml", where / "out"
    config.write_bytes(content)
    capsys.readouterr()
    rc = main([command, str(config), "--out", str(out)])
    captured = capsys.readouterr()
    TRIED[command] += 1
    assert_refused(command, rc, captured.out, captured.err, out, mentions)


# ----------------------------------------------------------------------------------------------------------------
# The bases are valid (so each mutation is what breaks a config) and the TOML writer round-trips
# ----------------------------------------------------------------------------------------------------------------


def test_fuzz_bases_are_valid_and_round_trip(tmp_path, capsys):
    for base in (RUN_BASE, TRAIN_BASE, SWEEP_BASE):
        assert tomllib.loads(to_toml(base)) == base
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    config = tmp_path / "train.toml"
    config.write_text(to_toml(TRAIN_BASE))
    assert main(["train", str(config), "--out", str(tmp_path / "train")]) == 0
    if HAS_SWEEP:
        from localentropy.experiments.sweeps.runner import parse_sweep_config

        assert len(parse_sweep_config(copy.deepcopy(SWEEP_BASE)).runs) == 2
    capsys.readouterr()


# ----------------------------------------------------------------------------------------------------------------
# Fuzz: malformed configs for every command
# ----------------------------------------------------------------------------------------------------------------


@FUZZ
@given(data=malformed_file(RUN_BASE, RUN_FIELDS, RUN_REQUIRED, RUN_TABLES))
def test_fuzz_run_refuses_malformed_configs(workspace, capsys, data):
    _fuzz_config("run", workspace, capsys, *data)


@FUZZ
@given(data=malformed_file(TRAIN_BASE, TRAIN_FIELDS, TRAIN_REQUIRED, TRAIN_TABLES))
def test_fuzz_train_refuses_malformed_configs(workspace, capsys, data):
    _fuzz_config("train", workspace, capsys, *data)


SWEEP_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("name",), bad_name()),
    (("base",), st.sampled_from([0, 1.5, True, [], "", "no-such-file.toml", "."])),
    (("grid",), NOT_A_TABLE),
    (("grid", "seed"), NOT_A_LIST | st.just([]) | st.just([1, 1]) | st.lists(bad_int(0, 2**62), min_size=1), ("seed",)),
    (("grid", "zz_not_a_field"), st.just([1, 2])),
    (("runs",), NOT_A_LIST | st.just([5])),
]
# a base field mutated inside the sweep: every expanded run is checked by the training config's rules (the grid
# sets the seed and the sweep names the runs, so those two are left alone)
SWEEP_BASE_FIELDS = [f for f in TRAIN_FIELDS if f[0] not in (("seed",), ("name",))]


@pytest.mark.skipif(not HAS_SWEEP, reason="`localentropy sweep` is not in this build")
@FUZZ
@given(
    data=malformed_file(SWEEP_BASE, SWEEP_FIELDS, [("base",), ("grid",)], [()])
    | malformed_file(SWEEP_BASE, SWEEP_BASE_FIELDS, TRAIN_REQUIRED, TRAIN_TABLES[1:], prefix=("base",))
)
def test_fuzz_sweep_refuses_malformed_configs(workspace, capsys, data):
    content, mentions = data
    # the training config's own paths are reported inside the expanded runs' messages, without the "base." prefix
    mentions = tuple(m.removeprefix("base.") for m in mentions if m != "base" or content.count(b"[base]") == 0)
    _fuzz_config("sweep", workspace, capsys, content, mentions)


# ----------------------------------------------------------------------------------------------------------------
# Fuzz: malformed results.json for `report`
# ----------------------------------------------------------------------------------------------------------------


def _record(estimator: str, budget: int, ok: bool = True) -> dict[str, Any]:
    return {
        "key": {"estimator": estimator, "point": 0, "gamma": 1.0, "temperature": 0.1, "budget": budget},
        "status": "ok" if ok else "diverged", "error": None if ok else "diverged in replicate 0",
        "metrics": {"mse": 0.1, "relative_mse": 0.01, "bias": [0.1, 0.2], "bias_norm": 0.1, "bias_norm_mcse": 0.01,
                    "variance": 0.05, "cosine": 0.9, "efficiency_ratio": 1.2, "grad_evals": budget,
                    "replicates": 3} if ok else None,
        "chains": {"n_chains": 2, "min_ess_bulk": 50.0, "max_rhat": 1.01, "ess_bulk_quantiles": {"q05": 1.0},
                   "tail_prob": [0.05, 0.95]} if ok else None,
        "ksd": 0.3 if ok else None,
        "estimator": {"kind": "local-entropy", "sampler": "sgld", "settings": {"n_steps": 8}},
        "timing": {"seconds_per_replicate": 0.01, "seconds_total": 0.03},
    }  # fmt: skip


RESULTS_BASE: dict[str, Any] = {
    "schema": 1, "name": "fz", "config": {"seed": 1}, "meta": {"seed": 1, "versions": {"torch": "x"}},
    "records": [_record("sgld", 8), _record("sgld", 16), _record("sghmc", 8, ok=False)],
}  # fmt: skip
NOT_A_STRING = st.sampled_from([0, 1.5, True, [], {}, ["a"]])
NOT_AN_OBJECT = st.sampled_from([0, 1.5, "x", True, [], [1]])
NOT_A_METRIC = st.sampled_from(["0.1", "", True, False, {"a": "b"}, ["x"], [True]])
RESULTS_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("schema",), st.sampled_from([0, 2, 99, "1", None, [], {}, 1.5])),
    (("records",), NOT_A_LIST | st.just([]) | st.just({"a": 1})),
    (("records", 0), NOT_AN_OBJECT),
    (("records", 0, "key"), NOT_AN_OBJECT | st.just({})),
    (("records", 0, "key", "estimator"), NOT_A_STRING | st.just("")),
    (("records", 0, "key", "point"), st.sampled_from([-1, 1.5, "0", None, True, [], {}])),
    (("records", 1, "key", "gamma"), st.sampled_from([0, -1.0, "1", None, True, [], {}])),
    (("records", 1, "key", "temperature"), st.sampled_from([0.0, -2, "x", None, False, [1.0]])),
    (("records", 2, "key", "budget"), st.sampled_from([0, -5, 1.5, "8", None, True, [8]])),
    (("records", 0, "status"), st.sampled_from([0, None, True, [], {}])),
    (("records", 2, "error"), st.sampled_from([0, 1.5, True, [], {"a": 1}])),
    (("records", 0, "metrics"), NOT_AN_OBJECT),
    (("records", 0, "metrics", "mse"), NOT_A_METRIC),
    (("records", 1, "metrics", "bias"), NOT_A_METRIC.map(lambda v: [0.1, v])),
    (("records", 0, "chains"), NOT_AN_OBJECT),
    (("records", 0, "chains", "max_rhat"), NOT_A_METRIC),
    (("records", 0, "timing"), NOT_AN_OBJECT),
    (("records", 0, "timing", "seconds_per_replicate"), NOT_A_METRIC),
    (("records", 0, "ksd"), st.sampled_from(["0.3", True, [], {}, [0.3]])),
    (("records", 0, "estimator"), NOT_AN_OBJECT),
    (("records", 0, "estimator", "kind"), NOT_A_STRING),
    (("name",), NOT_A_STRING),
    (("meta",), NOT_AN_OBJECT.filter(lambda v: v is not None)),
    (("meta", "versions"), NOT_AN_OBJECT),
]


@st.composite
def malformed_results(draw) -> tuple[bytes | None, str]:
    """(results.json content or None for none at all, how it is malformed)."""
    kind = draw(st.sampled_from(["field"] * 5 + ["missing", "garbage", "not-json", "truncated", "not-object"]))
    text = json.dumps(RESULTS_BASE, indent=1)
    if kind == "field":
        changes = draw(st.lists(st.sampled_from(RESULTS_FIELDS).flatmap(
            lambda f: f[1].map(lambda v, path=f[0]: ("set", path, v, ()))), min_size=1, max_size=3))  # fmt: skip
        return json.dumps(apply(RESULTS_BASE, changes)).encode(), "field"
    if kind == "missing":
        return None, kind
    if kind == "garbage":
        return draw(st.binary(max_size=100)).replace(b"{", b"").replace(b"[", b""), kind
    if kind == "not-json":
        return draw(st.text(max_size=50)).replace("{", "").replace("[", "").encode("utf-8", "surrogatepass"), kind
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))].encode(), kind
    return json.dumps(draw(st.sampled_from([[RESULTS_BASE], 1, "results", None, []]))).encode(), kind


@FUZZ
@given(data=malformed_results(), merge=st.booleans())
def test_fuzz_report_refuses_malformed_results(workspace, capsys, data, merge):
    content, _ = data
    where = workspace.next()
    run = where / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_bytes(content)
    good = where / "good"
    good.mkdir()
    (good / "results.json").write_text(json.dumps(RESULTS_BASE))
    out = where / "out"
    capsys.readouterr()
    rc = main(["report", *([str(good)] if merge else []), str(run), "--out", str(out)])
    captured = capsys.readouterr()
    TRIED["report"] += 1
    assert_refused("report", rc, captured.out, captured.err, out, ("results.json",))


def test_report_of_the_fuzz_base_works(tmp_path, capsys):
    """The control: the unmutated results.json gives a report (so each mutation is what is refused)."""
    (tmp_path / "results.json").write_text(json.dumps(RESULTS_BASE))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "`sgld`" in text and "**diverged**" in text and "nan" not in text.lower()
    capsys.readouterr()


def test_report_reads_nan_from_other_writers_as_undefined(tmp_path, capsys):
    """results.json never holds NaN (JSON has none); a file with NaN shows a dash, never 'nan', as a result."""
    text = json.dumps(RESULTS_BASE).replace('"mse": 0.1', '"mse": NaN').replace('"ksd": 0.3', '"ksd": Infinity')
    (tmp_path / "results.json").write_text(text)
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert not re.search(r"\bnan\b|\binf\b", report, re.IGNORECASE)
    capsys.readouterr()


def test_report_of_a_train_run_says_what_it_is(tmp_path, capsys):
    results = {"schema": 1, "records": [{"label": "sgd", "rows": [], "status": "ok"}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "localentropy train" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# Fuzz: bad flags and paths
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_configs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("valid")
    paths = {"run": base / "run.toml", "train": base / "train.toml", "sweep": base / "sweep.toml"}
    paths["run"].write_text(to_toml(RUN_BASE))
    paths["train"].write_text(to_toml(TRAIN_BASE))
    paths["sweep"].write_text(to_toml(SWEEP_BASE))
    (base / "a_file").write_text("not a directory")
    (base / "garbage.toml").write_bytes(b"\x00\x01\xff garbage")
    (base / "empty.toml").write_bytes(b"")
    (base / "a_dir").mkdir()
    return {**paths, "file": base / "a_file", "garbage": base / "garbage.toml", "empty": base / "empty.toml",
            "dir": base / "a_dir"}  # fmt: skip


def _options(command: str) -> list[str]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices.get(command, parser)
    return [o for action in sub._actions for o in action.option_strings] + ["--debug", "--version", "--help"]


@st.composite
def bad_argv(draw, configs: dict[str, Path], out: Path) -> list[str]:
    commands = sorted(SUBCOMMANDS)
    kind = draw(st.sampled_from(["unknown-command", "unknown-option", "missing-positional", "missing-value",
                                 "bad-number", "bad-out", "bad-config", "extra-positional", "no-command"]))  # fmt: skip
    with_config = [c for c in ("run", "train", "sweep") if c in SUBCOMMANDS]
    if kind == "no-command":
        return []
    if kind == "unknown-command":
        return [draw(st.text(min_size=1, max_size=10).filter(lambda t: t not in commands and not t.startswith("-")))]
    if kind == "unknown-option":
        command = draw(st.sampled_from(commands))
        known = _options(command)
        option = draw(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_é", min_size=1, max_size=8).map(
            lambda t: "--z" + t).filter(lambda o: not any(k.startswith(o.split("=")[0]) for k in known)))  # fmt: skip
        positional = [str(configs.get(command, configs["dir"]))] if command in (*with_config, "report") else []
        return [command, *positional, option]
    if kind == "missing-positional":
        return [draw(st.sampled_from([*with_config, "report"])), *draw(st.sampled_from([[], ["--force"]]))]
    if kind == "missing-value":
        command = draw(st.sampled_from([*with_config, "report"]))
        return [command, str(configs.get(command, configs["dir"])), "--out"]
    if kind == "bad-number":
        command, option = draw(st.sampled_from([("demo", "--chains"), ("demo", "--steps"), ("demo", "--seed"),
                                                ("digits", "--epochs"), ("digits", "--seed")]
                                               + ([("sweep", "--workers")] if HAS_SWEEP else [])))  # fmt: skip
        positive = option != "--seed"
        value = draw(st.sampled_from(["0", "-3", "1.5", "abc", "", "1e3", " ", "1_0x"] if positive else
                                     ["1.5", "abc", "", "1e3", "--", "0x10"]))  # fmt: skip
        prefix = [str(configs["sweep"])] if command == "sweep" else []
        return [command, *prefix, option, value]
    if kind == "bad-out":
        command = draw(st.sampled_from(with_config))
        target = draw(st.sampled_from(["", " ", "file", "under-file"]))
        path = {"file": str(configs["file"]), "under-file": str(configs["file"] / "sub")}.get(target, target)
        return [command, str(configs[command]), "--out", path]
    if kind == "bad-config":
        command = draw(st.sampled_from(with_config))
        which = draw(st.sampled_from(["garbage", "empty", "dir", "missing"]))
        path = str(configs[which]) if which != "missing" else str(configs["dir"] / "no-such.toml")
        return [command, path, "--out", str(out)]
    command = draw(st.sampled_from(with_config))
    return [command, str(configs[command]), str(configs[command]), "--out", str(out)]


@FUZZ
@given(data=st.data())
def test_fuzz_bad_flags_and_paths(valid_configs, workspace, capsys, data):
    out = workspace.next() / "out"
    argv = data.draw(bad_argv(valid_configs, out))
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    TRIED["flags"] += 1
    assert_refused(argv[0] if argv and argv[0] in SUBCOMMANDS else "?", rc, captured.out, captured.err, out)
    assert not (valid_configs["file"].parent / "COMPLETE").exists()


def test_fuzz_tried_a_few_hundred_inputs():
    """Runs after the fuzz tests of this module (pytest keeps definition order): how many inputs they tried."""
    if not TRIED:
        pytest.skip("the fuzz tests did not run")
    assert sum(TRIED.values()) >= min(300, 3 * FUZZ_EXAMPLES)


def test_debug_shows_the_traceback_and_only_then(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(to_toml({**RUN_BASE, "replicates": -1}))
    assert main(["run", str(config), "--out", str(tmp_path / "a")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "run", str(config), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "replicates: got -1" in err


def test_unreadable_paths_are_bad_input(tmp_path, capsys):
    """A config or --out that cannot be used is exit 2 with a message naming it, not a failure (exit 1)."""
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(RESULTS_BASE))
    for argv, expected in [
        (["run", str(config), "--out", str(blocker / "sub")], "cannot use it as the run directory"),
        (["run", str(config), "--out", str(tmp_path / ("d" * 300))], "cannot use it as the run directory"),
        (["run", str(config), "--out", ""], "expected a directory"),
        (["report", str(tmp_path / "run"), "--out", str(blocker / "sub")], "cannot create the report directory"),
        (["run", str(tmp_path / "x\x00y.toml")], "cannot read the config file"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)


def test_out_into_a_non_empty_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "report.md").write_text("my notes")
    for extra in ([], ["--force"]):
        assert main(["run", str(config), "--out", str(precious), *extra]) == 2
        assert "not a run directory" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["report.md"]
    assert (precious / "report.md").read_text() == "my notes"


def test_long_labels_are_refused_before_any_work(tmp_path, capsys):
    """A label longer than a file name allows was an OSError mid-run (exit 1): now a config error up front."""
    data = copy.deepcopy(RUN_BASE)
    data["estimators"][0]["label"] = "x" * 300
    config = tmp_path / "run.toml"
    config.write_text(to_toml(data))
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "estimators[0].label" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Bad input from the console: real processes
# ----------------------------------------------------------------------------------------------------------------


def test_console_bad_input_exits_2_without_traceback(tmp_path):
    """Real ``python -m localentropy`` processes (started together: a few seconds in all)."""
    bad_run = tmp_path / "bad_run.toml"
    bad_run.write_text(to_toml({**RUN_BASE, "chains": "four", "gamma": math.nan}))
    bad_train = tmp_path / "bad_train.toml"
    bad_train.write_bytes(b"\x89PNG\r\n\x1a\n\x00binary")
    cases = {
        "run": (["run", str(bad_run), "--out", str(tmp_path / "o1")], "chains: got 'four'"),
        "train": (["train", str(bad_train), "--out", str(tmp_path / "o2")], "not UTF-8"),
    }
    if not HAS_SWEEP:  # three processes (each imports torch): bad flags are fuzzed in-process above
        cases["report"] = (["report", str(tmp_path / "missing"), "--frobnicate"], "unrecognized arguments")
    else:
        bad_sweep = tmp_path / "bad_sweep.toml"
        bad_sweep.write_text(to_toml({**SWEEP_BASE, "grid": {"seed": []}}))
        cases["sweep"] = (["sweep", str(bad_sweep), "--out", str(tmp_path / "o3")], "grid.seed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {}
    for name, (argv, _) in cases.items():
        procs[name] = subprocess.Popen([sys.executable, "-m", "localentropy", *argv], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)  # fmt: skip
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err)
        assert "Traceback" not in err and "Traceback" not in out, (name, err)
        assert cases[name][1] in err, (name, err)
        assert len(err.strip().splitlines()) <= 5, (name, err)  # one message (a problem list is a few lines)
    assert not any(tmp_path.glob("o*/COMPLETE")) and not any(tmp_path.glob("o*"))


# ----------------------------------------------------------------------------------------------------------------
# Constructors and data readers name the field, the value and what is expected
# ----------------------------------------------------------------------------------------------------------------

BAD_REALS = [math.nan, math.inf, -1.0, "x", None, [1]]


def _sampler_cases() -> list[tuple[str, str, Any]]:
    from localentropy.samplers import sampler_hyperparameters

    cases = []
    for name in available_samplers():
        for parameter, default in sampler_hyperparameters(name).items():
            if parameter in ("potential", "grad_fn", "sampler"):
                continue
            if isinstance(default, bool):
                values = ["x", 2, None]
            elif isinstance(default, str):
                values = ["x", 1, None]
            else:
                values = BAD_REALS
            cases += [(name, parameter, v) for v in values]
    return cases


def _sampler_kwargs(name: str) -> dict[str, Any]:
    if name == "cyclical":
        return {"sampler": {"name": "sgld", "step_size": 0.1}, "n_cycles": 2, "total_steps": 10}
    if name == "mala":
        return {"step_size": 0.1, "potential": lambda y: (y**2).sum(-1)}
    return {"step_size": 0.1}


def _names(message: str, field: str, value: Any) -> bool:
    shown = {repr(value), str(value)} | ({repr(float(value))} if isinstance(value, int | float) else set())
    return field in message and (any(s in message for s in shown) or type(value).__name__ in message)


@pytest.mark.parametrize(("name", "parameter", "value"), _sampler_cases())
def test_sampler_constructors_name_field_and_value(name, parameter, value):
    from localentropy.samplers import make_sampler

    with pytest.raises((ValueError, TypeError)) as info:
        make_sampler(name, **{**_sampler_kwargs(name), parameter: value})
    assert _names(str(info.value), parameter, value), str(info.value)


@pytest.mark.parametrize("name", ["sgld", "sghmc"])
def test_sampler_constructors_refuse_huge_integers(name):
    from localentropy.samplers import make_sampler

    with pytest.raises(ValueError, match="step_size"):
        make_sampler(name, step_size=10**400)


def _estimator_cases() -> list[tuple[str, Callable[[Any], Any], str, Any]]:
    from localentropy.entropy import GaussianSmoothingEstimator, LocalEntropyEstimator
    from localentropy.samplers import SGLD

    def le(field: str) -> Callable[[Any], Any]:
        base = {"grad_fn": lambda y: y, "gamma": 1.0, "sampler": SGLD(step_size=0.1), "n_steps": 10}
        return lambda v: LocalEntropyEstimator(**{**base, field: v})

    def gs(field: str) -> Callable[[Any], Any]:
        return lambda v: GaussianSmoothingEstimator(**{"sigma": 1.0, "n_samples": 4, "grad_fn": lambda y: y, field: v})

    cases = []
    for field in ("gamma", "n_steps", "burn_in", "averaging"):
        cases += [("LocalEntropyEstimator", le(field), field, v) for v in BAD_REALS]
    for field in ("sigma", "n_samples", "order"):
        cases += [("GaussianSmoothingEstimator", gs(field), field, v) for v in BAD_REALS]
    return cases


@pytest.mark.parametrize(("owner", "build", "field", "value"), _estimator_cases(),
                         ids=lambda v: v if isinstance(v, str) else repr(v)[:10])  # fmt: skip
def test_estimator_constructors_name_field_and_value(owner, build, field, value):
    with pytest.raises((ValueError, TypeError)) as info:
        build(value)
    assert _names(str(info.value), field, value), (owner, str(info.value))


OPTIMIZER_OPTIONS = {
    "sgd": {"momentum": [math.nan, -0.1, 1.0, 2, "x"], "weight_decay": [-1.0, math.inf], "nesterov": ["yes", 1]},
    "adam": {"betas": [0.9, [0.9], [1.0, 0.9], ["x", 0.9]], "eps": [0.0, math.inf, None], "amsgrad": [0]},
    "sam": {"rho": [0.0, math.nan, "x"], "momentum": [math.nan, 5.0]},
    "lpf-sgd": {"sigma": [-1.0, math.nan], "nesterov": ["x", None], "momentum": [-1.0]},
    "entropy-sgd": {"gamma": [0.0, math.inf], "inner_steps": [0, 1.5], "momentum": [math.nan]},
    "entropy-adam": {"betas": [0.5, [2.0, 0.9]], "eps": [math.inf, -1.0, None]},
}


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [(k, f, v) for k, fields in OPTIMIZER_OPTIONS.items() for f, values in fields.items() for v in values],
)
def test_training_optimizers_name_field_and_value(kind, field, value):
    """Every optimizer `localentropy train` builds checks its options (torch's SGD takes momentum = nan or 2)."""
    from localentropy.experiments.training.optim import OptimizerConfig, check_optimizer

    options = {"gamma": 1.0} if kind.startswith("entropy") else {}
    spec = OptimizerConfig(label="o", kind=kind, lr=0.1, options={**options, field: value},
                           sampler="sgld" if kind.startswith("entropy") else None,
                           sampler_options={"step_size": 0.1} if kind.startswith("entropy") else {})  # fmt: skip
    reason = check_optimizer(spec)
    assert reason is not None, (kind, field, value)
    assert field.split("[")[0] in reason, reason


@pytest.mark.parametrize("lr", [math.nan, math.inf, -0.1, 0.0])
def test_sam_refuses_a_bad_lr(lr):
    from localentropy.experiments.training.optim import SAMStep

    with pytest.raises(ValueError, match="lr"):
        SAMStep([torch.nn.Parameter(torch.zeros(2))], lr=lr)


@settings(max_examples=2 * settings.default.max_examples, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(blob=st.binary(max_size=300), header=st.binary(min_size=0, max_size=16))
def test_data_readers_raise_only_value_error_naming_the_file(tmp_path, blob, header):
    """Random bytes (and random IDX headers over random bodies, which may claim huge shapes) are refused by a
    ValueError naming the file, never another exception, never a huge allocation."""
    from localentropy.data import read_cifar_batch, read_idx

    for name, content in (("a.idx", blob), ("b.idx", b"\x00\x00" + header + blob), ("c", blob)):
        path = tmp_path / name
        path.write_bytes(content)
        for reader in (read_idx, read_cifar_batch):
            try:
                reader(path)
            except ValueError as exc:
                assert str(path) in str(exc)


# ----------------------------------------------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------------------------------------------

DIVERGENT = """\
name = "div"
seed = 3
replicates = 3
chains = 2
gamma = 1.0
temperature = 0.1
keep_draws = true

[problem]
kind = "quadratic"
dim = 3
condition = 4            # eigenvalues in [1, 4]: the SGLD limit 2 / lambda_max(A + gamma I) is 2 / 5 = 0.4

[[estimators]]
label = "stable"
sampler = "sgld"
step_size_fraction = 0.5
budgets = [16, 32]

[[estimators]]
label = "too-big"
sampler = "sgld"
hyperparameters = { step_size = 4.0 }    # 10 times the limit: |1 - 4 x 5| = 19 per step overflows in 250 steps
budgets = [600, 800]

[[estimators]]
label = "smooth"
kind = "smoothing"
budgets = [16]
"""


def _no_nan(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))


def test_a_diverged_estimator_is_recorded_and_the_others_go_on(tmp_path, capsys):
    config = tmp_path / "div.toml"
    config.write_text(DIVERGENT)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    results = _no_nan((out / "results.json").read_text())
    by_key = {(r["key"]["estimator"], r["key"]["budget"]): r for r in results["records"]}
    assert len(by_key) == 5 and len(results["records"]) == 5
    for budget in (600, 800):
        record = by_key[("too-big", budget)]
        assert record["status"] == "diverged"
        assert record["metrics"] is None and record["chains"] is None and record["ksd"] is None
        error = record["error"]
        assert error.startswith("diverged in replicate 0:")  # stopped at the first replicate that diverged
        assert re.search(r"at inner step \d+ of \d+", error)
        assert "SGLD(step_size=4.0" in error
        assert "step size 4 is at or above the SGLD stability limit 2 / lambda_max(A + gamma I) = 0.4" in error
        assert not (out / "records" / f"too-big__p0__g1__T0.1__b{budget}.npy").exists()  # no draws kept
    for key in (("stable", 16), ("stable", 32), ("smooth", 16)):
        record = by_key[key]
        assert record["status"] == "ok" and record["error"] is None
        assert all(math.isfinite(v) for v in record["metrics"].values() if isinstance(v, float))
    assert "too-big x0 gamma=1 T=0.1 budget=800: diverged in replicate 0" in captured.err
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert rows and not any("too-big" in line for line in rows)  # never in a table of results
    assert "- `too-big`, budget 800: **diverged**: diverged in replicate 0" in report
    results_lines = [line for line in report.splitlines() if line.startswith(("|", "**Best"))]
    assert results_lines and not any(re.search(r"\bnan\b|\binf\b", line, re.IGNORECASE) for line in results_lines)
    with __import__("xarray").open_datatree(out / "draws.nc", engine="h5netcdf") as tree:
        assert not any(name.startswith("too-big") for name in tree.children)


@pytest.mark.parametrize("sampler", [s for s in available_samplers() if s != "cyclical"] + ["cyclical", "paper"])
def test_every_sampler_with_a_huge_step_is_recorded_never_crashes(tmp_path, sampler):
    """Each sampler at step size 1000 on the quadratic: either diverged (recorded with its step and sampler) or
    finite (MALA rejects, pSGLD's preconditioner shrinks the step): never an exception, never a NaN."""
    if sampler == "cyclical":
        spec = {"sampler": "cyclical", "hyperparameters": {"sampler": {"name": "sgld", "step_size": 1000.0},
                                                           "n_cycles": 2}}  # fmt: skip
    elif sampler == "paper":
        spec = {"preset": "paper", "noise_scale": 0.1, "hyperparameters": {"step_size": 1000.0}}
    else:
        spec = {"sampler": sampler, "hyperparameters": {"step_size": 1000.0}}
    data = copy.deepcopy(RUN_BASE)
    data["estimators"] = [{"label": "huge", "budgets": [400], **spec}, data["estimators"][1]]
    config = tmp_path / "c.toml"
    config.write_text(to_toml(data))
    path, _ = run_comparison(config, tmp_path / "out", progress=io.StringIO())
    records = {r["key"]["estimator"]: r for r in _no_nan((path / "results.json").read_text())["records"]}
    assert records["s"]["status"] == "ok"
    huge = records["huge"]
    if huge["status"] == "diverged":
        assert "inner step" in huge["error"] and "likely cause" in huge["error"] and "step size" in huge["error"]
    else:
        assert huge["status"] == "ok" and all(math.isfinite(v) for v in huge["metrics"].values()
                                              if isinstance(v, float))  # fmt: skip


DIVERGING_OPTIMIZERS = {
    "adam": {"kind": "adam", "lr": 1e30},
    "lpf-sgd": {"kind": "lpf-sgd", "lr": 1e30, "options": {"sigma": 1e-3, "n_samples": 2}},
    "sam": {"kind": "sam", "lr": 1e30, "options": {"rho": 0.05}},
    "entropy-adam": {"kind": "entropy-adam", "lr": 0.01, "options": {"gamma": 1.0, "inner_steps": 3},
                     "sampler": "sghmc", "sampler_options": {"step_size": 1e30, "temperature": 1e-8}},
    "entropy-sgd": {"kind": "entropy-sgd", "lr": 0.1, "options": {"gamma": 1.0, "inner_steps": 3},
                    "preset": "paper", "sampler_options": {"step_size": 1e6, "noise_scale": 1e-4}},
    "sgd": {"kind": "sgd", "lr": 1e30},
}  # fmt: skip


def test_every_training_optimizer_stops_within_an_epoch_and_never_reports_nan(tmp_path):
    pytest.importorskip("pytorch_optimizer")
    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["epochs"] = 3
    cfg["data"]["train_limit"] = 128
    cfg["optimizers"] = [{"label": k, **v} for k, v in DIVERGING_OPTIMIZERS.items()]
    cfg["optimizers"].append({"label": "fine", "kind": "sgd", "lr": 0.1})
    out = tmp_path / "run"
    run_training(parse_train_config(cfg), out, progress=io.StringIO())
    records = {r["label"]: r for r in _no_nan((out / "results.json").read_text())["records"]}
    spe = math.ceil(128 / cfg["batch_size"])
    for label, spec in DIVERGING_OPTIMIZERS.items():
        rec = records[label]
        assert rec["status"] == "diverged", (label, rec["message"])
        assert rec["final"] is None and rec["flatness"] is None
        assert rec["epochs_run"] == 0 and rec["steps"] <= spe  # caught in the first epoch
        message = rec["message"]
        step = re.search(r"diverged at optimizer step (\d+) \(epoch 1", message)
        assert step and int(step.group(1)) <= 2, message  # within one or two outer steps of the blow-up
        assert "likely cause" in message.lower() or "try a smaller" in message.lower(), message
        if spec["kind"].startswith("entropy"):  # the sampler is named, with its settings
            assert "sampler sghmc" in message or "the 'paper' preset" in message, message
            assert "SGHMC(step_size=1e+30" in message or "SGLD(step_size=1000000.0" in message, message
        assert len(rec["rows"]) == 1  # only epoch 0: no row past the last finite epoch
    assert records["fine"]["status"] == "ok"
    for name in ("epochs.csv", "final.csv"):
        with (out / name).open() as handle:
            cells = [c for row in csv.reader(handle) for c in row]
        assert not any(c.lower() in ("nan", "inf", "-inf") for c in cells), name
    final = {row["optimizer"]: row for row in csv.DictReader((out / "final.csv").open())}
    assert all(final[label]["test_error"] == "" for label in DIVERGING_OPTIMIZERS)
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert "## Diverged" in report and not any(re.search(r"\bnan\b|\binf\b", line, re.IGNORECASE) for line in table)


# ----------------------------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------------------------


def without_timing(value: Any) -> Any:
    """Drop the wall-clock fields, the only ones that may differ between two runs."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in ("timing", "seconds", "wall_seconds")}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def test_run_is_reproducible_for_every_sampler(tmp_path):
    """tests/test_cli_run.py checks SGLD and smoothing; here every registered sampler and a preset, twice."""
    data = copy.deepcopy(RUN_BASE)
    data["ksd"] = True
    data["estimators"] = [
        {"label": name, "sampler": name, "step_size_fraction": 0.3, "budgets": [16],
         **({"hyperparameters": {"sampler": {"name": "sghmc"}, "n_cycles": 2}} if name == "cyclical" else {})}
        for name in available_samplers()
    ] + [{"label": "paper", "preset": "paper", "noise_scale": 0.3, "step_size_fraction": 0.3, "budgets": [16]},
         {"label": "stein", "kind": "smoothing", "order": 0, "budgets": [16]}]  # fmt: skip
    config = tmp_path / "c.toml"
    config.write_text(to_toml(data))
    first = run_comparison(config, tmp_path / "a", progress=io.StringIO())[0]
    second = run_comparison(config, tmp_path / "b", progress=io.StringIO())[0]
    a, b = (_no_nan((p / "results.json").read_text()) for p in (first, second))
    assert all(r["status"] == "ok" for r in a["records"])
    assert without_timing(a) == without_timing(b)


def test_train_is_reproducible(tmp_path):
    """Two fresh runs of one training config: identical results.json apart from the seconds (flatness included)."""
    pytest.importorskip("pytorch_optimizer")
    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["epochs"] = 2
    cfg["model"]["options"]["dropout"] = 0.2
    cfg["flatness"] = {"measures": ["top_eigenvalue", "trace", "sharpness", "local_entropy"], "examples": 40,
                       "power_iterations": 5, "hutchinson_samples": 3, "sharpness_iterations": 2,
                       "local_entropy": {"steps": 3, "chains": 2, "burn_in": 1}}  # fmt: skip
    cfg["optimizers"] += [
        {"label": "lpf", "kind": "lpf-sgd", "lr": 0.1, "options": {"sigma": 1e-3, "n_samples": 2}},
        {"label": "sam", "kind": "sam", "lr": 0.1, "options": {"rho": 0.05}},
    ]
    results = []
    for name in ("a", "b"):
        run_training(parse_train_config(copy.deepcopy(cfg)), tmp_path / name, progress=io.StringIO())
        results.append(_no_nan((tmp_path / name / "results.json").read_text()))
    assert all(r["status"] == "ok" for r in results[0]["records"])
    assert without_timing(results[0]) == without_timing(results[1])
    for label in ("sgd", "esgd", "lpf", "sam"):
        a, b = (torch.load(tmp_path / n / "checkpoints" / f"{label}.pt", weights_only=True) for n in ("a", "b"))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_torn_or_foreign_records_are_redone_never_reported(tmp_path):
    """A record file that is torn, not an object, or another record's, found by a resume, is computed again."""
    config = tmp_path / "c.toml"
    config.write_text(to_toml(RUN_BASE))
    clean = run_comparison(config, tmp_path / "clean", progress=io.StringIO())[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text((clean / "config.json").read_text())
    (out / "records").mkdir()
    ids = sorted(p.stem for p in (clean / "records").glob("*.json"))
    (out / "records" / f"{ids[0]}.json").write_text('{"key": {"estim')  # torn
    (out / "records" / f"{ids[1]}.json").write_text((clean / "records" / f"{ids[0]}.json").read_text())  # foreign
    (out / "records" / ".x.json.abc.tmp").write_text("half")  # a killed write
    path, state = run_comparison(config, out, progress=io.StringIO())
    assert state == "resume" and (path / "COMPLETE").is_file() and not (out / "records" / ".x.json.abc.tmp").exists()
    a, b = (_no_nan((d / "results.json").read_text()) for d in (clean, out))
    assert without_timing(a) == without_timing(b)

    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["optimizers"] = cfg["optimizers"][:1]
    clean = tmp_path / "train_clean"
    run_training(parse_train_config(copy.deepcopy(cfg)), clean, progress=io.StringIO())
    record = json.loads((clean / "records" / "sgd.json").read_text())
    (clean / "records" / "sgd.json").write_text(json.dumps({**record, "label": "other"}))
    (clean / "COMPLETE").unlink()
    run_training(parse_train_config(copy.deepcopy(cfg)), clean, progress=io.StringIO())
    assert json.loads((clean / "records" / "sgd.json").read_text())["label"] == "sgd"
    assert without_timing(_no_nan((clean / "results.json").read_text())["records"]) == without_timing([record])


# ----------------------------------------------------------------------------------------------------------------
# Safety
# ----------------------------------------------------------------------------------------------------------------


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return ""


def test_package_never_evaluates_or_unpickles_freely():
    """Source scan of localentropy/: no eval/exec/compile, torch.load only with weights_only=True, np.load without
    allow_pickle, pickle only through the restricted unpickler, imports by name only where a user names them."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("yaml", "marshal", "shelve", "dill", "cloudpickle") for n in names):
                    problems.append(f"{rel}:{node.lineno}: imports {names}")
        for call in _calls(tree):
            name = _name(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            where = f"{rel}:{call.lineno}: {name}"
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                problems.append(where)
            if name == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where} without weights_only=True")
            if name in ("np.load", "numpy.load"):
                value = keywords.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where} with allow_pickle")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.serialization.load"):
                problems.append(where)
            if name.endswith("import_module") and str(rel) not in (
                # problem.factory = "package.module:function", named by the user
                "localentropy/experiments/comparison/plan.py",
                "localentropy/data/sources.py",  # optional packages by their fixed names (sklearn, mlxtend, mnist1d)
            ):
                problems.append(where)
            if name in ("yaml.load", "yaml.unsafe_load"):
                problems.append(where)
    assert not problems, problems


def test_configs_are_toml_and_a_factory_is_only_a_name(tmp_path, capsys):
    """A config is parsed as TOML, never evaluated; a problem factory must be 'module:function', nothing more."""
    marker = tmp_path / "PWNED"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for text in (
        code,  # Python is not TOML
        json.dumps({"name": "x"}),  # neither is JSON
        f"name = {json.dumps(code)}\n",  # a string that looks like code is just a (bad) name
        to_toml({**RUN_BASE, "problem": {"kind": "python", "dim": 2, "factory": "os:system('touch x')"}}),
        to_toml({**RUN_BASE, "problem": {"kind": "python", "dim": 2, "factory": code}}),
    ):
        config = tmp_path / "c.toml"
        config.write_text(text)
        assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "x").exists()
    assert "problem.factory: got" in err and "'package.module:function'" in err


def _files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*")}


def test_labels_cannot_write_outside_the_run_directory(tmp_path, capsys):
    """Labels with '../', '/', a leading '/', and unicode become sanitised file names inside the run directory."""
    data = copy.deepcopy(RUN_BASE)
    data["keep_draws"] = True
    labels = ["../../escape", "a/b", "/abs", "..", "é/../x"]
    data["estimators"] = [{"label": label, "sampler": "sgld", "step_size_fraction": 0.5, "budgets": [8]}
                          for label in labels]  # fmt: skip
    parent = tmp_path / "p"
    parent.mkdir()
    config = parent / "c.toml"
    config.write_text(to_toml(data))
    out = parent / "deep" / "out"
    before = _files(tmp_path)
    assert main(["run", str(config), "--out", str(out)]) == 0
    created = _files(tmp_path) - before
    assert created and all(p.resolve().is_relative_to(out.resolve()) or p == out.parent for p in created), created
    names = {p.name for p in (out / "records").glob("*.json")}
    assert len(names) == len(labels) and all("/" not in n for n in names)
    assert not any(p.name.startswith("escape") for p in tmp_path.rglob("*") if p.parent != out / "records")

    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["optimizers"] = [{"label": label, "kind": "sgd", "lr": 0.1} for label in ("../../up", "/root", "a/../b")]
    config.write_text(to_toml(cfg))
    out = parent / "train"
    before = _files(tmp_path)
    assert main(["train", str(config), "--out", str(out)]) == 0
    created = _files(tmp_path) - before
    assert all(p.resolve().is_relative_to(out.resolve()) for p in created), created
    assert len(list((out / "checkpoints").glob("*.pt"))) == 3 and len(list((out / "records").glob("*.json"))) == 3
    cfg["name"] = "../escape"
    config.write_text(to_toml(cfg))
    assert main(["train", str(config)]) == 2  # the default run directory runs/<name>: the name must be plain
    assert "name: got '../escape'" in capsys.readouterr().err


class _Marker:
    """Unpickling this would run a shell command that creates a file: the proof that a loader executed it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


def test_a_malicious_checkpoint_is_refused_without_running(tmp_path):
    """Checkpoints load with weights_only=True: a checkpoint that would run code is treated as torn and redone."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "label": "sgd", "payload": _Marker(marker)}, evil)
    assert load_checkpoint(evil) is None and not marker.exists()

    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["optimizers"] = cfg["optimizers"][:1]
    clean = tmp_path / "clean"
    run_training(parse_train_config(copy.deepcopy(cfg)), clean, progress=io.StringIO())
    resumed = tmp_path / "resumed"  # an incomplete run whose checkpoint was replaced by the malicious file
    resumed.mkdir()
    (resumed / "config.json").write_text((clean / "config.json").read_text())
    (resumed / "checkpoints").mkdir()
    (resumed / "checkpoints" / "sgd.pt").write_bytes(evil.read_bytes())
    path, state = run_training(parse_train_config(copy.deepcopy(cfg)), resumed, progress=io.StringIO())
    assert state == "resume" and (path / "COMPLETE").is_file() and not marker.exists()
    a, b = (_no_nan((d / "results.json").read_text()) for d in (clean, resumed))
    assert without_timing(a["records"]) == without_timing(b["records"])


def test_a_malicious_cifar_batch_is_refused_from_the_command_line(tmp_path, capsys):
    """`localentropy train` on a CIFAR-10 directory whose first batch would run code: exit 2, nothing runs."""
    marker = tmp_path / "PWNED"
    data = tmp_path / "cifar"
    data.mkdir()
    (data / "data_batch_1").write_bytes(pickle.dumps(_Marker(marker), protocol=2))
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (data / name).write_bytes(pickle.dumps(good, protocol=2))
    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["data"] = {"source": "cifar10", "path": str(data)}
    cfg["model"] = {"name": "mlp", "options": {"hidden": [8]}}
    config = tmp_path / "c.toml"
    config.write_text(to_toml(cfg))
    assert main(["train", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "data_batch_1" in err and "refused to load global posix.system" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
