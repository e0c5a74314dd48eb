"""The findings' prose is rendered from their records: every number the rendered text states is in the record
(up to the rounding shown), claim labels are unique, every section with replicated claims shows a forest plot,
and the committed document is what its stored records render to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from localentropy.experiments.reproduce.claims import difference_claim, verdict_claim
from localentropy.experiments.reproduce.findings import readme_paragraph, render_findings
from localentropy.experiments.reproduce.findings.document import summarise_provenance
from localentropy.experiments.reproduce.findings.forest import forest_plot
from localentropy.experiments.reproduce.findings.render import claim_label, unsupported_numbers
from localentropy.experiments.reproduce.findings.replication import (
    replication_lines,
    replication_overview,
    section_steps,
    step_record,
    with_replication,
)
from localentropy.experiments.reproduce.findings.rerender import README_END, README_START, split_document
from localentropy.experiments.reproduce.steps import SECTIONS

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "findings.md"
FIGURES = ROOT / "docs" / "findings"


def _record() -> dict:
    """Two replicated steps: three differences over 5 + 5 seeds and a verdict over 10 + 20 replicates."""
    rng = np.random.default_rng(0)
    seeds = {"k": 5, "unit": "seed", "seeds": [2000000, 2000004]}
    diffs = [
        ({"mean": 0.0054, "ci95": 0.0036, "n": 5}, {"mean": 0.0032, "ci95": 0.0051, "n": 5}),
        ({"mean": 0.0050, "ci95": 0.0074, "n": 5}, {"mean": 0.0024, "ci95": 0.0049, "n": 5}),
        ({"mean": -0.0123, "ci95": 0.0072, "n": 5}, {"mean": 0.0021, "ci95": 0.0051, "n": 5}),
    ]
    original = [difference_claim(f"cost/x{i}", f"test error {i}", a) for i, (a, _) in enumerate(diffs)]
    fresh = [difference_claim(f"cost/x{i}", f"test error {i}", b) for i, (_, b) in enumerate(diffs)]

    def values(n: int) -> dict[str, list[float]]:
        base = rng.exponential(size=n)
        return {"a": list(base), "b": list(base + 1.0)}

    verdicts = (
        [verdict_claim("shootout/budget 400", "lowest MSE at budget 400", ["a"], 10, values=values(10))],
        [verdict_claim("shootout/budget 400", "lowest MSE at budget 400", ["a"], 20, values=values(20))],
    )
    return {
        "cost": step_record(seeds, original, fresh),
        "shootout": step_record({"k": 20, "unit": "replicate", "seeds": [2000000, 2000019]}, *verdicts),
    }


def test_every_number_of_the_rendered_replication_is_in_its_record(tmp_path: Path) -> None:
    record = _record()
    text = "\n".join(
        [
            *replication_lines(record, ("cost", "shootout")),
            *replication_overview(record, {"cost": 23.9}),
            with_replication(["## Cost"], "**Cost.**", "cost", record, tmp_path)[1],
        ]
    )
    assert "+0.43 ± 0.25 points (95 % CI over 10 seeds)" in text  # the pooled estimate, stated with what ± is
    assert unsupported_numbers(text, {"replication": record, "minutes": [23.9]}) == []
    assert unsupported_numbers(text + " and 7.77 points", {"replication": record, "minutes": [23.9]}) == ["7.77"]
    assert (tmp_path / "forest_cost.png").is_file()


def test_a_forest_plot_draws_original_fresh_and_pooled(tmp_path: Path) -> None:
    record = _record()
    path = forest_plot(record["cost"]["claims"], tmp_path / "forest_x.png", "cost")
    assert path is not None and path.stat().st_size > 5000
    assert forest_plot(record["shootout"]["claims"], tmp_path / "forest_y.png", "verdicts only") is None


@pytest.mark.skipif(not (FIGURES / "sections.json").is_file(), reason="the committed findings have no sections.json")
def test_the_committed_findings_are_what_their_records_render_to(tmp_path: Path) -> None:
    """Re-rendering docs/findings.md from docs/findings/{findings,sections}.json gives the committed text, and the
    document and the README paragraph state no number the record lacks."""
    copy = tmp_path / "findings"
    shutil.copytree(FIGURES, copy)
    render_findings(tmp_path / "findings.md")
    assert (tmp_path / "findings.md").read_text() == DOC.read_text()
    record = json.loads((FIGURES / "findings.json").read_text())
    ignore = {"2017", "2..64"}  # the papers' year and the question's range of workers: fixed text, not data
    # the full reproduction of 2026-12-07 wrote a record that carries every number the sections print
    assert unsupported_numbers(DOC.read_text(), record, ignore) == []
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index(README_START) + len(README_START) : readme.index(README_END)]
    assert paragraph.strip() == readme_paragraph(tmp_path / "findings.md").strip()
    assert unsupported_numbers(paragraph, record) == []


@pytest.mark.skipif(not (FIGURES / "findings.json").is_file(), reason="no committed findings")
def test_claim_labels_are_unique_and_every_replicated_section_shows_a_forest_plot() -> None:
    numbers = json.loads((FIGURES / "findings.json").read_text())["numbers"]
    labels = [claim_label(c) for claims in numbers["claims"].values() for c in claims]
    assert len(labels) == len(set(labels)), sorted({x for x in labels if labels.count(x) > 1})
    text = DOC.read_text()
    for section in SECTIONS:
        if section_steps(section, numbers["replication"]):
            assert f"findings/forest_{section}.png" in text, section
            assert (FIGURES / f"forest_{section}.png").is_file()
    assert "findings/forest_summary.png" in text


def test_an_old_document_splits_into_its_sections() -> None:
    text = "\n".join(
        [
            "# F",
            "",
            "## Summary",
            "",
            *(f"* s{i} Replication: old" for i in range(len(SECTIONS))),
            "",
            "## How to rerun",
            "",
            *(f"## Q{i + 1}. x\nbody {i}\n**Replicated on 3** ...\n| t |" for i in range(len(SECTIONS))),
            "---",
            "",
        ]
    )
    parts = split_document(text)
    assert list(parts["summaries"].values()) == [f"s{i}" for i in range(len(SECTIONS))]
    assert parts["bodies"]["cost"] == "## Q1. x\nbody 0"


def test_provenance_totals() -> None:
    p = summarise_provenance(
        {
            "steps": {"a": {"seconds": 60, "commit": "abc", "state": "fresh"}, "b": None},
            "fresh": {"a": {"seconds": 120, "commit": None, "state": "fresh"}},
        }
    )
    assert (p["minutes"], p["fresh_minutes"], p["commits"], p["unrecorded"]) == (1.0, 2.0, ["abc"], 1)


def test_the_header_renders_from_a_fresh_runs_meta_and_states_the_provenance() -> None:
    """A meta as run.py writes it (no re-render stamp, no commit outside git): the header says what it has."""
    from localentropy.experiments.reproduce.findings.render import render

    meta = {
        "mode": "quick",
        "workers": 1,
        "cpu_count": 2,
        "finished": "2026-12-07T10:00:00+00:00",
        "versions": {"torch": "2.13.0"},
        "git_commit": None,
        "timings": {},
    }
    steps = {"shootout": {"seconds": 90.0, "state": "fresh", "commit": "094d0f724b70aa", "finished": "2026-12-07"}}
    p = summarise_provenance({"steps": steps, "fresh": {}})
    text = render("header.md.j2", meta=meta, quick=True, command="localentropy reproduce --quick", p=p)
    assert "**QUICK run.** Written by `localentropy reproduce --quick` on 2026-12-07 at commit unrecorded" in text
    assert "1 step that took 1.5 minutes of wall time when they ran, at commit 094d0f724b70:" in text
    assert "re-rendered" not in text
    assert unsupported_numbers(text, {"meta": meta, "provenance": p}) == []


def test_a_wall_clock_ratio_states_its_interval_or_why_it_has_none() -> None:
    """A ratio of paired per-seed times carries its 95 % CI and how the runs were timed; a stored ratio of means
    without per-seed times says that it has no interval and why."""
    from localentropy.diagnostics.compare import paired_ratio
    from localentropy.experiments.reproduce.findings.render import TEMPLATES

    say = TEMPLATES.macros()
    ratio = paired_ratio({0: 2.0, 1: 2.4, 2: 2.2}, {0: 1.0, 1: 1.1, 2: 1.0}).as_dict()
    alone = {"runs_at_a_time": 1, "load_start": 0.1, "load_end": 1.0, "idle_load": 0.5, "alone": True}
    text = say.time_ratio({"ratio": ratio, "of_means": 2.2, "timing": alone}, "entropy-sgd", "SGD")
    assert text.startswith(f"{ratio['ratio']:.3g}x SGD's training seconds (the geometric mean of the per-seed ratios")
    assert f"95 % CI {ratio['low']:.3g} to {ratio['high']:.3g} over 3 seeds; runs timed alone)" in text
    measured = {**alone, "other_cores_max": 0.02, "other_cores_mean": 0.01, "other_cores_alone": 0.25, "waited_s": 2}
    text = say.time_ratio({"ratio": ratio, "of_means": 2.2, "timing": measured}, "entropy-sgd", "SGD")
    assert "over 3 seeds; runs 1 at a time, other processes using at most 0.02 cores: timed alone)" in text
    shared = {**alone, "runs_at_a_time": 2, "alone": False}
    assert "runs 2 at a time: not timed alone" in say.time_ratio(
        {"ratio": ratio, "of_means": 2.2, "timing": shared}, "e", "SGD"
    )
    old = say.time_ratio({"ratio": None, "of_means": 2.22, "timing": None}, "entropy-sgd", "SGD")
    assert old == "2.22x SGD's mean training seconds (a ratio of means; no interval: per-seed times not recorded)"
