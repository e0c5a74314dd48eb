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
from localentropy.experiments.reproduce.claims import Claim, claim_text, compare_claims, excludes_zero, outcome_text
from localentropy.experiments.reproduce.findings.common import Lines, read_json, table
from localentropy.experiments.reproduce.findings.cost import cost_claims
from localentropy.experiments.reproduce.findings.overhead import training_claims as overhead_claims
from localentropy.experiments.reproduce.findings.recurrent import recurrent_claims
from localentropy.experiments.reproduce.findings.samplers import shootout_claims, training_claims
from localentropy.experiments.reproduce.findings.scale import scale_claims
from localentropy.experiments.reproduce.findings.sensitivity import scoping_claims, sensitivity_claims
from localentropy.experiments.reproduce.findings.smoothing import estimator_claims, flatness_claims
from localentropy.experiments.reproduce.fresh import FRESH_DIR, fresh_dir
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
}


def claim_steps() -> tuple[str, ...]:
    """The registered steps with claims to replicate, in the order they run (the default of --fresh-seeds)."""
    return tuple(s.name for s in registered_steps() if s.name in STEP_CLAIMS)


def step_claims(out: Path) -> dict[str, list[Claim]]:
    """Every claim of the complete steps in ``out`` (a reproduction directory), by step."""
    return {name: read(out / name) for name, read in STEP_CLAIMS.items() if (out / name / MARKER).is_file()}


def replicated_claims(out: Path) -> dict[str, Any]:
    """Per step with both an original and a complete fresh run in ``out``: the fresh seeds and every claim
    compared (``held``: True / False / None, ``changes``)."""
    record = {}
    for name, read in STEP_CLAIMS.items():
        original, fresh = out / name, fresh_dir(out, name)
        if not ((original / MARKER).is_file() and (fresh / MARKER).is_file()):
            continue
        seeds = read_json(fresh / "results.json").get("fresh_seeds", {})
        claims = compare_claims(read(original), read(fresh))
        record[name] = {"fresh_seeds": seeds, "claims": claims,
                        "held": sum(c["held"] is True for c in claims), "total": len(claims)}  # fmt: skip
    return record


def fresh_directions(step_record: dict[str, Any]) -> str:
    """What the fresh run's differences say on their own: how many lie above 0 and below 0 beyond their 95 %
    interval, and how many hold 0 (empty when the step has no difference claims)."""
    fresh = [c["fresh"] for c in step_record["claims"] if c["fresh"] is not None and c["fresh"]["kind"] == "difference"
             and c["fresh"]["mean"] is not None and c["fresh"]["ci95"] is not None]  # fmt: skip
    if not fresh:
        return ""
    above = sum(excludes_zero(c) and c["mean"] > 0 for c in fresh)
    below = sum(excludes_zero(c) and c["mean"] < 0 for c in fresh)
    return (f"on the fresh seeds {above} of the {len(fresh)} differences lie above 0 beyond their 95 % interval, "
            f"{below} below, {len(fresh) - above - below} hold 0")  # fmt: skip


def _fresh_words(step_record: dict[str, Any]) -> str:
    seeds = step_record["fresh_seeds"]
    return f"{seeds.get('k', '?')} fresh {seeds.get('unit', 'seed')}s"


def outcome(step_record: dict[str, Any], entry: dict[str, Any]) -> str:
    seeds = step_record["fresh_seeds"]
    return outcome_text(entry, seeds.get("k", 0), seeds.get("unit", "seed") + "s")


def replication_lines(record: dict[str, Any], steps: tuple[str, ...]) -> Lines:
    """A table per step in ``steps`` with a fresh run: each claim, the original and fresh numbers, and whether it
    held (or what changed)."""
    lines: Lines = []
    for name in steps:
        step_record = record.get(name)
        if not step_record:
            continue
        seeds = step_record["fresh_seeds"]
        rows = [[c["original"]["text"], claim_text(c["original"]), outcome(step_record, c)]
                for c in step_record["claims"]]  # fmt: skip
        lines += [
            f"**Replicated on {_fresh_words(step_record)}** (`localentropy reproduce --fresh-seeds "
            f"{seeds.get('k', '?')}`: `{name}` rerun on {seeds.get('unit', 'seed')}s {seeds['seeds'][0]}.."
            f"{seeds['seeds'][-1]}, disjoint from the ones above): {step_record['held']} of "
            f"{step_record['total']} claims held (same sign, or the same verdict, and overlapping 95 % intervals)"
            + (f"; {directions}." if (directions := fresh_directions(step_record)) else "."),
            "",
            *table(["claim", "original", "on fresh seeds"], rows),
            "",
        ]
    return lines


# The steps without claims, and why a fresh seed has nothing to replicate in them.
NOT_REPLICATED = {
    "smoothing_targets": "exact quadrature and closed forms: no seed",
    "overhead_accuracy": "each relative error is a mean ± sd over its replicates; `--fresh-seeds` reruns run and "
    "sweep steps, not this computation",
    "overhead_speed": "timings: the spread is over interleaved repeats of one process, not over seeds",
    "atlas": "the samplers' accuracy atlas of docs/samplers.md, judged there with its own replicates",
    "scale_compute": "timings of one pass (repeats), input to a projection",
}


def fresh_minutes(out: Path) -> dict[str, float]:
    """The minutes each fresh rerun took when it ran (``records/fresh_timings.json`` of the reproduction)."""
    path = out / "records" / "fresh_timings.json"
    timings = read_json(path) if path.is_file() else {}
    return {name: t["seconds"] / 60 for name, t in timings.items() if t and t.get("state") != "skip"}


def replication_overview(record: dict[str, Any], minutes: dict[str, float] | None = None) -> Lines:
    """One row per step: its claims, the fresh seeds it was rerun on, how many claims held, did not hold or
    could not be compared, and the minutes the rerun took; then the steps without claims and why."""
    rows, minutes = [], minutes or {}
    for step in registered_steps():
        if step.name in STEP_CLAIMS:
            r = record.get(step.name)
            if r is None:
                rows.append([f"`{step.name}`", step.section, "not rerun", "—", "—", "—", "—"])
                continue
            claims = r["claims"]
            took = f"{minutes[step.name]:.1f}" if step.name in minutes else "—"
            rows.append([f"`{step.name}`", step.section, _fresh_words(r), f"{r['held']} of {r['total']}",
                         str(sum(c["held"] is False for c in claims)), str(sum(c["held"] is None for c in claims)),
                         took])  # fmt: skip
    lines = table(["step", "section", "rerun on", "claims held", "did not hold", "not comparable", "minutes"], rows)
    skipped = [f"`{name}` ({why})" for name, why in NOT_REPLICATED.items()]
    return [*lines, "", "Steps without claims to replicate: " + "; ".join(skipped) + "."]


def replication_markdown(record: dict[str, Any]) -> str:
    """``fresh/replication.md``: the tables of :func:`replication_lines` for every replicated step."""
    lines = ["# Replication on fresh seeds", "",
             "A claim **held** when the fresh run gives the same sign (a 'no detectable difference' again holds 0) "
             "or the same verdict, with overlapping 95 % intervals; otherwise the table says what changed.", ""]
    for name in record:
        lines += [f"## {name}", "", *replication_lines(record, (name,))]
    return "\n".join(lines)


def write_replication(out: Path) -> dict[str, Any]:
    """Compare every claim of the steps with a fresh run in ``out``; write ``fresh/replication.json`` and
    ``fresh/replication.md``; returns the record (step -> its fresh seeds and the claims compared)."""
    record = replicated_claims(out)
    if record:
        atomic_write_json(out / FRESH_DIR / "replication.json", record)
        atomic_write_bytes(out / FRESH_DIR / "replication.md", replication_markdown(record).encode())
    return record


# claims the summary of a section repeats (id prefixes): their replication goes beside them there too
SUMMARY_CLAIMS = {
    "cost": ("cost/",),
    "smoothing": ("flatness/test_error: entropy-sgd (sgld) - lpf-sgd",
                  "flatness/top_eigenvalue: entropy-sgd (sgld) - lpf-sgd"),
    "samplers": ("shootout/",),
    "overhead": ("overhead_training/noise:",),
    "recurrent": ("recurrent_char/entropy-sgd - sgd: final", "recurrent_row/entropy-sgd - sgd: final"),
    "scale": ("scale/parle - sgd-ddp",),
}


def with_replication(body: Lines, summary: str, section: str, record: dict[str, Any]) -> tuple[Lines, str]:
    """A section with the replication tables of its steps appended, and its summary told how its claims fared."""
    names = tuple(s.name for s in select_steps(None) if s.section == section and s.name in record)
    if not names:
        return body, summary
    body = [*body, *replication_lines(record, names)]
    notes = []
    for name in names:
        r = record[name]
        directions = fresh_directions(r)
        notes.append(f"{r['held']} of {r['total']} claims of `{name}` held on {_fresh_words(r)}"
                     + (f" ({directions})" if directions else ""))  # fmt: skip
    prefixes = SUMMARY_CLAIMS.get(section, ())
    for name in names:
        notes += [f"{c['original']['text']}: {outcome(record[name], c)}"
                  for c in record[name]["claims"] if c["id"].startswith(prefixes)]  # fmt: skip
    return body, f"{summary} Replication: {'; '.join(notes)}."
