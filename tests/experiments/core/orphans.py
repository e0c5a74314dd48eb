"""Kill a command's process with SIGKILL (as a scheduler or a timeout does) and list what it leaves running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

ROOT = Path(__file__).resolve().parents[3]
READY_TIMEOUT = 180.0  # seconds for the command to reach the point where it is killed (a loaded machine)
GONE_WITHIN = 5.0  # seconds for every child to die once the parent is killed


@contextlib.contextmanager
def started(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """``python -m localentropy ARGV`` from this source tree (its output in ``cwd/out.log``); whatever the test
    does, the process and every descendant it still has are killed at the end, so that a failure leaves nothing."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    with open(cwd / "out.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localentropy", *argv],
            cwd=cwd,
            env={**os.environ, **(env or {}), "PYTHONPATH": path},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        kill_tree(proc)


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_ready(proc: subprocess.Popen, ready: Callable[[], bool], what: str, cwd: Path) -> list[psutil.Process]:
    """Wait until ``ready()``; return the process's descendants then."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (cwd / "out.log").read_text()[-3000:]
            pytest.fail(f"{what} never happened (status {proc.returncode}): {log}")
        time.sleep(0.1)
    return descendants(proc.pid)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process (if it still runs) and every descendant it has."""
    for child in [*descendants(proc.pid), psutil.Process(proc.pid)] if proc.poll() is None else []:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait()


def survivors_of_sigkill(proc: subprocess.Popen, children: list[psutil.Process]) -> list[str]:
    """SIGKILL ``proc`` alone (not its group); the children still alive ``GONE_WITHIN`` seconds later (then killed,
    so that a failing test leaves nothing behind)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + GONE_WITHIN
    while any(_alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [c for c in children if _alive(c)]
    described = []
    for child in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            described.append(f"{child.pid}: {' '.join(child.cmdline())[:160]}")
            child.kill()
    return described


def kill_when_ready(
    argv: list[str], cwd: Path, ready: Callable[[], bool], what: str, env: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Start ``localentropy ARGV``, SIGKILL it once ``ready()``; (its children's command lines then, survivors)."""
    with started(argv, cwd, env) as proc:
        children = wait_ready(proc, ready, what, cwd)
        commands = [" ".join(child.cmdline()) for child in children]
        return commands, survivors_of_sigkill(proc, children)


def launcher_and_ranks(commands: list[str]) -> tuple[int, int]:
    """How many of the command lines are torch's launcher, and how many its ranks of ``localentropy train``."""
    launchers = [c for c in commands if "torch.distributed.run" in c]
    return len(launchers), sum("localentropy train" in c for c in commands if c not in launchers)
