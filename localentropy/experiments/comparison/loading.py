"""Reading a comparison run back from disk (``localentropy report DIR``): its ``results.json`` validated into
:class:`~localentropy.experiments.comparison.results.Results`, every wrong field named in one message; a file written
before the verdicts were stored gets them computed here, from its records."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from localentropy.experiments.comparison.results import SCHEMAS, Results, problems_of
from localentropy.experiments.comparison.verdicts import comparison_verdicts
from localentropy.experiments.core.config import shown

__all__ = ["load_run"]


def _undefined(name: str) -> None:
    """NaN and Infinity are not JSON (this package writes null); another writer's are read as undefined (null)."""
    return None


def load_run(run_dir: Path | str) -> Results:
    """The :class:`Results` of a run directory's ``results.json`` (or of the file itself); ValueError naming the
    file, and every field that is wrong, when it cannot be read as one."""
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
        raise ValueError(f"{path} has schema {shown(data.get('schema'))}; this version reads schema {SCHEMAS}")
    records = data.get("records")
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} has no 'records' list (or it is empty)")
    if all(isinstance(r, dict) and "label" in r and "rows" in r for r in records):
        raise ValueError(
            f"{path} is the results of a `localentropy train` run, whose report.md that command writes "
            "(run it again: a complete run is skipped, an incomplete one resumes)"
        )
    try:
        results = Results.model_validate({"name": path.parent.name, **data})
    except ValidationError as exc:
        problems = "; ".join(problems_of(exc))
        raise ValueError(f"{path} is not a results.json this version can read: {problems}") from None
    if "verdicts" not in results.model_fields_set:  # written before the verdicts were stored: computed now
        results.verdicts = comparison_verdicts(results.records)
    return results
