"""``localentropy samplers --accuracy``: run the atlas, print where it went, optionally rewrite a document's section."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from localentropy.experiments.atlas.render import render_markdown
from localentropy.experiments.atlas.run import run_atlas
from localentropy.experiments.core.files import atomic_write_bytes
from localentropy.samplers import available_samplers

START, END = "<!-- atlas:start -->", "<!-- atlas:end -->"


def replace_section(document: str, section: str) -> str:
    """``document`` with the text between the atlas markers replaced by ``section``."""
    if START not in document or END not in document or document.index(START) > document.index(END):
        raise ValueError(f"the document has no atlas section: add the lines {START} and {END} where it goes")
    head, rest = document.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{section.rstrip()}\n{END}{tail}"


def accuracy_command(
    out: str | None, *, quick: bool, doc: str | None, samplers: list[str] | None, seed: int = 0
) -> int:
    """Exit status 2 for a bad sampler name or a document without an atlas section, else 0."""
    unknown = sorted(set(samplers or []) - set(available_samplers()))
    if unknown:
        print(
            f"localentropy samplers: error: --sampler {', '.join(unknown)} is not registered; registered: "
            f"{', '.join(available_samplers())}",
            file=sys.stderr,
        )
        return 2
    document = None
    if doc is not None:
        document = Path(doc).read_text() if Path(doc).is_file() else None
        if document is None or START not in document or END not in document:
            print(
                f"localentropy samplers: error: --doc {doc}: not a file with an atlas section ({START} ... {END})",
                file=sys.stderr,
            )
            return 2
    out_dir = Path(out or "runs/atlas")
    results = run_atlas(
        out_dir,
        quick=quick,
        samplers=samplers,
        seed=seed,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(
        f"atlas written: {out_dir / 'atlas.md'}, {out_dir / 'atlas.png'}, {out_dir / 'atlas.json'} "
        f"({results['seconds'] / 60:.1f} minutes)"
    )
    if doc is not None and document is not None:
        image = os.path.relpath(out_dir / "atlas.png", Path(doc).parent)
        atomic_write_bytes(Path(doc), replace_section(document, render_markdown(results, image=image)).encode())
        print(f"rewrote the atlas section of {doc}")
    return 0
