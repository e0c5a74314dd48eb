"""Child processes that die with their parent: nothing this package starts outlives the process that started it.

A sweep, a tuning job or ``localentropy train --nproc`` killed with SIGKILL (as a scheduler or a timeout kills)
cannot stop its children itself. Without a lifeline its pool workers would finish their current run and then sleep
on a pipe for as long as the machine runs (with the resource tracker that their pipe keeps open), and torch's
launcher would train on to the end. Every child this package starts therefore calls :func:`die_with_parent` first:

* on Linux the kernel sends the child a signal when its parent exits: ``prctl(PR_SET_PDEATHSIG, sig)``
  (man 2 prctl). The "parent" there is the *thread* that started the child: here always the thread that waits for
  the children's work (the one that submits to the pool, or waits for torch's launcher), so it outlives them. The
  setting is kept across ``execve``.
* the parent may die before the child sets it (the child is then already an orphan): the child compares
  ``os.getppid()`` with the parent's pid that it was given, right after setting it, and signals itself if they
  differ.
* where ``prctl`` is missing (macOS and the BSDs, or a sandbox that refuses it) a daemon thread polls
  ``os.getppid()`` every ``poll`` seconds and signals the process when the parent is gone (an orphan is adopted,
  so the pid changes). Not on Windows, where a child keeps its dead parent's pid: there is no lifeline there.

``python -m localentropy.experiments.core.lifeline PARENT SIGNAL MODULE ARGS...`` runs ``python -m MODULE ARGS...``
in a process with a lifeline to ``PARENT``: :func:`lifeline_command` builds it (torch's launcher, the speed
benchmark). That process exports its own pid in :data:`LIFELINE_ENV` for its children (the launcher's ranks), so
that they too can check for the race above.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LIFELINE_ENV = "LOCALENTROPY_LIFELINE_PID"  # the pid of a process run under the lifeline, for its children
DEFAULT_POLL = 1.0
KILL = getattr(signal, "SIGKILL", signal.SIGTERM)  # Windows has no SIGKILL


def _kernel_lifeline(signum: int) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent exits; whether the kernel took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc to load, or no prctl in it
        return False


def watch_parent(parent: int, signum: int = KILL, poll: float = DEFAULT_POLL) -> threading.Thread:
    """Start a daemon thread that sends ``signum`` to this process once ``parent`` is no longer its parent.

    The portable fallback of :func:`die_with_parent`: an orphan is adopted by another process (init or a
    subreaper), so ``os.getppid()`` changes when the parent dies; the signal arrives within ``poll`` seconds."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, name="localentropy-lifeline", daemon=True)
    thread.start()
    return thread


def die_with_parent(parent: int | None = None, signum: int = KILL, poll: float = DEFAULT_POLL) -> None:
    """End this process with ``signum`` when ``parent`` (the pid that started it; default ``os.getppid()``) dies.

    The kernel's parent-death signal where there is one, else :func:`watch_parent`; a parent that is already gone
    (``os.getppid() != parent``) ends this process now. SIGKILL (the default) ends a worker wherever it is, asleep
    on a pipe or inside a collective (a process that handles SIGTERM may take its time over it). Pass the parent's
    pid when the child knows it: ``os.getppid()`` taken here is already the adopting process's if the parent died
    while the child was starting."""
    parent = os.getppid() if parent is None else int(parent)
    if not _kernel_lifeline(signum):
        watch_parent(parent, signum, poll)
    if os.getppid() != parent:  # the parent died before the lifeline was set: nothing would signal us
        os.kill(os.getpid(), signum)


def launcher_parent() -> int:
    """The pid of the process that started this one, as :func:`lifeline_command` exported it (else the parent's).

    The variable is taken out of this process's environment, so that its own children do not read it as theirs."""
    with contextlib.suppress(KeyError, ValueError):
        return int(os.environ.pop(LIFELINE_ENV))
    return os.getppid()


def lifeline_command(module: str, args: list[str], signum: int = KILL) -> list[str]:
    """``python -m MODULE ARGS...`` in a process that gets ``signum`` when this process dies."""
    name = signal.Signals(signum).name
    return [sys.executable, "-m", __name__, str(os.getpid()), name, module, *args]


def main(argv: list[str]) -> None:
    """Set the lifeline to ``PARENT`` with ``SIGNAL``, then run ``MODULE`` as ``__main__`` with ``ARGS``."""
    parent, name, module, *args = argv
    die_with_parent(int(parent), signal.Signals[name])
    os.environ[LIFELINE_ENV] = str(os.getpid())
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
