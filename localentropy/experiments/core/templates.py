"""Prose rendered from data with Jinja2: one environment per package's ``templates/`` folder.

A sentence that states a fact sits inside a condition on the datum it states, so that a run without it prints no
such sentence; templates fail on a missing name (``StrictUndefined``) rather than print an empty one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, cached_property
from typing import Any

import jinja2


@cache
def environment(package: str) -> jinja2.Environment:
    """The Jinja2 environment of ``<package>/templates`` (markdown: no autoescape; block tags leave no blank line)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader(package, "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,  # markdown, not HTML
    )


# the filters every package's templates have (a package's own of the same name replace them)
COMMON_FILTERS: dict[str, Callable[..., str]] = {
    "quoted": lambda name: f"`{name}`",
    "plural": lambda n, word: f"{n} {word}{'' if n == 1 else 's'}",
}


class Templates:
    """One package's templates with its filters, registered once on the package's environment at the first use.

    ``filters`` come after :data:`COMMON_FILTERS` (a package's ``quoted`` that escapes markdown replaces the plain
    one). ``render`` renders a template with them; ``macros`` gives a template's macros, for Python callers.
    """

    def __init__(self, package: str, **filters: Callable[..., Any]) -> None:
        self.package = package
        self.filters = {**COMMON_FILTERS, **filters}

    @cached_property
    def environment(self) -> jinja2.Environment:
        env = environment(self.package)
        env.filters.update(self.filters)
        return env

    def render(self, template: str, **data: Any) -> str:
        """``<package>/templates/<template>`` rendered with ``data``, without leading or trailing blank lines."""
        return self.environment.get_template(template).render(**data).strip("\n")

    def macros(self, template: str = "_macros.md.j2") -> Any:
        """The macros of ``template``, callable from Python (the words a figure title shares with the text)."""
        return self.environment.get_template(template).module
