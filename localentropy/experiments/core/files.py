"""The one atomic writer and the one slug rule that every result file goes through.

Every file is written to a temporary file in the same directory (``.<name>.<random>.tmp``), flushed and synced,
then renamed over the target (``os.replace`` is atomic within a directory): a reader never sees half a file, and a
killed run leaves at most a ``.*.tmp`` file that is never read as a result (a resume deletes it).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def slug(text: str) -> str:
    """``text`` as a file name: every character other than letters, digits, '_', '.' and '-' becomes '_'."""
    return _UNSAFE.sub("_", text)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; moved onto ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make results unreadable to collaborators
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a file handle whose contents replace ``path`` atomically once it returns."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    return Path(path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False, default=json_default) + "\n").encode())


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def csv_bytes(rows: list[dict[str, Any]], columns: Sequence[str]) -> bytes:
    """``rows`` as CSV with a header of ``columns`` (a missing or None value is an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return buffer.getvalue().encode()


def json_digest(data: Any, length: int = 16) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data`` as sorted JSON: equal data, equal digest."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]
