"""Re-render the findings from what is stored: ``python -m localentropy.experiments.reproduce.findings DOC``.

Recomputes every replicated claim's consistency and pooled estimate from the claims stored in
``<doc stem>/findings.json`` (a difference's pooled interval follows exactly from each batch's n, mean and sd),
optionally replaces the claims of the steps rerun into ``--runs DIR`` (a reproduction directory holding
``<step>`` and ``fresh/<step>``: a pooled verdict needs the per-replicate values, which older records lack), and
renders the document and README's findings paragraph (between its ``<!-- findings -->`` markers) again.

A document written before ``sections.json`` existed is split once into its sections' text (each section up to
its first "**Replicated on" block, each summary item up to " Replication: "), which is then stored.
"""

from __future__ import annotations

import argparse
import itertools
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.rundir import MARKER
from localentropy.experiments.reproduce.findings.common import read_json
from localentropy.experiments.reproduce.findings.document import (
    readme_paragraph,
    render_findings,
    step_provenance,
    summarise_provenance,
)
from localentropy.experiments.reproduce.findings.replication import STEP_CLAIMS, step_record
from localentropy.experiments.reproduce.fresh import fresh_dir
from localentropy.experiments.reproduce.steps import SECTIONS

README_START, README_END = "<!-- findings: rendered from docs/findings/findings.json -->", "<!-- /findings -->"


def split_document(markdown: str) -> dict[str, dict[str, str]]:
    """The sections' own text of a document rendered before ``sections.json``: bodies without their replication
    blocks, summary items without their replication notes, in the order of :data:`SECTIONS`."""
    lines = markdown.split("\n")
    summary_at = lines.index("## Summary")
    items = []
    for line in lines[summary_at + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("* "):
            items.append(line[2:].split(" Replication: ")[0])
    first = next(i for i, line in enumerate(lines) if line.startswith("## Q1."))
    end = lines.index("---", first)
    starts = [i for i in range(first, end) if lines[i].startswith("## ")] + [end]
    bodies = []
    for a, b in itertools.pairwise(starts):
        part = lines[a:b]
        cut = next((i for i, line in enumerate(part) if line.startswith("**Replicated on")), len(part))
        bodies.append("\n".join(part[:cut]))
    if len(items) != len(SECTIONS) or len(bodies) != len(SECTIONS):
        raise ValueError(f"expected {len(SECTIONS)} sections, found {len(items)} summary items, {len(bodies)} bodies")
    return {"bodies": dict(zip(SECTIONS, bodies, strict=True)), "summaries": dict(zip(SECTIONS, items, strict=True))}


def legacy_records(markdown: str) -> dict[str, Any]:
    """What a document rendered before the provenance record held only in its text: the fresh reruns' minutes
    (its replication overview's last column) and the commits its header listed for the steps' results."""
    minutes = {}
    for line in markdown.split("\n"):
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`") and re.fullmatch(r"\d+\.\d", cells[-1]):
            minutes[cells[0].strip("`")] = float(cells[-1])
    header = re.search(r"of wall time when they ran[^\n]*?at commit ([0-9a-f, ]+)\.", markdown)
    commits = [c.strip() for c in header.group(1).split(",")] if header else []
    return {"fresh_minutes": minutes, "legacy_commits": commits}


# The cost section's wall-clock ratio as written before per-seed times were kept by seed (and before a sweep recorded
# how its runs were timed): its stored text said "no interval" without the reason; the record cannot give one.
LEGACY_TIMING = (
    (
        "(a ratio of means over seeds, no interval, runs two at a time)",
        "(a ratio of means over seeds, runs two at a time, not timed alone; no interval: per-seed times not recorded)",
    ),
    ("(a ratio of means, no interval)", "(a ratio of means; no interval: per-seed times not recorded)"),
    (
        "the ratios are of means over seeds, without an interval, and rough",
        "the ratios are of means over seeds, rough, and carry no interval: per-seed times not recorded",
    ),
)


def legacy_timing(text: dict[str, Any]) -> dict[str, Any]:
    """Stored section text with the old wall-clock ratios saying why they carry no interval (:data:`LEGACY_TIMING`)."""

    def fix(value: str) -> str:
        for old, new in LEGACY_TIMING:
            value = value.replace(old, new)
        return value

    return {part: {name: fix(value) for name, value in items.items()} for part, items in text.items()}


def _rerun_provenance(runs: Path, record: str, name: str, step_dir: Path) -> dict[str, Any] | None:
    path = runs / "records" / f"{record}.json"
    return step_provenance(read_json(path).get(name) if path.is_file() else None, step_dir)


def rerender(doc: Path, runs: Path | None = None, readme: Path | None = None) -> list[str]:
    """Recompute the replication record (and, from ``runs``, the rerun steps' claims and provenance), store it,
    render ``doc`` and README's paragraph; returns the steps whose claims came from ``runs``."""
    figures = doc.parent / doc.stem
    stored = read_json(figures / "findings.json")
    numbers = stored["numbers"]
    if not (figures / "sections.json").is_file():
        markdown = doc.read_text()
        atomic_write_json(figures / "sections.json", split_document(markdown))
        legacy = legacy_records(markdown)
    else:
        legacy = {"legacy_commits": (numbers.get("provenance") or {}).get("legacy_commits", []), "fresh_minutes": {}}
    atomic_write_json(figures / "sections.json", legacy_timing(read_json(figures / "sections.json")))
    prov = numbers.get("provenance") or {
        "steps": {
            name: {**t, "commit": t.get("commit"), "finished": t.get("finished")} if t else None
            for name, t in stored["meta"].get("timings", {}).items()
        },
        "fresh": {},
    }
    prov["legacy_commits"] = legacy["legacy_commits"]
    rerun = []
    for name, read in STEP_CLAIMS.items():
        if runs is not None and (runs / name / MARKER).is_file() and (fresh_dir(runs, name) / MARKER).is_file():
            original, fresh = read(runs / name), read(fresh_dir(runs, name))
            seeds = read_json(fresh_dir(runs, name) / "results.json").get("fresh_seeds", {})
            numbers["claims"][name] = original
            numbers["replication"][name] = step_record(seeds, original, fresh)
            prov["steps"][name] = _rerun_provenance(runs, "timings", name, runs / name) or prov["steps"].get(name)
            prov["fresh"][name] = _rerun_provenance(runs, "fresh_timings", name, fresh_dir(runs, name))
            rerun.append(name)
        elif name in numbers.get("replication", {}):
            r = numbers["replication"][name]
            original = [c["original"] for c in r["claims"]]
            fresh = [c["fresh"] for c in r["claims"] if c["fresh"] is not None]
            numbers["replication"][name] = step_record(r["fresh_seeds"], original, fresh)
    for name, minutes in legacy["fresh_minutes"].items():  # the old document's overview, where nothing newer is
        if prov["fresh"].get(name) is None:
            prov["fresh"][name] = {"seconds": minutes * 60, "state": "fresh", "commit": None, "finished": None}
    numbers["provenance"] = summarise_provenance(prov)
    stored["meta"]["rendered"] = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_json(figures / "findings.json", stored)
    render_findings(doc)
    if readme is not None:
        write_readme(readme, readme_paragraph(doc))
    return rerun


def write_readme(readme: Path, paragraph: str) -> None:
    """Replace README's findings paragraph (between the markers; a first call replaces the text between its
    "## Findings" heading and the next heading, and adds the markers)."""
    text = readme.read_text()
    block = f"{README_START}\n{paragraph}\n{README_END}"
    if README_START in text:
        text = re.sub(re.escape(README_START) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    else:
        start = text.index("## Findings\n") + len("## Findings\n")
        end = text.index("\n## ", start)
        text = text[:start] + "\n" + block + "\n" + text[end:]
    atomic_write_bytes(readme, text.encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localentropy.experiments.reproduce.findings", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("doc", type=Path, help="the findings document (its records lie in <doc stem>/)")
    parser.add_argument("--runs", type=Path, help="a reproduction directory with steps rerun (and fresh/<step>)")
    parser.add_argument("--readme", type=Path, help="README.md whose findings paragraph to render")
    args = parser.parse_args(argv)
    rerun = rerender(args.doc, args.runs, args.readme)
    print(f"rendered {args.doc}" + (f" (claims of {', '.join(rerun)} from {args.runs})" if rerun else ""))
    return 0
