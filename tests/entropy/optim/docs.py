"""The runnable examples of docs/optimizers.md, read from the file so that the tests run what the docs show."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "optimizers.md"


def doc_example(heading: str) -> str:
    """The first ```python block after the line that starts with ``heading``."""
    text = DOC.read_text()
    start = next(m.end() for m in re.finditer(r"^" + re.escape(heading) + r".*$", text, re.M))
    block = re.search(r"^```python\n(.*?)^```", text[start:], re.M | re.S)
    assert block is not None, f"no python example after {heading!r} in {DOC}"
    return block.group(1)


def doc_examples() -> list[tuple[str, str]]:
    """Every ```python block of the file, with the nearest heading above it."""
    text = DOC.read_text()
    found = []
    for block in re.finditer(r"^```python\n(.*?)^```", text, re.M | re.S):
        headings = re.findall(r"^#+ .*$", text[: block.start()], re.M)
        found.append((headings[-1] if headings else "", block.group(1)))
    return found
