# ruff: noqa: F401  (the test modules star-import these names)
"""Shared by tests/cli/test_*.py, the reliability of the commands: bad input, divergence, reproducibility and safety.

* Bad input: hypothesis drives ``main(argv)`` in-process with malformed configs (wrong types, missing and unknown
  keys, NaN, inf, negative and huge numbers, unicode, empty files, binary garbage) for ``run``, ``train``,
  ``sweep`` and ``report``, and with bad flags: exit status 2, one readable message naming the field, no traceback,
  no output directory. A few real ``python -m localentropy`` processes confirm it from the console.
* Divergence: an estimator whose step size exceeds 2 / lambda_max is recorded as diverged (step, sampler, likely
  cause) while the others go on; every optimizer of ``train`` is stopped within an epoch; no NaN is ever shown.
* Reproducibility: the same config and seed give the same numbers (all but timing) for ``run`` and ``train``.
* Safety: no eval / exec / unsafe unpickling in the package, labels cannot write outside the run directory,
  checkpoints load with ``weights_only=True`` and a malicious checkpoint or CIFAR batch runs nothing.

Interruption (SIGKILL, SIGTERM, SIGINT) and resume: tests/experiments/comparison/test_kill_resume.py. What each
test guarantees:
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

ROOT = Path(__file__).resolve().parents[2]
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
def shared_one_thread(single_thread):
    """Every test of the modules that import this one runs on one intra-op thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope="module", autouse=True)
def shared_report_fuzz_counts(request):
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


def shared_string(text: str) -> str:
    """A TOML basic string (JSON's surrogate pairs are not TOML: escape by code point)."""
    escaped = "".join(
        c if c not in '"\\' and (c == "\t" or (ord(c) >= 0x20 and ord(c) != 0x7F)) else f"\\u{ord(c):04x}" for c in text
    )
    return f'"{escaped}"'


def shared_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else shared_string(key)


def shared_value(v: Any) -> str:
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
        return shared_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(shared_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{shared_key(k)} = {shared_value(x)}" for k, x in v.items()) + " }"
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
            lines.append(f"{shared_key(key)} = {shared_value(value)}")
    for key, table in tables:
        lines += ["", f"[{shared_key(key)}]"] + [f"{shared_key(k)} = {shared_value(v)}" for k, v in table.items()]
    for key, items in arrays:
        for item in items:
            lines += ["", f"[[{shared_key(key)}]]"] + [f"{shared_key(k)} = {shared_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Valid base configs (each checked to run, below) and what makes a value of each field malformed
# ----------------------------------------------------------------------------------------------------------------

RUN_BASE: dict[str, Any] = {
    "name": "fz",
    "seed": 1,
    "replicates": 2,
    "chains": 2,
    "gamma": 1.0,
    "temperature": 0.1,
    "threads": 1,
    "keep_draws": False,
    "ksd": False,
    "problem": {"kind": "quadratic", "dim": 2, "condition": 2.0, "n_negative": 0, "seed": 0},
    "points": {"kind": "random", "count": 1, "scale": 1.0},
    "estimators": [
        {
            "label": "a",
            "sampler": "sgld",
            "step_size_fraction": 0.5,
            "burn_in_fraction": 0.2,
            "averaging": "uniform",
            "budgets": [8],
        },
        {"label": "s", "kind": "smoothing", "sigma": "matched", "order": 1, "budgets": [4]},
    ],
}
TRAIN_BASE: dict[str, Any] = {
    "name": "fz",
    "seed": 0,
    "batch_size": 32,
    "epochs": 1,
    "eval_batch_size": 500,
    "threads": 1,
    "data": {"source": "digits", "validation_fraction": 0.1, "test_fraction": 0.2, "train_limit": 64, "test_limit": 64},
    "model": {"name": "mlp", "options": {"hidden": [8]}},
    "schedule": {"kind": "constant"},
    "flatness": {
        "measures": [],
        "examples": 10,
        "hutchinson_samples": 2,
        "power_tol": 0.01,
        "local_entropy": {"steps": 2, "burn_in": 0},
    },
    "optimizers": [
        {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9}},
        {
            "label": "esgd",
            "kind": "entropy-sgd",
            "lr": 0.1,
            "options": {"gamma": 1.0, "inner_steps": 2},
            "sampler": "sgld",
            "sampler_options": {"step_size": 0.01, "temperature": 1e-4},
        },
    ],
}
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
    options = [
        NOT_A_NUMBER,
        NONFINITE,
        HUGE.filter(lambda v: high is not None or (low is not None and v < low) or abs(v) > 1e308),
    ]
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


def shared_set(data: dict[str, Any], path: Path_, value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def shared_delete(data: dict[str, Any], path: Path_) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]


def shared_dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


RUN_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("seed",), bad_int(0, 2**63 - 1)),
    (("replicates",), bad_int(2, 100_000)),
    (("chains",), bad_int(1, 100_000)),
    # gamma and temperature take a number or a list of them: [1.0] (in NOT_A_NUMBER) is a valid list
    (("gamma",), bad_number(0.0, low_open=True).filter(lambda v: v != [1.0]) | st.just([])),
    (
        ("temperature",),
        bad_number(0.0, low_open=True).filter(lambda v: v != [1.0])
        | st.lists(bad_number(0.0, low_open=True), min_size=1),
    ),
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
    (
        ("estimators", 0, "averaging"),
        bad_choice(("uniform",)).filter(lambda v: not isinstance(v, int | float)) | bad_number(0.0, 1.0, low_open=True),
    ),
    (("estimators", 0, "budgets"), bad_int(4, 10_000_000) | st.just([]) | st.lists(bad_int(4, 10**7), min_size=1)),
    (("estimators", 0, "hyperparameters"), NOT_A_TABLE | st.just({"zz": 0.1}), ("estimators[0]",)),
    (
        ("estimators", 0),
        st.builds(
            lambda v: {"sampler": "sgld", "hyperparameters": {"step_size": v}, "budgets": [8]},
            bad_number(0.0, low_open=True),
        ),
        ("estimators[0]", "step_size"),
    ),
    (
        ("estimators", 0),
        st.builds(
            lambda v: {
                "sampler": "sghmc",
                "step_size_fraction": 0.5,
                "budgets": [8],
                "hyperparameters": {"friction": v},
            },
            st.sampled_from([math.nan, math.inf, -1.0, "x", True, 10**400, [1]]),
        ),
        ("estimators[0]", "friction"),
    ),
    (
        ("estimators", 1, "sigma"),
        bad_choice(("matched",)).filter(lambda v: not isinstance(v, int | float)) | bad_number(0.0, low_open=True),
    ),
    (("estimators", 1, "order"), bad_int(0, 1)),
    (("estimators", 1, "budgets"), bad_int(1, 10_000_000)),
]
RUN_REQUIRED: list[Path_] = [
    ("problem",),
    ("problem", "kind"),
    ("problem", "dim"),
    ("estimators",),
    ("estimators", 0, "budgets"),
    ("estimators", 0, "sampler"),
    ("estimators", 0, "step_size_fraction"),
    ("estimators", 1, "budgets"),
]
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
    (
        ("flatness", "measures"),
        NOT_A_LIST
        | st.lists(bad_choice(("top_eigenvalue", "trace", "density", "sharpness", "local_entropy")), min_size=1),
    ),
    (("flatness", "examples"), bad_int(1)),
    (("flatness", "hutchinson_samples"), bad_int(2)),
    (("flatness", "power_tol"), bad_number(0.0, low_open=True)),
    (("flatness", "local_entropy", "steps"), bad_int(1)),
    (("optimizers",), NOT_A_LIST | st.just([]) | st.just([5])),
    (("optimizers", 0, "kind"), bad_choice(("sgd", "adam", "entropy-sgd", "entropy-adam", "lpf-sgd", "sam"))),
    (("optimizers", 0, "lr"), bad_number(0.0, low_open=True)),
    (("optimizers", 0, "label"), bad_label() | st.just("esgd"), ("label",)),
    (("optimizers", 0, "options"), NOT_A_TABLE),
    (
        ("optimizers", 0, "options", "momentum"),
        bad_number(0.0, 1.0).filter(lambda v: v != 1.0) | st.just(1.0) | st.just(1),
        ("optimizers[0]", "momentum"),
    ),
    (("optimizers", 0, "options", "nesterov"), NOT_A_BOOL, ("optimizers[0]", "nesterov")),
    (("optimizers", 0, "options", "weight_decay"), bad_number(0.0), ("optimizers[0]", "weight_decay")),
    (("optimizers", 1, "sampler"), bad_choice(available_samplers())),
    (("optimizers", 1, "sampler_options", "step_size"), bad_number(0.0, low_open=True), ("optimizers[1]", "step_size")),
    (("optimizers", 1, "options", "inner_steps"), bad_int(1), ("optimizers[1]", "inner_steps")),
    (("optimizers", 1, "options", "gamma"), bad_number(0.0, low_open=True), ("optimizers[1]", "gamma")),
]
TRAIN_REQUIRED: list[Path_] = [
    ("epochs",),
    ("data",),
    ("data", "source"),
    ("model",),
    ("model", "name"),
    ("optimizers",),
    ("optimizers", 0, "kind"),
    ("optimizers", 0, "lr"),
    ("optimizers", 1, "sampler"),
    ("optimizers", 1, "options", "gamma"),
]
TRAIN_TABLES: list[Path_] = [
    (),
    ("data",),
    ("model",),
    ("schedule",),
    ("flatness",),
    ("flatness", "local_entropy"),
    ("optimizers", 0),
    ("optimizers", 0, "options"),
    ("optimizers", 1),
    ("optimizers", 1, "sampler_options"),
    ("model", "options"),
]

KNOWN_KEYS = {
    "name",
    "seed",
    "replicates",
    "chains",
    "gamma",
    "temperature",
    "threads",
    "keep_draws",
    "ksd",
    "problem",
    "points",
    "estimators",
    "kind",
    "dim",
    "condition",
    "n_negative",
    "factory",
    "options",
    "count",
    "scale",
    "values",
    "label",
    "budgets",
    "sampler",
    "hyperparameters",
    "step_size_fraction",
    "burn_in_fraction",
    "averaging",
    "preset",
    "noise_scale",
    "sigma",
    "order",
    "batch_size",
    "eval_batch_size",
    "epochs",
    "effective_epochs",
    "data",
    "model",
    "schedule",
    "flatness",
    "optimizers",
    "source",
    "path",
    "validation_fraction",
    "test_fraction",
    "train_limit",
    "test_limit",
    "lr",
    "sampler_options",
    "measures",
    "step_size",
    "milestones",
    "min_lr",
    "base",
    "set",
    "grid",
    "runs",
    "hidden",
    "dropout",
    "momentum",
    "nesterov",
    "inner_steps",
    "scoping",
    "weight_decay",
    "dampening",
    "friction",
    "noise",
    "betas",
    "eps",
    "amsgrad",
    "rho",
    "n_samples",
    "examples",
    "power_iterations",
    "power_tol",
    "hutchinson_samples",
    "lanczos_steps",
    "lanczos_runs",
    "broadening",
    "sharpness_epsilon",
    "sharpness_iterations",
    "local_entropy",
    "burn_in",
    "steps",
}


@st.composite
def mutations(draw, fields, required, tables, unknown_prefix: Path_ = ()) -> Mutation:
    """One change that makes a valid config malformed, and what the error message must mention."""
    how = draw(st.sampled_from(["value", "value", "value", "missing", "unknown"]))
    if how == "value":
        field = draw(st.sampled_from(fields))
        path = unknown_prefix + field[0]
        return ("set", path, draw(field[1]), field[2] if len(field) > 2 else (shared_dotted(path),))
    if how == "missing":
        path = unknown_prefix + draw(st.sampled_from(required))
        return ("delete", path, None, tuple(t for t in (shared_dotted(path[:-1]), str(path[-1])) if t))
    table = unknown_prefix + draw(st.sampled_from(tables))
    key = draw(unknown_key(KNOWN_KEYS))
    return ("set", (*table, key), draw(st.integers() | st.text(max_size=4) | st.booleans()), ("unknown",))


def apply(base: dict[str, Any], changes: list[Mutation]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for op, path, value, _ in changes:
        try:
            if op == "set":
                shared_set(data, path, value)
            else:
                shared_delete(data, path)
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


def shared_fuzz_config(command: str, workspace: Workspace, capsys, content: bytes, mentions: tuple[str, ...]) -> None:
    where = workspace.next()
    config, out = where / "c.toml", where / "out"
    config.write_bytes(content)
    capsys.readouterr()
    rc = main([command, str(config), "--out", str(out)])
    captured = capsys.readouterr()
    TRIED[command] += 1
    assert_refused(command, rc, captured.out, captured.err, out, mentions)


def shared_record(estimator: str, budget: int, ok: bool = True) -> dict[str, Any]:
    return {
        "key": {"estimator": estimator, "point": 0, "gamma": 1.0, "temperature": 0.1, "budget": budget},
        "status": "ok" if ok else "diverged",
        "error": None if ok else "diverged in replicate 0",
        "metrics": {
            "mse": 0.1,
            "relative_mse": 0.01,
            "bias": [0.1, 0.2],
            "bias_norm": 0.1,
            "bias_norm_mcse": 0.01,
            "variance": 0.05,
            "cosine": 0.9,
            "efficiency_ratio": 1.2,
            "grad_evals": budget,
            "replicates": 3,
        }
        if ok
        else None,
        "chains": {
            "n_chains": 2,
            "min_ess_bulk": 50.0,
            "max_rhat": 1.01,
            "ess_bulk_quantiles": {"q05": 1.0},
            "tail_prob": [0.05, 0.95],
        }
        if ok
        else None,
        "ksd": 0.3 if ok else None,
        "estimator": {"kind": "local-entropy", "sampler": "sgld", "settings": {"n_steps": 8}},
        "timing": {"seconds_per_replicate": 0.01, "seconds_total": 0.03},
    }


RESULTS_BASE: dict[str, Any] = {
    "schema": 1,
    "name": "fz",
    "config": {"seed": 1},
    "meta": {"seed": 1, "versions": {"torch": "x"}},
    "records": [shared_record("sgld", 8), shared_record("sgld", 16), shared_record("sghmc", 8, ok=False)],
}


def shared_no_nan(text: str) -> Any:
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))


TIMING_KEYS = ("timing", "seconds", "wall_seconds", "other_cores")  # measured anew by every run


def without_timing(value: Any) -> Any:
    """Drop the wall-clock fields, the only ones that may differ between two runs."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value
