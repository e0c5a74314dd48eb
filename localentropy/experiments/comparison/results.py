"""Reading a comparison run's ``results.json`` back, every field checked: a damaged file is one clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMAS = (1,)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _undefined(name: str) -> None:
    """NaN and Infinity are not JSON (this package writes null); another writer's are read as undefined (null)."""
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_numbers(value: Any, where: str, problems: list[str], depth: int = 0) -> None:
    """Metric-like values: null, finite numbers, and lists / tables of them (never strings: they would be shown)."""
    if value is None or _is_number(value):
        return
    if depth < 4 and isinstance(value, list):
        for i, v in enumerate(value):
            _check_numbers(v, f"{where}[{i}]", problems, depth + 1)
        return
    if depth < 4 and isinstance(value, dict):
        for k, v in value.items():
            _check_numbers(v, f"{where}.{k}", problems, depth + 1)
        return
    problems.append(f"{where}: got {type(value).__name__}, expected a number, null or a list of numbers")


def _check_record(record: Any, i: int, problems: list[str]) -> None:
    where = f"record {i}:"
    if not isinstance(record, dict):
        problems.append(f"{where} got {type(record).__name__}, expected an object")
        return
    key = record.get("key")
    if not isinstance(key, dict) or "estimator" not in key:
        problems.append(f"record {i} has no key with an 'estimator'")
        return
    if not isinstance(key["estimator"], str) or not key["estimator"]:
        problems.append(f"{where} key.estimator: got {key['estimator']!r:.60}, expected a non-empty string")
    for name, check, expected in (
        ("point", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
        ("gamma", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        ("temperature", lambda v: _is_number(v) and v > 0, "a finite number > 0"),
        ("budget", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    ):
        if not check(key.get(name)):
            problems.append(f"{where} key.{name}: got {key.get(name)!r:.60}, expected {expected}")
    if not isinstance(record.get("status"), str):
        problems.append(f"{where} status: got {record.get('status')!r:.60}, expected a string ('ok' or 'diverged')")
    if not isinstance(record.get("error"), str | None):
        problems.append(f"{where} error: got {type(record.get('error')).__name__}, expected a string or null")
    for name in ("metrics", "chains", "timing", "estimator"):
        value = record.get(name)
        if value is not None and not isinstance(value, dict):
            problems.append(f"{where} {name}: got {type(value).__name__}, expected an object or null")
        elif name == "metrics" and isinstance(value, dict):
            flags = ("truth_near_zero",)  # the one true/false field of the metrics
            for flag in flags:
                if not isinstance(value.get(flag, False), bool):
                    problems.append(f"{where} metrics.{flag}: got {value[flag]!r:.60}, expected true or false")
            _check_numbers({k: v for k, v in value.items() if k not in flags}, f"{where} {name}", problems)
        elif name != "estimator":
            _check_numbers(value, f"{where} {name}", problems)
    estimator = record.get("estimator")
    if isinstance(estimator, dict):
        for name in ("kind", "sampler"):
            if not isinstance(estimator.get(name), str | None):
                problems.append(f"{where} estimator.{name}: got {type(estimator[name]).__name__}, expected a string")
    if not (record.get("ksd") is None or _is_number(record.get("ksd"))):
        problems.append(f"{where} ksd: got {record.get('ksd')!r:.60}, expected a finite number or null")


def load_run(run_dir: Path | str) -> dict[str, Any]:
    """The parsed ``results.json`` of a run directory (or the file itself); ValueError naming the file if unusable.

    The file is checked before anything is drawn: JSON without NaN or Infinity, the schema, and every field the
    report reads with the type it needs, so that a damaged or foreign file is refused with one message.
    """
    path = Path(run_dir)
    if path.is_dir() or path.name != "results.json":
        path = path / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): not a results.json") from None
    try:
        data = json.loads(text, parse_constant=_undefined)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, or nested too deeply
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValueError(f"{path} is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    if data.get("schema") not in SCHEMAS:
        raise ValueError(f"{path} has schema {_short(data.get('schema'))}; this version reads schema {SCHEMAS}")
    records = data.get("records")
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} has no 'records' list (or it is empty)")
    if all(isinstance(r, dict) and "label" in r and "rows" in r for r in records):
        raise ValueError(
            f"{path} is the results of a `localentropy train` run, whose report.md that command writes "
            "(run it again: a complete run is skipped, an incomplete one resumes)"
        )
    problems: list[str] = []
    if not isinstance(data.get("name", ""), str):
        problems.append(f"name: got {type(data['name']).__name__}, expected a string")
    meta = data.get("meta")
    if meta is not None and not isinstance(meta, dict):
        problems.append(f"meta: got {type(meta).__name__}, expected an object")
    elif isinstance(meta, dict) and not isinstance(meta.get("versions", {}), dict):
        problems.append(f"meta.versions: got {type(meta['versions']).__name__}, expected an object")
    for i, record in enumerate(records):
        _check_record(record, i, problems)
        if len(problems) >= 10:
            break
    if problems:
        raise ValueError(f"{path} is not a results.json this version can read: " + "; ".join(problems[:10]))
    data.setdefault("name", path.parent.name)
    return data
