"""Reading configs: TOML files read with the standard library, every field checked, every problem collected.

A bad config raises :class:`ConfigError` listing every problem at once, each with its field path, the value
found and what is expected. :class:`FieldReader` is what the comparison, training and sweep configs read with.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any

MAX_NAME = 64  # run names and labels become file names (with suffixes): well under the 255 bytes of a file name
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter, a digit or '_'"
MISSING: Any = object()


class ConfigError(ValueError):
    """A config with one or more problems; ``problems`` lists them, one sentence each."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        super().__init__(f"{len(problems)} problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems))


def type_name(value: Any) -> str:
    return type(value).__name__


def key_text(key: Any) -> str:
    """A TOML key as shown in a message: as is when plain, else quoted and escaped (control characters, spaces)."""
    return key if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key) else shown(key)


def shown(value: Any) -> str:
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more than 4300 digits (TOML integers are unbounded)
        text = f"<{type_name(value)} too large to print>"
    return text if len(text) <= 60 else text[:57] + "..."


def constructor_problem(path: str, exc: Exception, fields: dict[str, str]) -> str:
    """A constructor's error as a config problem, under the config field it names.

    The package's constructors say which argument is wrong first (``"step_size must be > 0, got -1"``); ``fields``
    maps argument names to the config fields that set them (``{"step_size": "estimators[2].hyperparameters
    .step_size"}``). An error naming no mapped argument stays under ``path``.
    """
    first = re.match(r"[A-Za-z_][A-Za-z0-9_]*", str(exc))
    return f"{fields.get(first.group(0), path) if first else path}: {exc}"


class FieldReader:
    """Reads fields from TOML tables, collecting every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, path: str, value: Any, expected: str) -> None:
        if value is MISSING:  # already reported as missing by get()
            return
        self.problems.append(f"{path}: got {shown(value)} ({type_name(value)}), expected {expected}")

    def unknown(self, table: dict[str, Any], allowed: set[str], path: str) -> None:
        for key in sorted(set(table) - allowed):
            prefix = f"{path}." if path else ""
            self.problems.append(f"{prefix}{key_text(key)}: unknown field; allowed: {', '.join(sorted(allowed))}")

    def get(self, table: dict[str, Any], key: str, path: str, default: Any = MISSING) -> Any:
        if key in table:
            return table[key]
        if default is MISSING:
            self.problems.append(f"{path}: missing (required)")
        return default

    def integer(self, value: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(path, value, "an integer")
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.problem(path, value, f"an integer in [{minimum}, {'inf' if maximum is None else maximum}]")
            return None
        return value

    def number(self, value: Any, path: str, low: float | None = None, high: float | None = None, *,
               low_open: bool = False) -> float | None:  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(path, value, "a number")
            return None
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range (TOML integers are unbounded)
            number = math.inf
        if not math.isfinite(number):
            self.problem(path, value, "a finite number")
            return None
        value = number
        below = low is not None and (value <= low if low_open else value < low)
        if below or (high is not None and value > high):
            lo = "-inf" if low is None else f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}]"
            self.problem(path, value, f"a number in {'(' if low_open else '['}{lo}, {hi}")
            return None
        return value

    def choice(self, value: Any, path: str, choices: tuple[str, ...]) -> str | None:
        if value not in choices:
            self.problem(path, value, "one of " + ", ".join(repr(c) for c in choices))
            return None
        return value

    def string(self, value: Any, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.problem(path, value, "a non-empty string")
            return None
        return value

    def label(self, value: Any, path: str) -> str | None:
        """A label: a non-empty string of at most MAX_NAME characters (it becomes part of file names)."""
        label = self.string(value, path)
        if label is not None and len(label) > MAX_NAME:
            self.problem(path, label, f"at most {MAX_NAME} characters (it names files)")
            return None
        return label

    def name(self, value: Any, path: str, default: str, pattern: re.Pattern[str] = NAME_PATTERN,
             max_length: int = MAX_NAME, allowed: str = NAME_RULE) -> str:  # fmt: skip
        """A run name: it names the run directory, so only the characters ``pattern`` allows, at most max_length."""
        name = self.string(value, path)
        if name is None:
            return default
        if not pattern.fullmatch(name) or len(name) > max_length:
            self.problem(path, name, f"at most {max_length} {allowed} (it names the run directory)")
            return default
        return name

    def table(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.problem(path, value, "a table")
            return {}
        return value

    def grid(self, value: Any, path: str, low: float, low_open: bool) -> list[float]:
        values = value if isinstance(value, list) else [value]
        if not values:
            self.problem(path, value, "a number or a non-empty list of numbers")
        checked = [self.number(v, f"{path}[{i}]" if isinstance(value, list) else path, low, low_open=low_open)
                   for i, v in enumerate(values)]  # fmt: skip
        return [v for v in checked if v is not None]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file as a dict; every way it can fail is one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path} (a shipped config's name works too: `localentropy configs` "
                           "lists them)"], str(path)) from None  # fmt: skip
    except IsADirectoryError:
        raise ConfigError([f"config path is a directory, not a TOML file: {path}"], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"not UTF-8 text (TOML must be UTF-8): {exc.reason} at byte {exc.start}"], str(path)
        ) from None
    except (OSError, ValueError) as exc:  # unreadable (permissions, a broken link), or a path with a NUL byte
        raise ConfigError([f"cannot read the config file {path}: {getattr(exc, 'strerror', None) or exc}"],
                          str(path)) from None  # fmt: skip
    try:
        return tomllib.loads(text)
    except (ValueError, RecursionError) as exc:  # TOMLDecodeError, an integer of > 4300 digits, deep nesting
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ConfigError([f"not valid TOML: {reason}"], str(path)) from None


def toml_text(data: dict[str, Any]) -> str:
    """``data`` (a config as read from TOML: tables, arrays, strings, numbers, booleans) as TOML text, every
    value inline; checked to read back equal (a value TOML cannot hold, such as None, raises ValueError)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a TOML basic string
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + " }"
        raise ValueError(f"TOML cannot hold {v!r} ({type(v).__name__})")

    text = "".join(f"{json.dumps(str(k))} = {value(v)}\n" for k, v in data.items())
    if tomllib.loads(text) != data:  # nan != nan: a config with nan is refused by its parser anyway
        raise ValueError("the config does not read back equal from TOML")
    return text
