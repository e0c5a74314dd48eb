"""Value types of the command line's options: each returns the value or raises the usage error (exit 2) that
says what was expected."""

from __future__ import annotations

import argparse


def out_dir(text: str) -> str:
    if not text.strip():  # an unset shell variable (--out "$OUT") would write into the current directory
        raise argparse.ArgumentTypeError("expected a directory, got an empty string")
    if "\0" in text:
        raise argparse.ArgumentTypeError(f"a path cannot contain a NUL character, got {text!r}")
    return text


def positive_int(text: str, kind: type = int, low: float = 1) -> int:
    """A number >= ``low`` (``kind`` int or float), or a usage error (exit 2) saying what was expected."""
    what = {(int, 1): "a positive integer", (int, 0): "a non-negative integer"}.get((kind, low), "a positive number")
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not low <= value < float("inf") or (kind is float and value == 0):
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value
