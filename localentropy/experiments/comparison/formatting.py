"""How a comparison report writes numbers, names and figure file names (shared by its tables and figures), and its
templates (``comparison/templates/``, :data:`TEMPLATES`), whose filters are these functions."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, NamedTuple

from localentropy.experiments.comparison.results import EstimatorInfo, Record
from localentropy.experiments.core import templates
from localentropy.experiments.core.files import slug

PACKAGE = "localentropy.experiments.comparison"
DASH = "—"
MAX_FIGURE_NAME = 150  # file names are limited to 255 bytes; the atomic writer adds about 25


def fmt(value: Any) -> str:
    """3 significant digits; exact integers for counts; a dash for missing or NaN values."""
    if value is None:
        return DASH
    if isinstance(value, int):
        return str(value)
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return DASH
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def fmt_count(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # any size: never through a float (an integer beyond its range would overflow)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return fmt(value)


def md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def quoted(name: Any) -> str:
    return f"`{md(name)}`"


def figure_name(stem: str) -> str:
    """``<stem>.png`` with the stem slugged, and shortened with a hash of it when it would be too long."""
    name = slug(stem)
    if len(name) > MAX_FIGURE_NAME:
        name = f"{name[: MAX_FIGURE_NAME - 13]}_{hashlib.sha256(stem.encode()).hexdigest()[:12]}"
    return f"{name}.png"


def estimator_description(record: Record) -> str | None:
    """What a record's estimator runs: its sampler (and preset), or "smoothing, order k"; None when unknown."""
    estimator = record.estimator or EstimatorInfo()
    settings = estimator.settings
    if estimator.kind == "smoothing":
        return "smoothing" + (f", order {settings['order']}" if "order" in settings else "")
    if not estimator.sampler:
        return None
    return estimator.sampler + (f", preset {settings['preset']}" if settings.get("preset") else "")


def estimator_cell(label: str, record: Record) -> str:
    """The label, with what the estimator runs beside it when the label is not that name."""
    description = estimator_description(record)
    plain = label.rsplit("/", 1)[-1]  # a merged report prefixes the run's name
    shown = description is not None and plain != description and plain != description.replace(", ", " ")
    return quoted(label) + (f" ({md(description)})" if shown else "")


class Row(NamedTuple):
    """A record with its display label (``<run>/<estimator>`` when two merged runs have that estimator)."""

    label: str
    run: str
    run_dir: Path
    group: tuple[int, float, float]
    record: Record


# the report's filters: ``fmt``, ``count`` (:func:`fmt_count`), ``md``, ``quoted`` (escaping markdown), ``g`` and
# ``thousands`` (a number as ``:g`` and ``:,`` write it) and ``spec`` (``format(value, spec)``)
TEMPLATES = templates.Templates(
    PACKAGE,
    fmt=fmt,
    count=fmt_count,
    md=md,
    quoted=quoted,
    g=lambda value: format(value, "g"),
    thousands=lambda value: f"{value:,}",
    spec=format,
)


def render(template: str, **data: Any) -> str:
    """``comparison/templates/<template>`` rendered with ``data``, without leading or trailing blank lines."""
    return TEMPLATES.render(template, **data)
