"""Progress of long commands: a tqdm bar with elapsed time and time left on a terminal, plain lines elsewhere.

Every long loop (the records of ``localentropy run``, the epochs of ``train``, the runs of ``sweep``, the steps of
``reproduce``) reports through :class:`Progress`. A bar is drawn only when the progress stream is a terminal and
bars are allowed (the command line disallows them with ``--quiet`` or when stdout is not a terminal); otherwise
each finished item is one plain line, which logs and tests read. Lines are printed either way (above the bar).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import tqdm

_allowed = [True]  # a stack: the innermost bars_allowed() wins
_open_bars = [0]  # bars drawn now: a nested one is cleared when it ends, the outermost stays


@contextlib.contextmanager
def bars_allowed(allowed: bool) -> Iterator[None]:
    """Allow or forbid bars within the block (the command line's --quiet, or stdout not a terminal)."""
    _allowed.append(allowed)
    try:
        yield
    finally:
        _allowed.pop()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def format_seconds(seconds: float) -> str:
    return tqdm.format_interval(max(0.0, seconds))


class Progress:
    """``total`` units of work (``done`` of them already done, e.g. on a resume) reported to ``stream``."""

    def __init__(
        self, stream: TextIO, total: float, *, desc: str, unit: str = "it", done: float = 0, weighted: bool = False
    ) -> None:
        self.stream, self.total, self.done, self.start = stream, total, done, time.perf_counter()
        self.initial = done
        self.bar: Any = None
        if _allowed[-1] and _is_terminal(stream):
            # a weighted bar (units of expected minutes) shows percent and times, not a count of minutes
            fmt = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]" if weighted else None
            self.bar = tqdm(
                total=total,
                initial=done,
                desc=desc,
                unit=unit,
                file=stream,
                dynamic_ncols=True,
                leave=_open_bars[0] == 0,
                bar_format=fmt,
                position=_open_bars[0],
            )
            _open_bars[0] += 1

    def line(self, text: str) -> None:
        """Print a line of the command's log (above the bar when one is drawn)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def advance(self, amount: float = 1) -> None:
        self.done += amount
        if self.bar is not None:
            self.bar.update(amount)

    def times(self) -> str:
        """Elapsed time and, from the pace so far, the time left: for the plain lines."""
        elapsed = time.perf_counter() - self.start
        work = self.done - self.initial
        if work <= 0 or self.done >= self.total:
            return f"{format_seconds(elapsed)} elapsed"
        left = elapsed / work * (self.total - self.done)
        return f"{format_seconds(elapsed)} elapsed, about {format_seconds(left)} left"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            _open_bars[0] -= 1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
