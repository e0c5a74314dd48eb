"""Value types of the command line's options: each returns the value or raises the usage error (exit 2) that
says what was expected."""

from __future__ import annotations

import argparse
import math


def out_dir(text: str) -> str:
    if not text.strip():  # an unset shell variable (--out "$OUT") would write into the current directory
        raise argparse.ArgumentTypeError("expected a directory, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character, got {text!r}")
    return text


def _integer(text: str, low: int, what: str) -> int:
    try:
        value = int(text)  # "1.5", "1e3" and "" are refused, not rounded
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    return _integer(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (0: off)."""
    return _integer(text, 0, "a non-negative integer")


def _seconds(text: str, zero: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and (value > 0 or (zero and value == 0))):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_seconds(text: str) -> float:
    """A finite number of seconds > 0."""
    return _seconds(text, False, "a positive number of seconds")


def non_negative_seconds(text: str) -> float:
    """A finite number of seconds >= 0 (0: off)."""
    return _seconds(text, True, "a non-negative number of seconds")
