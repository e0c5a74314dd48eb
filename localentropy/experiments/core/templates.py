"""Prose rendered from data with Jinja2: one environment per package's ``templates/`` folder.

A sentence that states a fact sits inside a condition on the datum it states, so that a run without it prints no
such sentence; templates fail on a missing name (``StrictUndefined``) rather than print an empty one.
"""

from __future__ import annotations

from functools import cache
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


def render(package: str, template: str, **data: Any) -> str:
    """``<package>/templates/<template>`` rendered with ``data``, without leading or trailing blank lines."""
    return environment(package).get_template(template).render(**data).strip("\n")
