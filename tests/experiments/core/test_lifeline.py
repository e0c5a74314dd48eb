"""The lifeline (localentropy.experiments.core.lifeline): a child that dies with its parent, through the kernel's
parent-death signal and through the portable watchdog; a parent already gone; the command that runs a module
under a lifeline. The processes here are plain Python ones that load the module's file alone (no torch import)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from localentropy.experiments.core import lifeline
from tests.experiments.core.orphans import ROOT, descendants, survivors_of_sigkill

MODULE = Path(lifeline.__file__)

# a parent that starts one child with a lifeline to it, reports the child's pid, and sleeps
PARENT = textwrap.dedent(
    """
    import os, subprocess, sys, time
    child = '''
    import os, runpy, sys, time
    line = runpy.run_path(sys.argv[1])
    {call}
    print("ready", flush=True)
    time.sleep(120)
    '''
    command = [sys.executable, "-c", child, sys.argv[1], str(os.getpid())]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    print(proc.pid, flush=True)
    time.sleep(120)
    """
)


def _parent_and_child(call: str) -> tuple[subprocess.Popen, list]:
    code = PARENT.replace("{call}", call)
    proc = subprocess.Popen([sys.executable, "-c", code, str(MODULE)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    (found,) = descendants(proc.pid)
    assert found.pid == child
    return proc, [found]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_kernel_kills_the_child_when_the_parent_is_killed() -> None:
    proc, children = _parent_and_child('line["die_with_parent"](int(sys.argv[2]))')
    assert survivors_of_sigkill(proc, children) == []


def test_the_watchdog_kills_the_child_when_the_parent_is_killed() -> None:
    """The fallback where there is no prctl: a thread that polls getppid()."""
    proc, children = _parent_and_child('line["watch_parent"](int(sys.argv[2]), poll=0.1)')
    assert survivors_of_sigkill(proc, children) == []


def test_a_child_whose_parent_is_already_gone_dies_at_once() -> None:
    """The race: the parent died before the child set its lifeline (the child was adopted meanwhile)."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    code = f"import runpy; runpy.run_path({str(MODULE)!r})['die_with_parent']({gone.pid}); print('alive')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGKILL and "alive" not in done.stdout


def test_a_child_of_a_living_parent_runs_on() -> None:
    code = f"import os, runpy; runpy.run_path({str(MODULE)!r})['die_with_parent'](os.getppid()); print('alive')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "alive\n"


def test_lifeline_command_runs_the_module_as_main_and_exports_its_pid(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(
        "import json, os, sys\n"
        "if __name__ == '__main__':\n"
        f"    print(json.dumps([sys.argv[1:], os.getpid(), os.environ[{lifeline.LIFELINE_ENV!r}]]))\n"
    )
    command = lifeline.lifeline_command("probe", ["--a", "b c"])
    assert command[:3] == [sys.executable, "-m", "localentropy.experiments.core.lifeline"]
    assert command[3:5] == [str(os.getpid()), "SIGKILL"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=True)
    argv, pid, exported = json.loads(done.stdout)
    assert argv == ["--a", "b c"] and exported == str(pid)


def test_launcher_parent_takes_the_exported_pid_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(lifeline.LIFELINE_ENV, "12345")
    assert lifeline.launcher_parent() == 12345
    assert lifeline.LIFELINE_ENV not in os.environ  # this process's own children do not read it as theirs
    assert lifeline.launcher_parent() == os.getppid()


def test_the_watchdog_signals_once_the_parent_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(lifeline.os, "kill", lambda pid, signum: sent.append((pid, signum)))
    thread = lifeline.watch_parent(os.getppid() + 1, signal.SIGTERM, poll=0.01)  # not our parent: already "gone"
    thread.join(timeout=5)
    assert sent == [(os.getpid(), signal.SIGTERM)]
