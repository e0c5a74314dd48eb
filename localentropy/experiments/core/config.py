"""Reading configs: TOML files read with the standard library, every field checked, every problem collected.

A config is a pydantic model (:class:`Table` and the field types below); a bad config raises :class:`ConfigError`
listing every problem at once, each with its field path, the value found and what is expected.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_NAME = 64  # run names and labels become file names (with suffixes): well under the 255 bytes of a file name
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
NAME_RULE = "letters, digits, '_', '.' and '-', starting with a letter, a digit or '_'"
T = TypeVar("T", bound=BaseModel)


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


Problem = tuple[tuple[str | int, ...], str]  # (field path inside the table checked, what is wrong there)


def got(value: Any, expected: str) -> str:
    """The house wording of a wrong value: ``got -1 (int), expected an integer in [1, inf]``."""
    return f"got {shown(value)} ({type_name(value)}), expected {expected}"


def fail(problems: list[Problem]) -> NoReturn:
    """Raise every problem at once as pydantic's ValidationError; pydantic prefixes each path with the field and
    table it was found in, so a problem raised inside ``estimators[2]`` comes out under that path."""
    raise ValidationError.from_exception_data(
        "config",
        [
            InitErrorDetails(type=PydanticCustomError("house", "{text}", {"text": text}), loc=loc, input=None)
            for loc, text in problems
        ],
    )


def path_text(loc: tuple[str | int, ...]) -> str:
    """A pydantic location as a config path: ``estimators[2].hyperparameters.step_size``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{key_text(part)}" if text else key_text(part)
    return text


def _house(error: Any) -> Problem:
    """One of pydantic's own errors in the house wording (the field types below raise house errors themselves)."""
    kind, loc = error["type"], tuple(error["loc"])
    if kind == "house":
        return loc, error["msg"]
    if kind == "missing":
        return loc, "missing (required)"
    expected = {
        "dict_type": "a table",
        "list_type": "a list",
        "bool_type": "true or false",
        "string_type": "a string",
        "int_type": "an integer",
        "float_type": "a number",
    }
    return loc, got(error.get("input"), expected.get(kind, error["msg"]))


class Check:
    """A field's check, run before pydantic's own: one house-worded problem naming what is allowed (``allowed``,
    also the docs' "allowed" column). ``test`` returns the value to keep, or raises ValueError for ``allowed``
    (or for the ValueError's own text when it has one)."""

    def __init__(self, allowed: str, test: Callable[[Any], Any]) -> None:
        self.allowed, self.test = allowed, test

    def __call__(self, value: Any) -> Any:
        try:
            return self.test(value)
        except ValidationError:  # problems inside the value (a list's items), already placed
            raise
        except ValueError as exc:
            fail([((), got(value, str(exc) or self.allowed))])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bounds(low: float | None, high: float | None, low_open: bool = False) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    return f"{'(' if low_open else '['}{lo}, {'inf)' if high is None else f'{high:g}]'}"


def as_integer(value: Any, low: int | None = None, high: int | None = None) -> int:
    if not _is_int(value):
        raise ValueError("an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"an integer in [{low}, {'inf' if high is None else high}]")
    return value


def as_number(value: Any, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range (TOML integers are unbounded)
        number = math.inf
    if not math.isfinite(number):
        raise ValueError("a finite number")
    below = low is not None and (number <= low if low_open else number < low)
    if below or (high is not None and number > high):
        raise ValueError(f"a number in {_bounds(low, high, low_open)}")
    return number


def integer(low: int | None = None, high: int | None = None) -> Any:
    """An integer in [low, high] (``10.0`` and ``true`` refused)."""
    allowed = f"an integer in [{low}, {'inf' if high is None else high}]" if low is not None else "an integer"
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(Check(allowed, lambda v: as_integer(v, low, high)))]


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Any:
    """A finite number in the range (an integer is taken as a number; ``nan``, ``inf`` and ``true`` refused)."""
    bounds = {"gt" if low_open else "ge": low, "le": high}
    allowed = f"a number in {_bounds(low, high, low_open)}" if low is not None or high is not None else "a number"
    check = Check(allowed, lambda v: as_number(v, low, high, low_open))
    return Annotated[float, Field(**bounds, allow_inf_nan=False), BeforeValidator(check)]


def choice(values: tuple[str, ...], hints: dict[str, str] | None = None) -> Any:
    """One of ``values``; ``hints`` adds a sentence for a known wrong value (a former name)."""
    allowed = "one of " + ", ".join(repr(c) for c in values)

    def test(value: Any) -> str:
        if isinstance(value, str) and value in values:
            return value
        hint = (hints or {}).get(value) if isinstance(value, str) else None
        raise ValueError(f"{allowed} ({hint})" if hint else allowed)

    return Annotated[Literal[values], BeforeValidator(Check(allowed, test))]  # type: ignore[valid-type]


def flag() -> Any:
    def test(value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError
        return value

    return Annotated[bool, BeforeValidator(Check("true or false", test))]


def _text(value: Any, max_length: int | None = None, pattern: re.Pattern[str] | None = None, rule: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    if (max_length is not None and len(value) > max_length) or (pattern is not None and not pattern.fullmatch(value)):
        raise ValueError(rule)
    return value


def nonempty_text() -> Any:
    return Annotated[str, Field(min_length=1), BeforeValidator(Check("a non-empty string", _text))]


def label_text() -> Any:
    """A label: it becomes part of file names, so at most MAX_NAME characters."""
    rule = f"at most {MAX_NAME} characters (it names files)"
    return Annotated[
        str,
        Field(min_length=1, max_length=MAX_NAME),
        BeforeValidator(Check(rule, lambda v: _text(v, MAX_NAME, None, rule))),
    ]


def label_field() -> Any:
    """The ``label`` field of an estimator or an optimizer compared: optional, named by default from what runs."""
    return Field(
        "",
        validate_default=False,
        description="The name in records, reports and file names (default: what runs, and the settings that "
        "set it apart); unique.",
    )


def run_name(pattern: re.Pattern[str] = NAME_PATTERN, rule: str = NAME_RULE) -> Any:
    """A run name: it names the run directory, so only the characters ``pattern`` allows, at most MAX_NAME."""
    allowed = f"at most {MAX_NAME} {rule} (it names the run directory)"
    check = Check(allowed, lambda v: _text(v, MAX_NAME, pattern, allowed))
    return Annotated[str, Field(max_length=MAX_NAME, pattern=pattern.pattern), BeforeValidator(check)]


def patterned_text(pattern: re.Pattern[str], rule: str) -> Any:
    """A string that matches ``pattern`` (``rule`` says which in words)."""
    check = Check(rule, lambda v: _text(v, None, pattern, rule))
    return Annotated[str, Field(pattern=f"^(?:{pattern.pattern})$"), BeforeValidator(check)]


def table() -> Any:
    """A table whose keys the model does not check itself (a sampler's or a model's options)."""

    def test(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError
        return dict(value)

    return Annotated[dict[str, Any], BeforeValidator(Check("a table", test))]


def array(expected: str) -> Any:
    """A non-empty array (of tables checked by the model the annotation names)."""

    def test(value: Any) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise ValueError
        return value

    return BeforeValidator(Check(expected, test))


def one_or_many(item: Any, expected: str, check: Callable[[Any], Any], *, per_item: bool = True) -> Any:
    """A value or a non-empty list of them, kept as a list; with ``per_item`` a bad list item is named by its index
    (``gamma[1]``), else by the field (``budgets``)."""

    def test(value: Any) -> list[Any]:
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(expected)
        kept, problems = [], []
        for i, v in enumerate(values):
            try:
                kept.append(check(v))
            except ValueError as exc:
                problems.append(((i,) if per_item and isinstance(value, list) else (), got(v, str(exc))))
        if problems:
            fail(problems)
        return kept

    schema = WithJsonSchema({"anyOf": [item, {"type": "array", "items": item, "minItems": 1}]})
    return Annotated[list[Any], BeforeValidator(Check(expected, test)), schema]


def word_or_number(word: str, low: float, high: float | None, *, low_open: bool = False) -> Any:
    """``word`` (``"uniform"``, ``"matched"``) or a finite number in the range."""
    allowed = f"a number in {_bounds(low, high, low_open)} or {word!r}"

    def test(value: Any) -> str | float:
        if isinstance(value, str) and value == word:
            return value
        try:
            return as_number(value, low, high, low_open)
        except ValueError:
            raise ValueError(allowed) from None

    bound = {"exclusiveMinimum" if low_open else "minimum": low} | ({} if high is None else {"maximum": high})
    schema = WithJsonSchema({"anyOf": [{"const": word}, {"type": "number", **bound}]})
    return Annotated[str | float, BeforeValidator(Check(allowed, test)), schema]


class Table(BaseModel):
    """A table of a config: unknown fields refused naming the allowed ones, every problem of the table and of the
    tables inside it collected at once, in the order of the fields.

    A subclass may narrow the fields a table takes by its kind (:meth:`allowed`), check its raw fields before they
    are typed (:meth:`precheck`: rules that must be reported even when another field is wrong) and check the typed
    table as a whole (:meth:`check`)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, populate_by_name=True)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.alias or name for name, f in cls.model_fields.items()]

    @classmethod
    def allowed(cls, data: dict[str, Any]) -> set[str]:
        return set(cls.keys())

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        return []

    def check(self) -> list[Problem]:
        return []

    @model_validator(mode="wrap")
    @classmethod
    def _whole(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            fail([((), got(data, "a table"))])
        allowed = cls.allowed(data)
        problems: list[Problem] = [
            ((key,), f"unknown field; allowed: {', '.join(sorted(allowed))}") for key in sorted(set(data) - allowed)
        ]
        problems += cls.precheck(data)
        try:
            model = handler({k: v for k, v in data.items() if k in allowed})
        except ValidationError as exc:
            problems += [_house(e) for e in exc.errors()]
        else:
            problems += model.check()
        if problems:
            order = {key: i for i, key in enumerate(cls.keys())}
            unknown = set(data) - allowed
            fail(
                sorted(
                    problems,
                    key=lambda p: (
                        -1 if p[0] and p[0][0] in unknown else order.get(p[0][0], len(order)) if p[0] else len(order)
                    ),
                )
            )
        return model


def validate(model: type[T], data: Any, source: str | None = None, context: dict[str, Any] | None = None) -> T:
    """``data`` (as read from TOML) as ``model``, or ConfigError listing every problem with its field path.

    The validators find ``data`` itself in the context (``info.context["raw"]``): a rule between two tables can
    still be checked when one of them has another problem."""
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a table of fields, got {type_name(data)}"], source)
    try:
        return model.model_validate(data, context={"raw": data, **(context or {})})
    except ValidationError as exc:
        raise ConfigError([f"{path_text(loc)}: {text}" for loc, text in map(_house, exc.errors())], source) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file as a dict; every way it can fail is one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"config file not found: {path} (a shipped config's name works too: `localentropy configs` lists them)"],
            str(path),
        ) from None
    except IsADirectoryError:
        raise ConfigError([f"config path is a directory, not a TOML file: {path}"], str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"not UTF-8 text (TOML must be UTF-8): {exc.reason} at byte {exc.start}"], str(path)
        ) from None
    except (OSError, ValueError) as exc:  # unreadable (permissions, a broken link), or a path with a NUL byte
        raise ConfigError(
            [f"cannot read the config file {path}: {getattr(exc, 'strerror', None) or exc}"], str(path)
        ) from None
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


def validate_named(model: type[T], data: Any, name: str, source: str | None = None) -> T:
    """:func:`validate` for a config whose ``name`` defaults to ``name`` (its file's stem): a problem with the
    defaulted name says where it came from."""
    if not isinstance(data, dict) or "name" in data:
        return validate(model, data, source)
    try:
        return validate(model, {**data, "name": name}, source)
    except ConfigError as exc:
        stem = "name (the config file's stem)"
        raise ConfigError([stem + p[4:] if p.startswith("name:") else p for p in exc.problems], source) from None
