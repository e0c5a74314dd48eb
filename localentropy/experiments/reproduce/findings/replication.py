"""The claims of each step, and the replication of each on fresh seeds, in records and in the document's words.

``STEP_CLAIMS`` maps a step to the function reading its claims from a step directory; the same function reads the
original (``<out>/<step>``) and the fresh run (``<out>/fresh/<step>``), so the two are compared by claim id.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.rundir import MARKER
from localentropy.experiments.reproduce.claims import Claim, compare_claims, excludes_zero, pooled_claim
from localentropy.experiments.reproduce.findings.common import Lines, read_json
from localentropy.experiments.reproduce.findings.cost import cost_claims
from localentropy.experiments.reproduce.findings.forest import forest_plot
from localentropy.experiments.reproduce.findings.llc import llc_claims, llc_training_claims
from localentropy.experiments.reproduce.findings.overhead import training_claims as overhead_claims
from localentropy.experiments.reproduce.findings.recurrent import recurrent_claims
from localentropy.experiments.reproduce.findings.render import render
from localentropy.experiments.reproduce.findings.samplers import shootout_claims, training_claims
from localentropy.experiments.reproduce.findings.scale import scale_claims
from localentropy.experiments.reproduce.findings.sensitivity import scoping_claims, sensitivity_claims
from localentropy.experiments.reproduce.findings.smoothing import estimator_claims, flatness_claims
from localentropy.experiments.reproduce.fresh import FRESH_DIR, fresh_dir, results_path
from localentropy.experiments.reproduce.steps import registered_steps, select_steps

# Every run and sweep step has claims; NOT_REPLICATED says why the other steps have none.
STEP_CLAIMS: dict[str, Callable[[Path], list[Claim]]] = {
    "shootout": shootout_claims,
    "smoothing_sharp_wide": estimator_claims,
    "smoothing_quadratic": estimator_claims,
    "flatness": flatness_claims,
    "cost": cost_claims,
    "samplers_training": training_claims,
    "sensitivity": sensitivity_claims,
    "scoping": scoping_claims,
    "overhead_training": overhead_claims,
    "recurrent_char": recurrent_claims,
    "recurrent_row": recurrent_claims,
    "scale": scale_claims,
    "llc_samplers": llc_claims,
    "llc_training": llc_training_claims,
}


def claim_steps() -> tuple[str, ...]:
    """The registered steps with claims to replicate, in the order they run (the default of --fresh-seeds)."""
    return tuple(s.name for s in registered_steps() if s.name in STEP_CLAIMS)


def step_claims(out: Path) -> dict[str, list[Claim]]:
    """Every claim of the complete steps in ``out`` (a reproduction directory), by step."""
    return {name: read(out / name) for name, read in STEP_CLAIMS.items() if (out / name / MARKER).is_file()}


def step_counts(claims: list[dict[str, Any]]) -> dict[str, Any]:
    """What a step's replication record counts: claims consistent / inconsistent / not comparable between the
    batches, and where the pooled differences lie (above or below 0 beyond their 95 % CI, or holding 0)."""
    pooled = [p for c in claims if c["original"]["kind"] == "difference" and (p := pooled_claim(c)) is not None]
    above = sum(excludes_zero(p) and p["mean"] > 0 for p in pooled)
    below = sum(excludes_zero(p) and p["mean"] < 0 for p in pooled)
    return {
        "total": len(claims),
        "consistent": sum(c["consistent"] is True for c in claims),
        "inconsistent": sum(c["consistent"] is False for c in claims),
        "not_comparable": sum(c["consistent"] is None for c in claims),
        "directions": {"differences": len(pooled), "above": above, "below": below, "hold": len(pooled) - above - below},
    }


def step_record(fresh_seeds: dict[str, Any], original: list[Claim], fresh: list[Claim]) -> dict[str, Any]:
    """One replicated step: its fresh seeds, every claim compared (consistency, pooled estimate) and the counts."""
    claims = compare_claims(original, fresh)
    return {"fresh_seeds": fresh_seeds, "claims": claims, **step_counts(claims)}


def replicated_claims(out: Path) -> dict[str, Any]:
    """Per step with both an original and a complete fresh run in ``out``: :func:`step_record`."""
    record = {}
    for name, read in STEP_CLAIMS.items():
        original, fresh = out / name, fresh_dir(out, name)
        if not ((original / MARKER).is_file() and (fresh / MARKER).is_file()):
            continue
        seeds = read_json(results_path(fresh)).get("fresh_seeds", {})
        record[name] = step_record(seeds, read(original), read(fresh))
    return record


def replication_lines(record: dict[str, Any], steps: tuple[str, ...]) -> Lines:
    """Per step in ``steps`` with a fresh run: the counts and a table of each claim's original, fresh and pooled
    estimates and the batches' consistency."""
    return [
        line
        for name in steps
        if record.get(name)
        for line in (render("replication_step.md.j2", name=name, r=record[name]), "")
    ]


# The steps without claims, and why a fresh seed has nothing to replicate in them.
NOT_REPLICATED = {
    "smoothing_targets": "exact quadrature and closed forms: no seed",
    "overhead_accuracy": "each relative error is a mean ± sd over its replicates; `--fresh-seeds` reruns run and "
    "sweep steps, not this computation",
    "overhead_speed": "timings: the spread is over interleaved repeats of one process, not over seeds",
    "atlas": "the samplers' accuracy atlas of docs/samplers.md, judged there with its own replicates",
    "scale_compute": "timings of one pass (repeats), input to a projection",
}


def replication_overview(record: dict[str, Any], minutes: dict[str, float] | None = None) -> Lines:
    """One row per step with claims: the fresh units it was rerun on, the claims consistent, inconsistent or not
    comparable between the batches, where the pooled differences lie, and the rerun's minutes; then the steps
    without claims and why."""
    minutes = minutes or {}
    rows = [
        {
            "name": step.name,
            "section": step.section,
            "record": record.get(step.name),
            "minutes": f"{minutes[step.name]:.1f}" if step.name in minutes else None,
        }
        for step in registered_steps()
        if step.name in STEP_CLAIMS
    ]
    return render("replication_overview.md.j2", rows=rows, skipped=NOT_REPLICATED).split("\n")


def replication_markdown(record: dict[str, Any]) -> str:
    """``fresh/replication.md``: the tables of :func:`replication_lines` for every replicated step."""
    lines = ["# Replication on fresh seeds", "", CONSISTENCY, ""]
    for name in record:
        lines += [f"## {name}", "", *replication_lines(record, (name,))]
    return "\n".join(lines)


CONSISTENCY = (
    "Each claim is judged twice. **Consistency** between the two batches: for a difference, Welch's t-test of "
    "the original and fresh means (unequal variances) at 5 %; for a verdict, whether the two best sets share a "
    "candidate (a batch of fewer replicates ties more often, so only disjoint best sets contradict each other). "
    "The **pooled** estimate is the claim's own statistic over the union of both batches' units: for a "
    "difference, the paired t-interval over all seeds (or replicates), derived exactly from each batch's n, mean "
    "and sd; for a verdict, the best set over every replicate (where the per-replicate values are stored). Each "
    "claim is tested on its own at 5 %: about 1 in 20 consistent claims reads inconsistent by chance."
)


def write_replication(out: Path) -> dict[str, Any]:
    """Compare every claim of the steps with a fresh run in ``out``; write ``fresh/replication.json`` and
    ``fresh/replication.md``; returns the record (step -> its fresh seeds and the claims compared)."""
    record = replicated_claims(out)
    if record:
        atomic_write_json(out / FRESH_DIR / "replication.json", record)
        atomic_write_bytes(out / FRESH_DIR / "replication.md", replication_markdown(record).encode())
    return record


# claims the summary of a section repeats (id prefixes): their pooled estimate goes beside them there too
SUMMARY_CLAIMS = {
    "cost": ("cost/",),
    "smoothing": (
        "flatness/test_error: entropy-sgd (sgld) - lpf-sgd",
        "flatness/top_eigenvalue: entropy-sgd (sgld) - lpf-sgd",
    ),
    "samplers": ("shootout/",),
    "overhead": ("overhead_training/noise:",),
    "recurrent": ("recurrent_char/entropy-sgd - sgd: final", "recurrent_row/entropy-sgd - sgd: final"),
    "scale": ("scale/parle - entropy-sgd-ddp", "scale/parle - sgd-ddp"),  # Parle beside the Entropy-SGD it runs
}


def section_steps(section: str, record: dict[str, Any]) -> tuple[str, ...]:
    return tuple(s.name for s in select_steps(None) if s.section == section and s.name in record)


def headline_claims(section: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The replicated claims a section's summary repeats (:data:`SUMMARY_CLAIMS`), in step order."""
    prefixes = SUMMARY_CLAIMS.get(section, ())
    return [
        c for name in section_steps(section, record) for c in record[name]["claims"] if c["id"].startswith(prefixes)
    ]


def section_forest(section: str, record: dict[str, Any], figures: Path | None) -> str | None:
    """``<figures>/forest_<section>.png`` of every replicated claim of the section; its path relative to the
    document, or None (no figures folder, or no difference claim)."""
    entries = [c for name in section_steps(section, record) for c in record[name]["claims"]]
    if figures is None or not entries:
        return None
    path = forest_plot(entries, figures / f"forest_{section}.png", f"{section}: original, fresh and pooled estimates")
    return f"{figures.name}/{path.name}" if path else None


def summary_forest(record: dict[str, Any], figures: Path, sections: tuple[str, ...]) -> str | None:
    """``<figures>/forest_summary.png``: every headline claim of the summary (its path, or None)."""
    entries = [c for section in sections for c in headline_claims(section, record)]
    path = forest_plot(entries, figures / "forest_summary.png", "Headline claims: original, fresh and pooled")
    return f"{figures.name}/{path.name}" if path else None


def with_replication(
    body: Lines, summary: str, section: str, record: dict[str, Any], figures: Path | None = None
) -> tuple[Lines, str]:
    """A section with its steps' replication blocks (and forest plot) appended, and its summary told the
    consistency and pooled estimate of its headline claims."""
    names = section_steps(section, record)
    if not names:
        return body, summary
    forest = section_forest(section, record, figures)
    body = [*body, *replication_lines(record, names)]
    if forest:
        body += [
            f"![{section}: original, fresh and pooled estimate of every replicated difference, 95 % CIs]({forest})",
            "",
        ]
    steps = {n: record[n] for n in names}
    note = render("replication_summary.md.j2", steps=steps, headline=headline_claims(section, record))
    return body, f"{summary} Replication: {note}"
