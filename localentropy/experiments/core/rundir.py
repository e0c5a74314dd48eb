"""Run directories: the rules every command that writes results follows.

* ``--out DIR`` (default ``runs/<config name>``) holds ``config.json`` (the resolved config), the results and a
  completion marker ``COMPLETE``, written last. A directory without it is plainly incomplete.
* Every file is written atomically: to a temporary file in the same directory (``.<name>.<random>.tmp``),
  flushed, then renamed. A killed run may leave such temporary files; they are never read as results, and a
  resume deletes them.
* A re-run into a complete directory is skipped (and says so) unless ``force``; a re-run into an incomplete one
  resumes: pieces of work saved under ``records/`` are not redone. A directory holding a run of a different
  config (complete or not) is refused, as is a non-empty directory without ``config.json`` (with or without
  ``force``: its files would be overwritten or deleted). ``force`` deletes only a run of the same config name.
  A directory that cannot be created or written is refused as bad input too (:class:`RunDirectoryError`, exit
  status 2).
* One command at a time: :meth:`RunDirectory.prepare` locks the directory (``.lock``, a ``filelock`` lock that the
  operating system releases if the process dies) and records the holder (pid, host, command) in
  ``.lock.holder.json``; a second command on it stops at once with a :class:`RunDirectoryError` naming the
  holder. The process that launches worker processes holds the lock of the directory they write into.
* The directory is checked once, by :meth:`RunDirectory.prepare`, under the lock (nothing can change it between
  the check and the run); a refused directory keeps no lock file that the refusal created.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from localentropy.entropy.optim.chunks import DEFAULT_NOISE_STREAM
from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json, json_default

MARKER = "COMPLETE"
LOCK = ".lock"
HOLDER = ".lock.holder.json"  # who holds the lock: read by the command that finds the directory in use


class RunDirectoryError(ValueError):
    """The run directory cannot be used as asked (e.g. it holds another config's partial run)."""


def git_commit() -> str | None:
    """The commit of the source tree this package runs from, when it is a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def environment(device: str = "cpu") -> dict[str, Any]:
    """Versions, device and commit to record beside every result."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("localentropy", "torch", "numpy", "scipy", "arviz-base", "arviz-stats", "xarray"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "versions": versions,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        # which Gaussian/Rademacher streams the Entropy-SGD inner loop draws by default (an optimizer's own
        # ``noise_stream`` option, when a config sets one, is in the recorded config)
        "noise_stream": DEFAULT_NOISE_STREAM,
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


def is_temporary(path: Path) -> bool:
    """A file being written atomically (``.<name>.<random>.tmp``): never a result, whatever its content."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _user_files(directory: Path) -> list[Path]:
    """What a directory holds besides its lock and the temporary files of a run killed before config.json."""
    return [p for p in directory.iterdir() if not is_temporary(p) and p.name not in (LOCK, HOLDER)]


def _in_use(path: Path) -> str:
    """The refusal of a directory another command holds, naming the holder from the lock's sidecar file."""
    try:
        holder = json.loads((path / HOLDER).read_text())
        who = f"pid {holder['pid']} on {holder['host']} since {holder['since']}, running `{holder['command']}`"
    except (OSError, ValueError, KeyError, TypeError):
        who = "another process (its details are not recorded yet)"
    return f"{path} is in use by {who}; wait for it to finish or choose another --out"


def remove_temporary_files(directory: Path) -> list[Path]:
    """Delete the temporary files a killed run left in ``directory`` and its subdirectories (two levels)."""
    removed = []
    for pattern in (".*.tmp", "*/.*.tmp", "*/*/.*.tmp"):
        for path in directory.glob(pattern):
            if path.is_file() and is_temporary(path):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: FileLock | None = None
        self._created: list[Path] = []  # what acquire() created (the lock file, the directory): a refusal removes it

    def acquire(self) -> None:
        """Lock the directory (creating it) for this process; in use by another: RunDirectoryError at once."""
        if self._lock is not None:
            return
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"--out {self.path} exists and is not a directory")
        self._created = [] if self.path.is_dir() else [self.path]
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / LOCK).exists():
            self._created.insert(0, self.path / LOCK)
        lock = FileLock(str(self.path / LOCK), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirectoryError(_in_use(self.path)) from None
        self._lock = lock
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join(sys.argv),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        atomic_write_json(self.path / HOLDER, holder)

    def check_free(self) -> None:
        """Refuse at once (before any slow preparation) a directory that another command holds now."""
        try:
            if self._lock is not None or not (self.path / LOCK).is_file():
                return
        except OSError:  # a name too long, a parent that is a file...: prepare() reports it
            return
        probe = FileLock(str(self.path / LOCK), timeout=0)
        try:
            probe.acquire()
        except Timeout:
            raise RunDirectoryError(_in_use(self.path)) from None
        except OSError:  # unreadable: prepare() reports it
            return
        probe.release()

    def release(self) -> None:
        if self._lock is None:
            return
        (self.path / HOLDER).unlink(missing_ok=True)
        self._lock.release()
        self._lock = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDirectory]:
        """Hold the directory's lock for the block (a lock this object already holds is kept after it)."""
        held = self._lock is not None
        self.acquire()
        try:
            yield self
        finally:
            if not held:
                self.release()

    @property
    def complete(self) -> bool:
        return (self.path / MARKER).is_file()

    @property
    def records(self) -> Path:
        return self.path / "records"

    def prepare(self, resolved_config: dict[str, Any], *, force: bool = False) -> str:
        """Make the directory ready; returns "skip" (complete, not forced), "resume" or "fresh".

        Raises :class:`RunDirectoryError` (bad input, exit status 2) when the directory cannot be used: in use by
        another command, not a directory, not creatable or writable, another config's run, ``force`` on a run of
        another config name, or a non-empty directory that is not a run directory (its files could be
        overwritten). The directory stays locked until :meth:`release` (or the end of :meth:`locked`).
        """
        held = self._lock is not None
        try:
            self.acquire()
            return self._prepare(resolved_config, force)
        except BaseException as exc:
            if not held:  # refused: the lock goes with the refusal, and what acquiring it created
                self.release()
                self._remove_created()
            if not isinstance(exc, OSError):
                raise
            # a parent that is a file, no permission, a name too long, a read-only disk...
            reason = exc.strerror or str(exc)
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(self.path) else ""
            raise RunDirectoryError(f"--out {self.path}: cannot use it as the run directory: {reason}{where}") from None

    def _remove_created(self) -> None:
        """Remove the lock file and directory that :meth:`acquire` created (a directory only while empty)."""
        for path in self._created:
            with contextlib.suppress(OSError):
                path.rmdir() if path == self.path else path.unlink()
        self._created = []

    def _check(self, force: bool) -> None:
        """The one check of the directory, under its lock: refused when it holds files but no run."""
        if not (self.path / "config.json").is_file() and _user_files(self.path):
            action = "--force would delete" if force else "a run would write into"
            raise RunDirectoryError(
                f"{action} {self.path}, which is not empty and is not a run directory (no config.json); "
                "choose another --out"
            )

    def _prepare(self, resolved_config: dict[str, Any], force: bool) -> str:
        self._check(force)
        config_file = self.path / "config.json"
        if force and config_file.is_file():
            previous = _config_name(config_file)
            if previous != resolved_config.get("name"):
                raise RunDirectoryError(
                    f"--force would delete {self.path}, a run of config {previous or '(unnamed)'!r}, not of "
                    f"{resolved_config.get('name') or '(unnamed)'!r}: choose another --out, or delete it yourself"
                )
        if force:
            for child in [p for p in self.path.iterdir() if p.name not in (LOCK, HOLDER)]:  # all but the lock
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        state = "fresh"
        if config_file.is_file():
            if self.holds_other_config(resolved_config):
                which = "a complete" if self.complete else "an incomplete"
                raise RunDirectoryError(
                    f"{self.path} holds {which} run of a different config; use --force to start over or another --out"
                )
            if self.complete:
                return "skip"
            state = "resume"
            remove_temporary_files(self.path)  # left by a killed run: never results, never read
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / MARKER).unlink(missing_ok=True)
        atomic_write_json(config_file, resolved_config)
        return state

    def holds_other_config(self, resolved_config: dict[str, Any]) -> bool:
        """Whether the directory's ``config.json`` exists and records another config (an unreadable one counts)."""
        config_file = self.path / "config.json"
        if not config_file.is_file():
            return False
        try:
            previous = json.loads(config_file.read_text())
        except (OSError, ValueError):
            return True
        return previous != json.loads(json.dumps(resolved_config, default=json_default))

    def load_record(self, record_id: str) -> dict[str, Any] | None:
        path = self.records / f"{record_id}.json"
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):  # JSONDecodeError, UnicodeDecodeError
            return None  # a torn or foreign record: redo it
        return record if isinstance(record, dict) else None

    def save_record(self, record_id: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.records / f"{record_id}.json", record)

    def mark_complete(self) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_bytes(self.path / MARKER, f"completed {stamp}\n".encode())


def _config_name(config_file: Path) -> str | None:
    """The name recorded in a run's config.json (None when it has none or cannot be read)."""
    try:
        previous = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    return previous.get("name") if isinstance(previous, dict) else None


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN: a non-finite number (e.g. R-hat of a single chain) is stored as null, never as a result."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value
