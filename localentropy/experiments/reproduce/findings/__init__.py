"""docs/findings.md from the step directories of ``localentropy reproduce``: one section per question of the review.

Two stages. :func:`write_findings` computes each section from the steps' ``results.json`` (and the targets,
accuracy and speed files) into ``<doc stem>/findings.json`` (the numbers, every claim, its replication and the
steps' provenance) and ``<doc stem>/sections.json`` (each section's text as computed from the raw runs).
:func:`render_findings` then renders the document from those two stored files alone, with the Jinja2 templates
of ``templates/``: the header and its provenance, the steps' table, the replication of every claim (consistency
between the batches and the pooled estimate), the forest plots and the summary's replication notes. So when the
replication record changes (a fresh rerun, a new pooling rule) the document is re-rendered from what is stored,
without the raw runs: ``python -m localentropy.experiments.reproduce.findings DOC``.
"""

from __future__ import annotations

from pathlib import Path

from localentropy.experiments.reproduce.findings.common import mean_sd, paired, pm
from localentropy.experiments.reproduce.findings.cost import first_reach
from localentropy.experiments.reproduce.findings.document import readme_paragraph, render_findings, write_findings
from localentropy.experiments.reproduce.findings.recurrent import write_section
from localentropy.experiments.reproduce.findings.render import paired_text
from localentropy.experiments.reproduce.findings.replication import replicated_claims, with_replication


def write_recurrent(out: str | Path, doc: str | Path) -> Path:
    """The recurrent section alone, as ``doc``, with the replication of its claims when ``out`` has fresh runs."""
    record = replicated_claims(Path(out))
    return write_section(out, doc, lambda body, summary: with_replication(body, summary, "recurrent", record))


__all__ = [
    "first_reach",
    "mean_sd",
    "paired",
    "paired_text",
    "pm",
    "readme_paragraph",
    "render_findings",
    "write_findings",
    "write_recurrent",
]
