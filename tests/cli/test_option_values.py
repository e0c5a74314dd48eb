"""The command line's number options take what their names say: a positive integer is neither 1.5 nor 0."""

from __future__ import annotations

import argparse

import pytest

from localentropy.cli import main
from localentropy.cli_values import non_negative_int, non_negative_seconds, positive_int, positive_seconds


@pytest.mark.parametrize("text", ["0", "-1", "1.5", "1.0", "1e3", "", "x", "nan", "inf"])
def test_positive_int_refuses_what_is_not_a_positive_integer(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="expected a positive integer"):
        positive_int(text)


def test_the_integer_and_seconds_options_accept_their_values() -> None:
    assert positive_int("3") == 3 and non_negative_int("0") == 0 and positive_seconds("2.5") == 2.5
    assert non_negative_seconds("0") == 0.0 and non_negative_seconds("12.5") == 12.5
    for parse, text in (
        (non_negative_int, "-1"),
        (non_negative_int, "0.5"),
        (positive_seconds, "0"),
        (positive_seconds, "inf"),
        (positive_seconds, "nan"),
        (non_negative_seconds, "-1"),
        (non_negative_seconds, "inf"),
        (non_negative_seconds, "x"),
    ):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


@pytest.mark.parametrize(
    "argv",
    [
        ["demo", "--chains", "1.5"],
        ["demo", "--steps", "0"],
        ["digits", "--epochs", "2.0"],
        ["train", "x", "--dist-timeout", "0"],
        ["train", "x", "--drift-check", "-1"],
        ["sweep", "x", "--quiet-wait", "-1"],
    ],
)
def test_a_bad_number_option_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "expected a" in capsys.readouterr().err
