"""The findings document: computed from the raw runs into stored records, then rendered from those records.

See the package docstring for the two stages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.rundir import MARKER
from localentropy.experiments.core.seeds import FRESH_SEED_OFFSET, TUNING_SEED_OFFSET
from localentropy.experiments.reproduce.findings.common import Lines, read_json
from localentropy.experiments.reproduce.findings.cost import section_cost
from localentropy.experiments.reproduce.findings.llc import section_llc
from localentropy.experiments.reproduce.findings.overhead import section_overhead
from localentropy.experiments.reproduce.findings.recurrent import section_recurrent
from localentropy.experiments.reproduce.findings.render import render, section_text
from localentropy.experiments.reproduce.findings.replication import (
    CONSISTENCY,
    SUMMARY_CLAIMS,
    claim_steps,
    headline_claims,
    replicated_claims,
    replication_overview,
    step_claims,
    summary_forest,
    with_replication,
)
from localentropy.experiments.reproduce.findings.samplers import section_samplers
from localentropy.experiments.reproduce.findings.scale import section_scale
from localentropy.experiments.reproduce.findings.sensitivity import section_sensitivity
from localentropy.experiments.reproduce.findings.smoothing import section_smoothing
from localentropy.experiments.reproduce.fresh import fresh_dir, results_path
from localentropy.experiments.reproduce.steps import SECTIONS

QUESTIONS = [
    "A review of Entropy-SGD (Chaudhari et al., ICLR 2017) asked the questions this document answers:",
    "",
    "* **Q1. Cost.** What does Entropy-SGD cost against SGD in wall-clock time, and when does the inner loop's "
    "overhead outweigh its faster convergence? (The review also asked whether the reported epochs count the inner "
    "loop's passes: every comparison here is at equal effective epochs, i.e. equal gradient evaluations.)",
    "* **Q2. Direct smoothing.** Is smoothing the exponentiated loss (local entropy) better than smoothing the loss "
    "itself, as an approximation and in the minima training finds?",
    "* **Q3. Other samplers.** Would other MCMC samplers in the inner loop (SGHMC and others) estimate the gradient "
    "more accurately per gradient evaluation, or train better?",
    "* **S3. Sensitivity.** How much do the results depend on the hyperparameters: the scope gamma, the inner "
    "step size eta' and the number of inner steps L (and growing gamma during training)?",
    "* **S4. Overhead.** Can the inner loop's overhead be cut (fewer inner steps, warm-started chains, cheaper "
    "noise) without losing accuracy?",
    "",
    "And one question of the Parle paper (Chaudhari et al. 2017), which parallelises Entropy-SGD:",
    "",
    "* **P1. Scale.** Do replicas that communicate once per outer step (Parle) match data-parallel SGD and "
    "Entropy-SGD at equal effective epochs, for how many bytes, and where would their communication win at 2..64 "
    "workers?",
]


def replication_text(record: dict[str, Any], minutes: dict[str, float]) -> Lines:
    """The section on --fresh-seeds: how to run it, how a replicated claim is judged, and every step's outcome at
    a glance (the minutes: each rerun's wall time when it ran, on this project's 2-core machine)."""
    return [*REPLICATION, "", *replication_overview(record, minutes)]


REPLICATION = [
    "### Replication on fresh seeds",
    "",
    "```bash",
    "localentropy reproduce --fresh-seeds 20               # every step with claims, again on 20 new seeds",
    "localentropy reproduce --fresh-seeds 20 --steps overhead_training",
    "```",
    "",
    "`--fresh-seeds K` runs the steps as above, then reruns each step with claims (by default all of them: "
    f"{', '.join(f'`{s}`' for s in claim_steps())}) on K seeds never used before, into `<out>/fresh/<step>/`: a "
    "sweep's `grid.seed` becomes the fresh seeds, a comparison run's replicates start at the fresh offset. Fresh "
    f"seeds start at {FRESH_SEED_OFFSET} (tuning seeds are the evaluation seeds + {TUNING_SEED_OFFSET}; "
    "`localentropy/experiments/core/seeds.py` reserves the ranges) and a config whose seeds meet them is refused; "
    "each fresh `results.json` records `fresh_seeds` (offset, K, the seeds, the evaluation seeds avoided). With "
    "`--quick`, K is at most 3. Every claim has an id and a record in findings.json (`claims`); the fresh run's "
    "claim of the same id is compared with it (`replication`, and `<out>/fresh/replication.md`). "
    + CONSISTENCY
    + " A fresh run costs its step's minutes times K over the step's own seed count, so a costly step can be "
    "rerun on fewer (`--fresh-seeds 5 --steps cost`, a second call into the same directory); the table says each "
    "step's K.",
]


def step_provenance(timing: dict[str, Any] | None, step_dir: Path) -> dict[str, Any] | None:
    """A step's wall time, state, commit and finish date: from its timing record, the commit falling back to the
    one its results.json recorded and the date to its completion marker's time (None without a timing)."""
    if not timing:
        return None
    commit, finished = timing.get("commit"), timing.get("finished")
    if commit is None and results_path(step_dir).is_file():
        commit = read_json(results_path(step_dir)).get("meta", {}).get("git_commit")
    if finished is None and (step_dir / MARKER).is_file():
        finished = datetime.fromtimestamp((step_dir / MARKER).stat().st_mtime, UTC).isoformat(timespec="seconds")
    return {"seconds": timing.get("seconds"), "state": timing.get("state"), "commit": commit, "finished": finished}


def provenance(out: Path, resolved: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """Per step and per fresh rerun: :func:`step_provenance`, with the totals (:func:`summarise_provenance`)."""
    timings = meta.get("timings", {})
    fresh_path = out / "records" / "fresh_timings.json"
    fresh_timings = read_json(fresh_path) if fresh_path.is_file() else {}
    steps = {s["name"]: step_provenance(timings.get(s["name"]), out / s["name"]) for s in resolved["steps"]}
    fresh = {name: step_provenance(t, fresh_dir(out, name)) for name, t in fresh_timings.items() if t}
    return summarise_provenance({"steps": steps, "fresh": fresh})


def summarise_provenance(record: dict[str, Any]) -> dict[str, Any]:
    """The totals of a provenance record: minutes of the steps and of the fresh reruns, the commits, and how many
    steps have no recorded commit."""
    done = [e for e in [*record["steps"].values(), *record["fresh"].values()] if e]
    commits = list(dict.fromkeys(str(e["commit"])[:12] for e in done if e.get("commit")))
    return {
        "steps": record["steps"],
        "fresh": record["fresh"],
        "minutes": sum(e["seconds"] or 0 for e in record["steps"].values() if e) / 60,
        "fresh_minutes": sum(e["seconds"] or 0 for e in record["fresh"].values() if e) / 60,
        "commits": commits,
        "unrecorded": sum(not e.get("commit") for e in done),
        "legacy_commits": record.get("legacy_commits", []),
    }


def write_findings(out: Path, doc: Path, resolved: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Compute every section from a finished reproduction in ``out`` into ``<doc stem>/findings.json`` and
    ``<doc stem>/sections.json`` (with the figures), then render ``doc`` from them (:func:`render_findings`)."""
    figures = doc.parent / doc.stem
    figures.mkdir(parents=True, exist_ok=True)
    speed_path = out / "overhead_speed" / "speed.json"
    speed = read_json(speed_path) if speed_path.is_file() else None
    numbers: dict[str, Any] = {}
    sections = [
        section_cost(out, figures, speed, numbers),
        section_smoothing(out, figures, numbers),
        section_samplers(out, figures, numbers),
        section_sensitivity(out, figures, numbers),
        section_overhead(out, figures, speed, numbers),
        section_recurrent(out, figures, numbers),
        section_scale(out, figures, numbers),
        section_llc(out, figures, numbers),
    ]
    numbers["claims"] = step_claims(out)
    numbers["replication"] = replicated_claims(out)
    numbers["provenance"] = provenance(out, resolved, meta)
    text = {
        "bodies": dict(zip(SECTIONS, ("\n".join(body) for body, _ in sections), strict=True)),
        "summaries": dict(zip(SECTIONS, (summary for _, summary in sections), strict=True)),
    }
    atomic_write_json(figures / "sections.json", text)
    atomic_write_json(figures / "findings.json", {"meta": meta, "plan": resolved, "numbers": numbers})
    return render_findings(doc)


def _step_rows(resolved: dict[str, Any], numbers: dict[str, Any]) -> list[dict[str, Any]]:
    prov = numbers.get("provenance") or {"steps": {}, "fresh": {}}

    def when(e: dict[str, Any] | None) -> tuple[str, str, str]:
        if not e:
            return "—", "—", "—"
        minutes = f"{e['seconds'] / 60:.1f}" if e.get("seconds") is not None else "—"
        minutes += " (skipped: done before)" if e.get("state") == "skip" else ""
        commit = str(e["commit"])[:12] if e.get("commit") else "not recorded"
        return minutes, commit, str(e["finished"])[:10] if e.get("finished") else "not recorded"

    rows = []
    for s in resolved["steps"]:
        minutes, commit, finished = when(prov["steps"].get(s["name"]))
        fresh = prov["fresh"].get(s["name"])
        rows.append(
            {
                **s,
                "minutes": minutes,
                "commit": commit,
                "finished": finished,
                "fresh": ", ".join(when(fresh)) if fresh else "—",
            }
        )
    return rows


def _section(name: str, numbers: dict[str, Any], text: dict[str, Any]) -> tuple[Lines, str]:
    """A section's body and summary: rendered from its view in findings.json by its templates, or, for a record
    written before the sections had views, the text stored in sections.json."""
    view = (numbers.get(name) or {}).get("view")
    if view is not None:
        return section_text(name, view)
    return text["bodies"][name].split("\n"), text["summaries"][name]


def render_findings(doc: Path) -> Path:
    """Render ``doc`` from ``<doc stem>/findings.json`` and ``<doc stem>/sections.json`` alone: the sections' text
    with the replication of their claims, the forest plots, the header's provenance and the summary."""
    figures = doc.parent / doc.stem
    stored = read_json(figures / "findings.json")
    text = read_json(figures / "sections.json")
    meta, resolved, numbers = stored["meta"], stored["plan"], stored["numbers"]
    replicated = numbers.get("replication", {})
    sections = [
        with_replication(*_section(name, numbers, text), name, replicated, figures)
        for name in SECTIONS
        # a record written before a section existed renders without it
        if (numbers.get(name) or {}).get("view") is not None or name in text["bodies"]
    ]
    quick = meta.get("mode") == "quick"
    command = "localentropy reproduce" + (" --quick" if quick else "")
    prov = numbers.get("provenance") or summarise_provenance({"steps": {}, "fresh": {}})
    forest = summary_forest(replicated, figures, SECTIONS) if replicated else None
    lines = [
        "# Findings: the review's questions, answered with measurements",
        "",
        render("header.md.j2", meta=meta, quick=quick, command=command, p=prov),
        "",
        *QUESTIONS,
        "",
        "Each section names the config that produced it, gives the numbers with their uncertainty over "
        "seeds or replicates, and says what the evidence supports and what it does not. Comparisons between "
        "optimizers are paired: the runs of one seed share the data split, the initial weights and the minibatch "
        "order.",
        "",
        "## Summary",
        "",
        *(f"* {summary}" for _, summary in sections),
        "",
        *(
            [f"![every headline claim: original, fresh and pooled estimates with 95 % CIs]({forest})", ""]
            if forest
            else []
        ),
        "## How to rerun",
        "",
        "```bash",
        "localentropy reproduce --doc docs/findings.md        # the full run (runs/reproduce)",
        "localentropy reproduce --quick                       # runs/reproduce-quick/findings.md",
        "```",
        "",
        "A finished step is not run again (delete its directory, or pass `--force` for all); a step whose config "
        "file changed is rerun. The steps, each an ordinary run, sweep or computation of this package, with the "
        "wall time, commit and date of the run whose numbers the document shows:",
        "",
        render("steps.md.j2", rows=_step_rows(resolved, numbers)),
        "",
        *replication_text(replicated, {name: e["seconds"] / 60 for name, e in prov["fresh"].items() if e}),
        "",
    ]
    for body, _ in sections:
        lines += body
    lines += [
        "---",
        "",
        f"Numbers behind every table: [{figures.name}/findings.json]({figures.name}/findings.json). "
        "Raw runs: the reproduction's output directory (`--out`, by default `runs/reproduce`; not shipped with the "
        "repository), where each step's `results.json`, `report.md` and `config.json` lie.",
        "",
    ]
    atomic_write_bytes(doc, "\n".join(lines).encode())
    return doc


def readme_paragraph(doc: Path) -> str:
    """README's findings paragraph, rendered from ``<doc stem>/findings.json``: each section's headline claims
    pooled over both batches, with their consistency, and the minutes from the provenance record."""
    numbers = read_json(doc.parent / doc.stem / "findings.json")["numbers"]
    replicated = numbers.get("replication", {})
    titles = {
        "cost": "Cost (Q1).",
        "smoothing": "Flatness (Q2).",
        "samplers": "Samplers (Q3).",
        "overhead": "Overhead (S4).",
        "recurrent": "Recurrent networks.",
        "scale": "Parle (P1).",
    }
    sections = [
        {"title": titles[name], "claims": claims}
        for name in SUMMARY_CLAIMS
        if (claims := headline_claims(name, replicated))
    ]
    ks = sorted({r["fresh_seeds"]["k"] for r in replicated.values()})
    fresh_words = " or ".join(str(k) for k in ks) + " fresh seeds or replicates per step" if ks else "none yet"
    prov = numbers.get("provenance") or summarise_provenance({"steps": {}, "fresh": {}})
    return render(
        "readme.md.j2",
        sections=sections,
        fresh_words=fresh_words,
        minutes=prov["minutes"],
        fresh_minutes=prov["fresh_minutes"],
        replicated=len(replicated),
        claim_steps=len(claim_steps()),
    )
