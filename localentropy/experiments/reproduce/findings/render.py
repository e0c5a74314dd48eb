"""Prose rendered from data: the Jinja2 templates of the findings (``templates/``) and the check that a
rendered document states no number its record lacks.

A template receives the records of findings.json (claims, their replication, the steps' provenance) and the
filters below; a sentence that states a fact sits inside a condition on the datum it states, so a run without
it prints no such sentence. :func:`unsupported_numbers` lists the numbers of a markdown text that appear
nowhere in a record (up to the rounding of the digits shown; a mean or sd of a stored list of per-unit values
counts), which a test holds at none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from localentropy.diagnostics.compare import sample_sd
from localentropy.experiments.core import templates
from localentropy.experiments.reproduce.claims import claim_text, consistency_text, outcome_text, pooled_claim
from localentropy.experiments.reproduce.findings.common import distinct, fmt, pm, short
from localentropy.experiments.sweeps.timing import measured_text

PACKAGE = "localentropy.experiments.reproduce.findings"
NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?(?:e[+-]?\d+)?")
# a number shown as a percentage (x 100), as minutes of stored seconds (/ 60), or as stored
SCALES = (1.0, 100.0, 1 / 60)


def timed_text(t: dict[str, Any]) -> str:
    """How the seconds of a ratio were measured, from the sweep's timing record (None: not recorded)."""
    timing = t.get("timing")
    if timing is None:
        return "how the runs were timed was not recorded"
    alone = "timed alone" if timing["alone"] else "not timed alone"
    if timing.get("other_cores_max") is not None:  # measured during the runs (records before it: the load average)
        most = timing["other_cores_max"]
        return f"runs {timing['runs_at_a_time']} at a time, other processes using at most {most:.2f} cores: {alone}"
    return "runs timed alone" if timing["alone"] else f"runs {timing['runs_at_a_time']} at a time: not timed alone"


def timed_runs_text(timing: dict[str, Any] | None) -> str:
    """The conditions of a sweep's timed runs, from its timing record (None: not recorded)."""
    if timing is None:
        return "measured in runs whose conditions (how many ran at a time, the machine's load) were not recorded"
    load = (
        f", the machine's 1-minute load average {timing['load_start']:.1f} when they started and "
        f"{timing['load_end']:.1f} when they ended"
        if timing.get("load_start") is not None and timing.get("load_end") is not None
        else ""
    )
    alone = "timed alone" if timing["alone"] else "not timed alone"
    runs = timing["runs_at_a_time"]
    return f"measured with {runs} run{'s' if runs != 1 else ''} at a time{load}{measured_text(timing)}: {alone}"


def paired_text(d: dict[str, Any], a: str, b: str, scale: float = 100.0, unit: str = " points") -> str:
    """A sentence on a paired difference in test error: direction, size, interval and the seed count (the
    ``paired`` macro of ``templates/_macros.md.j2``, which the sections' templates call)."""
    return str(TEMPLATES.macros().paired(d, a, b, scale, unit))


def section_text(name: str, view: dict[str, Any]) -> tuple[list[str], str]:
    """A findings section's body (lines) and summary item, rendered from its view (the section's record in
    findings.json) by ``templates/sections/<name>.md.j2`` and ``<name>_summary.md.j2``."""
    body = render(f"sections/{name}.md.j2", **view)
    return [*body.split("\n"), ""], render(f"sections/{name}_summary.md.j2", **view)


def claim_label(entry: dict[str, Any]) -> str:
    """A claim's label unique across the document: its step (the id's prefix) and its text."""
    claim = entry.get("original", entry)
    return f"`{claim['id'].split('/')[0]}`: {claim['text']}"


TEMPLATES = templates.Templates(
    PACKAGE,
    claim=claim_text,
    outcome=outcome_text,
    consistency=consistency_text,
    pooled=pooled_claim,
    label=claim_label,
    minutes=lambda seconds: f"{seconds / 60:.1f}",
    pm=pm,
    fmt=fmt,
    percent=lambda value: "—" if value is None else f"{100 * value:.1f} %",
    short=short,
    distinct=distinct,
    timed=timed_text,
    timed_runs=timed_runs_text,
)


def render(template: str, **data: Any) -> str:
    """The template ``templates/<template>`` rendered with ``data``."""
    return TEMPLATES.render(template, **data)


def record_numbers(record: Any) -> np.ndarray:
    """Every finite number in a JSON record: values, numeric keys, numbers inside strings, and the mean and sample
    sd of every list of numbers (a table's "mean ± sd" over the stored per-unit values)."""
    out: list[float] = []

    def summarise(values: list[Any]) -> None:
        """The mean and sd of a list (or map) of plain numbers: a table's "mean ± sd" over stored units."""
        units = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(units) >= 2 and len(units) == len(values) and all(math.isfinite(v) for v in units):
            out.extend((float(np.mean(units)), sample_sd(np.asarray(units))))

    def walk(x: Any) -> None:
        if isinstance(x, bool) or x is None:
            return
        if isinstance(x, int | float):
            if math.isfinite(x):
                out.append(float(x))
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(str(k))
                walk(v)
            summarise(list(x.values()))  # a map unit -> value (seed -> test error)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)
            summarise(list(x))
        elif isinstance(x, str):
            out.extend(_value(m) for m in NUMBER.findall(x))

    walk(record)
    return np.unique(np.asarray(out, float))


def _value(token: str) -> float:
    return float(token.replace(",", ""))


def _tolerance(token: str) -> float:
    """Half a unit of the last digit shown (a relative half unit for "1.2e-05"; 3 significant digits at least)."""
    mantissa = token.split("e")[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if "e" in token:
        return abs(_value(token)) * 0.5 * 10.0 ** (-decimals)
    return 0.5 * 10.0**-decimals


def unsupported_numbers(markdown: str, record: Any, ignore: Iterable[str] = ()) -> list[str]:
    """The numbers of ``markdown`` (outside code spans and link targets) that match no number of ``record`` up to
    the rounding of their shown digits, at any of :data:`SCALES`; ``ignore``: tokens that are names, not data."""
    values = record_numbers(record)
    text = re.sub(r"`[^`]*`", "", markdown)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    missing = []
    for token in NUMBER.findall(text):
        if token in ignore:
            continue
        v, tol = abs(_value(token)), _tolerance(token) * (1 + 1e-9)
        if not any(np.any(np.abs(np.abs(values) * s - v) <= tol) for s in SCALES):
            missing.append(token)
    return missing
