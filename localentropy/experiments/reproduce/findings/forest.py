"""Forest plots of replicated claims: per difference claim, the original, fresh and pooled estimates with their
95 % CIs, the zero line and the unit (one panel per unit, since points and bits do not share an axis), drawn by
:func:`localentropy.experiments.core.plots.plot_forest`, which the sweep and comparison reports use too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localentropy.experiments.core.plots import plot_forest
from localentropy.experiments.reproduce.claims import pooled_claim
from localentropy.experiments.reproduce.findings.render import claim_label

BATCHES = (("original", "tab:blue", "o"), ("fresh", "tab:orange", "s"), ("pooled", "black", "D"))


def forest_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The difference claims with an interval in at least one batch: label, unit and each batch's claim."""
    rows = []
    for e in entries:
        if e["original"]["kind"] != "difference":
            continue
        batches = {"original": e["original"], "fresh": e.get("fresh"), "pooled": pooled_claim(e)}
        batches = {k: c for k, c in batches.items() if c and c.get("mean") is not None and c.get("ci95") is not None}
        if batches:
            rows.append({"label": claim_label(e).replace("`", ""), "unit": e["original"]["unit"], **batches})
    return rows


def forest_plot(entries: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Draw the forest plot of ``entries`` (replication records' claims) into ``path``; None when no difference
    claim has an interval."""
    return plot_forest(forest_rows(entries), path, title, series=BATCHES)
