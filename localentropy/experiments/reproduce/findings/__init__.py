"""docs/findings.md from the step directories of ``localentropy reproduce``: one section per question of the review.

Every table, figure and number in the document is computed here from the steps' ``results.json`` (and the
targets, accuracy and speed files); the sentences that state a comparison are generated from the same numbers
(who is lower, by how much, on how many paired seeds), so a rerun with other results cannot leave stale claims.
What each experiment cannot show is fixed text: it depends on the design, not on the outcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from localentropy.experiments.core.files import atomic_write_bytes, atomic_write_json
from localentropy.experiments.core.seeds import FRESH_SEED_OFFSET, TUNING_SEED_OFFSET
from localentropy.experiments.reproduce.findings.common import (
    Lines,
    mean_sd,
    paired,
    paired_text,
    pm,
    read_json,
    table,
)
from localentropy.experiments.reproduce.findings.cost import first_reach, section_cost
from localentropy.experiments.reproduce.findings.overhead import section_overhead
from localentropy.experiments.reproduce.findings.recurrent import section_recurrent, write_section
from localentropy.experiments.reproduce.findings.replication import (
    claim_steps,
    fresh_minutes,
    replicated_claims,
    replication_overview,
    step_claims,
    with_replication,
)
from localentropy.experiments.reproduce.findings.samplers import section_samplers
from localentropy.experiments.reproduce.findings.scale import section_scale
from localentropy.experiments.reproduce.findings.sensitivity import section_sensitivity
from localentropy.experiments.reproduce.findings.smoothing import section_smoothing
from localentropy.experiments.reproduce.steps import SECTIONS, expected_minutes

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
    """The section on --fresh-seeds: how to run it, what "held" means, and every step's outcome at a glance (the
    minutes: each rerun's wall time when it ran, on this project's 2-core machine)."""
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
    "claim of the same id is compared with it (`replication`, and `<out>/fresh/replication.md`) and the "
    "section shows beside each claim whether it **held**: a difference whose 95 % interval excluded 0 held when "
    "the fresh one has the same sign, still excludes 0 and the two intervals overlap; a 'no detectable "
    "difference' held when the fresh interval also holds 0; a verdict (the lowest, or the tied set) held when it "
    "is the same. Otherwise it says what changed: the sign flipped, the interval no longer (or now) excludes 0, "
    "the intervals do not overlap, the verdict changed. A fresh run costs its step's minutes times K over the "
    "step's own seed count (`overhead_training` at K = 20: about 4 x its minutes), so a costly step can be "
    "rerun on fewer (`--fresh-seeds 5 --steps cost`, a second call into the same directory); the table says each "
    "step's K.",
]


def write_findings(out: Path, doc: Path, resolved: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``doc`` (and its figures and numbers in ``<doc stem>/``) from a finished reproduction in ``out``."""
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
    ]
    numbers["claims"] = step_claims(out)
    numbers["replication"] = replicated = replicated_claims(out)
    sections = [with_replication(body, summary, name, replicated) for (body, summary), name in
                zip(sections, SECTIONS, strict=True)]
    quick = meta.get("mode") == "quick"
    step_rows = [[s["name"], s["question"], s["kind"], f"`{s['file']}`" if s["file"] else "—",
                  _minutes(meta.get("timings", {}).get(s["name"]))] for s in resolved["steps"]]  # fmt: skip
    minutes = sum(t.get("seconds", 0) for t in meta.get("timings", {}).values() if t) / 60
    command = "localentropy reproduce" + (" --quick" if quick else "")
    lines = [
        "# Findings: the review's questions, answered with measurements",
        "",
        f"> **{'QUICK' if quick else 'Full'} run.** Written by `{command}` on {str(meta.get('finished', '?'))[:10]} "
        f"at commit {str(meta.get('git_commit') or 'unknown')[:12]}, "
        f"torch {meta.get('versions', {}).get('torch', '?')}, "
        f"{meta.get('cpu_count', '?')} CPUs, {meta.get('workers')} runs at a time; the steps took "
        f"{minutes:.0f} minutes of wall time when they ran (a step skipped by a later call keeps its time), at "
        f"commit {', '.join(_step_commits(out)) or 'unknown'}.",
    ]
    if quick:
        lines += ["> This quick run uses fewer seeds, replicates, budgets and epochs than the full run "
                  "(`localentropy.experiments.reproduce.run.QUICK`): its numbers check the pipeline and are not the "
                  "findings; the full run's document is docs/findings.md."]  # fmt: skip
    else:
        lines += [
            "> Every number, table and figure below comes from the full run and is regenerated by it; "
            "`localentropy reproduce --quick` writes the same document from a smaller run for a check."
        ]
    lines += [
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
        "## How to rerun",
        "",
        "```bash",
        "localentropy reproduce --doc docs/findings.md        # the full run (runs/reproduce), about "
        f"{_expected(False):.0f} minutes on 2 cores",
        "localentropy reproduce --quick                       # runs/reproduce-quick/findings.md, about "
        f"{_expected(True):.0f} minutes",
        "```",
        "",
        "A finished step is not run again (delete its directory, or pass `--force` for all); a step whose config "
        "file changed is rerun. The steps, each an ordinary run, sweep or computation of this package:",
        "",
        *table(["step", "question", "what", "config", "minutes"], step_rows),
        "",
        *replication_text(replicated, fresh_minutes(out)),
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
    atomic_write_json(figures / "findings.json", {"meta": meta, "plan": resolved, "numbers": numbers})
    atomic_write_bytes(doc, "\n".join(lines).encode())
    return doc


def write_recurrent(out: str | Path, doc: str | Path) -> Path:
    """The recurrent section alone, as ``doc``, with the replication of its claims when ``out`` has fresh runs."""
    record = replicated_claims(Path(out))
    return write_section(out, doc, lambda body, summary: with_replication(body, summary, "recurrent", record))


def _step_commits(out: Path) -> list[str]:
    """The commits the run and sweep steps recorded in their results (the code that produced the numbers)."""
    commits = []
    for path in sorted(out.glob("*/results.json")):
        meta = read_json(path).get("meta", {})
        commit = str(meta.get("git_commit") or "")[:12]
        if commit and commit not in commits:
            commits.append(commit)
    return commits


def _expected(quick: bool) -> float:
    return expected_minutes(quick)


def _minutes(timing: dict[str, Any] | None) -> str:
    if not timing:
        return "—"
    return f"{timing['seconds'] / 60:.1f}" + (" (skipped: done before)" if timing.get("state") == "skip" else "")


__all__ = ["first_reach", "mean_sd", "paired", "paired_text", "pm", "write_findings", "write_recurrent"]
