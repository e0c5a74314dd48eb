"""Compare two run trees (e.g. two ``localentropy reproduce --quick`` outputs) for identical numbers.

    python benchmarks/compare_runs.py BEFORE AFTER [--rtol 0] [--show 20]

Every JSON file (results, records, configs, findings numbers), CSV table and ``.npy`` array present in either tree
is compared field by field, ignoring what legitimately differs between two runs of the same code: timings
(any key naming seconds, time, elapsed or timing), commit hashes, versions, machine and environment fields,
dates, command lines, and the trees' own paths (each root is replaced by ``<ROOT>``). The speed benchmark's
``speed.json`` is all timings: only its non-numeric fields (row names, settings, notes) are compared, a timing
that was not measured (None, on a busy machine) counting as a number. Figures, logs, markdown and
netCDF files are listed, not compared (their numbers are the JSON files'). Exit status 0 when identical, 1 if not.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

IGNORED_KEY = re.compile(
    r"(second|time|elapsed|duration|timing|commit|version|python|platform|machine|hostname|cpu|finished|started|"
    r"stamp|environment|load|threads_used|dropped|date|command)",
    re.IGNORECASE,
)
COMPARED = (".json", ".csv", ".npy")


def _normalise(value: Any, roots: tuple[str, ...], numbers: bool) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, roots, numbers) for k, v in value.items() if not IGNORED_KEY.search(str(k))}
    if isinstance(value, list):
        return [_normalise(v, roots, numbers) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<ROOT>")
        return value
    if value is None and not numbers:  # a timing not measured (every repeat dropped for contention)
        return "<number>"
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value if numbers else "<number>"
    return value


def _differences(a: Any, b: Any, where: str, rtol: float, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                out.append(f"{where}.{key}: only in {'after' if key not in a else 'before'}")
            else:
                _differences(a[key], b[key], f"{where}.{key}", rtol, out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _differences(x, y, f"{where}[{i}]", rtol, out)
    elif isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        same = (
            (math.isnan(a) and math.isnan(b))
            if isinstance(a, float) and math.isnan(a)
            else (a == b or (rtol > 0 and math.isclose(a, b, rel_tol=rtol)))
        )
        if not same:
            out.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        out.append(f"{where}: {str(a)[:80]!r} != {str(b)[:80]!r}")


def _load(path: Path, roots: tuple[str, ...]) -> Any:
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False).tolist()
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        return _normalise([{k: _number(v) for k, v in row.items()} for row in rows], roots, True)
    return _normalise(json.loads(path.read_text()), roots, numbers=path.name != "speed.json")


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def compare(before: Path, after: Path, rtol: float = 0.0) -> tuple[list[str], int, list[str]]:
    """(differences, files compared, files only listed)."""
    roots = (str(before.resolve()), str(after.resolve()), str(before), str(after))
    files = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files |= {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    diffs, compared, listed = [], 0, []
    for rel in sorted(files):
        if rel.name.startswith(".") or rel.name in ("COMPLETE", "timings.json"):
            continue
        a, b = before / rel, after / rel
        if not a.is_file() or not b.is_file():
            diffs.append(f"{rel}: only in {'after' if not a.is_file() else 'before'}")
            continue
        if rel.suffix not in COMPARED:
            listed.append(str(rel))
            continue
        compared += 1
        found: list[str] = []
        _differences(_load(a, roots), _load(b, roots), str(rel), rtol, found)
        diffs += found
    return diffs, compared, listed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance for numbers (default: exact)")
    parser.add_argument("--show", type=int, default=30, help="differences to print")
    args = parser.parse_args(argv)
    for tree in (args.before, args.after):
        if not tree.is_dir():
            print(f"compare_runs: {tree} is not a directory", file=sys.stderr)
            return 2
    diffs, compared, listed = compare(args.before, args.after, args.rtol)
    print(f"{compared} files compared, {len(listed)} listed only (figures, logs, markdown, netCDF)")
    for line in diffs[: args.show]:
        print("  " + line)
    print("IDENTICAL" if not diffs else f"DIFFERENT: {len(diffs)} difference(s)")
    return 0 if not diffs else 1


if __name__ == "__main__":
    sys.exit(main())
