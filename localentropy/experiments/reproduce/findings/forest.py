"""Forest plots of replicated claims: per difference claim, the original, fresh and pooled estimates with their
95 % CIs, the zero line and the unit (one panel per unit, since points and bits do not share an axis)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from localentropy.experiments.core.files import atomic_path
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
    rows = forest_rows(entries)
    if not rows:
        return None
    units = list(dict.fromkeys(r["unit"] for r in rows))
    heights = [sum(r["unit"] == u for r in rows) for u in units]
    size = (12, 1.4 + 0.5 * sum(heights) + 0.8 * len(units))
    fig, axes = plt.subplots(len(units), 1, figsize=size, gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, unit in zip(axes[:, 0], units, strict=True):
        mine = [r for r in rows if r["unit"] == unit]
        for i, row in enumerate(mine):
            y = len(mine) - 1 - i
            for offset, (batch, colour, marker) in zip((0.22, 0.0, -0.22), BATCHES, strict=True):
                c = row.get(batch)
                if c is None:
                    continue
                ax.errorbar(
                    c["mean"], y + offset, xerr=c["ci95"], fmt=marker, color=colour, ms=4, capsize=2, label=batch
                )
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_yticks(range(len(mine)), [textwrap.fill(r["label"], 50) for r in reversed(mine)], fontsize=7)
        ax.set_xlabel(f"difference ({unit or 'the measure itself'}), mean and 95 % CI over the units")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize=8, loc="upper right", ncols=3)
    fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
