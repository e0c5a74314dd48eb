"""The JSON Schema of every config kind and the configuration reference, both generated from the config models.

``localentropy configs schema --json`` prints one JSON object mapping each kind (``run``, ``train``, ``sweep``: the
command that runs it) to its JSON Schema; the same schemas ship as ``localentropy/configs/schemas/<kind>.schema.json``
and every shipped config names its own in a ``#:schema`` comment, which editors with a TOML language server (VS
Code's Even Better TOML, taplo, PyCharm) read to check and complete a config as it is typed. The CLI checks more than
a schema can say (a rule between two fields, the estimator or optimizer actually built): a config the schema accepts
can still be refused, with a message naming the field.

``localentropy configs schema`` prints the reference (docs/configuration.md): the fields of every table, their
types, defaults and allowed values from the models, their meanings from the fields' descriptions.
"""

from __future__ import annotations

import argparse
import json
import typing
from typing import Any

from pydantic import BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from localentropy.experiments.comparison.config import PointsConfig, ProblemConfig, RunConfig
from localentropy.experiments.comparison.estimator import EstimatorConfig
from localentropy.experiments.core.config import Check, Table
from localentropy.experiments.core.shipped import SCHEMA_DIR, shipped_configs
from localentropy.experiments.sweeps.config import SweepFile
from localentropy.experiments.sweeps.paths import SHORTHANDS
from localentropy.experiments.training.config import (
    DataConfig,
    FlatnessConfig,
    LocalEntropyMeasure,
    ModelConfig,
    TrainConfig,
)
from localentropy.experiments.training.optim import OptimizerConfig, ScheduleConfig
from localentropy.experiments.tuning.space import Dimension, TuningConfig

KINDS: dict[str, type[Table]] = {"run": RunConfig, "train": TrainConfig, "sweep": SweepFile}
DRAFT = "https://json-schema.org/draft/2020-12/schema"
# the tables of the reference, in order: (heading, model, note)
SECTIONS: list[tuple[str, type[Table], str]] = [
    ("## Comparison configs (`localentropy run`)", RunConfig, ""),
    (
        "### `[problem]` (or each of `[[problems]]`)",
        ProblemConfig,
        "A quadratic takes condition, n_negative and seed; python takes factory and "
        "options; double-well and sharp-wide take options; deep-linear takes widths, rank and seed; regular, "
        "crossing and quartic take none. Every kind takes a label (in `[[problems]]`).",
    ),
    ("### `[points]`", PointsConfig, ""),
    (
        "### `[[estimators]]`",
        EstimatorConfig,
        "A local-entropy estimator takes the fields up to noise_scale, a smoothing estimator sigma and order.",
    ),
    (
        "### `[tuning]` (comparison and sweep configs)",
        TuningConfig,
        "A comparison's [tuning] takes budget, replicates and estimators; a sweep's seeds and optimizers.",
    ),
    ("### A dimension of `[tuning.space]`", Dimension, "Either low, high and log, or choices."),
    ("## Training configs (`localentropy train`)", TrainConfig, ""),
    ("### `[data]`", DataConfig, ""),
    ("### `[model]`", ModelConfig, ""),
    (
        "### `[[optimizers]]`",
        OptimizerConfig,
        "sampler, sampler_options and preset are for entropy-sgd, entropy-adam and parle.",
    ),
    (
        "### `[schedule]` (top level, or an optimizer's own)",
        ScheduleConfig,
        "step takes step_size and gamma; multistep milestones and gamma; cosine min_lr.",
    ),
    ("### `[flatness]`", FlatnessConfig, ""),
    ("### `[flatness.local_entropy]`", LocalEntropyMeasure, ""),
    (
        "## Sweep configs (`localentropy sweep`)",
        SweepFile,
        "A key of set, grid or runs is a dotted path into the base "
        "training config (`optimizers.entropy-sgd.options.gamma`, `*` for every optimizer), `optimizer` (the labels of "
        "the base's optimizers to run) or a shorthand: "
        + ", ".join(f"`{k}` = `optimizers.*.{'.'.join(map(str, v))}`" for k, v in SHORTHANDS.items())
        + ".",
    ),
]


def config_schemas() -> dict[str, dict[str, Any]]:
    """Each config kind's JSON Schema (draft 2020-12), by the command that runs it."""
    return {kind: {"$schema": DRAFT, **model.model_json_schema()} for kind, model in KINDS.items()}


def schema_text(kind: str) -> str:
    """The text of ``localentropy/configs/schemas/<kind>.schema.json``."""
    return json.dumps(config_schemas()[kind], indent=2) + "\n"


def _allowed(field: FieldInfo) -> str:
    """The allowed values a field's check names (the text of its error message), found in its annotation."""
    stack: list[Any] = [*field.metadata, field.annotation]
    while stack:
        item = stack.pop(0)
        if isinstance(item, BeforeValidator) and isinstance(item.func, Check):
            return item.func.allowed
        stack += list(getattr(item, "__metadata__", ())) + list(typing.get_args(item))
    return ""


def _type(schema: dict[str, Any]) -> str:
    words = {
        "integer": "integer",
        "number": "number",
        "string": "string",
        "boolean": "true/false",
        "object": "table",
        "null": "",
    }
    if "$ref" in schema:
        return "table"
    if "enum" in schema or "const" in schema:
        return "string"
    if "anyOf" in schema:
        return " or ".join(dict.fromkeys(t for t in map(_type, schema["anyOf"]) if t))
    if schema.get("type") == "array":
        inner = _type(schema.get("items", {}))
        return f"array of {inner}s" if inner == "table" else f"list of {inner}s" if inner else "list"
    return words.get(schema.get("type", ""), "value")


def _default(field: FieldInfo, nested: bool) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    if nested:
        return "see below" if field.default is PydanticUndefined else "none"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is None:
        return "none"
    return json.dumps(value)


def _table(model: type[Table]) -> list[str]:
    properties = model.model_json_schema()["properties"]
    rows = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for name, field in model.model_fields.items():
        key = field.alias or name
        if not field.description:
            raise KeyError(f"{model.__name__}.{name}: no description (every field is documented)")
        kind = _type(properties[key])
        nested = "$ref" in json.dumps(properties[key])
        rows.append(f"| `{key}` | {kind} | {_default(field, nested)} | {_allowed(field)} | {field.description} |")
    return rows


EDITORS = """## Checking a config in your editor

`localentropy configs schema --json` prints the JSON Schema of every config kind (`run`, `train`, `sweep`), and
the same schemas are installed with the package (`localentropy/configs/schemas/<kind>.schema.json`). Every shipped
config's first line names its schema for TOML language servers:

```toml
#:schema ./schemas/run.schema.json
```

`localentropy configs copy NAME` rewrites that line to the installed schema's absolute location, so a copy is
checked wherever it is written. For a config of your own, add the line (with the path of a schema file you saved
with `localentropy configs schema --json`), or map file names to schemas in your editor: in VS Code with the Even
Better TOML extension (taplo), `"evenBetterToml.schema.associations": {".*train_.*\\\\.toml": "file:///path/to/
train.schema.json"}`; taplo on the command line reads the same `#:schema` line (`taplo check my.toml`); PyCharm
takes a JSON Schema mapping under Languages & Frameworks > Schemas and DTDs. The editor then flags unknown fields,
wrong types and out-of-range values as you type and completes field names from their descriptions. The schema
cannot express every rule (one field's range depending on another, the sampler actually built): `localentropy` still
checks the whole config before anything runs."""


def configuration_markdown() -> str:
    """The configuration part of docs/configuration.md."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `localentropy configs schema > docs/configuration.md` from the config models; do not "
        "edit (tests/cli/test_reference_doc.py fails when this file is stale). -->",
        "",
        "Three kinds of TOML config, each run by one command: a **comparison** config (`localentropy run`), a "
        "**training** config (`localentropy train`) and a **sweep** config (`localentropy sweep`). A config is "
        "checked whole before anything runs; every mistake is reported at once with its field, the value found "
        "and what is allowed (exit status 2). Unknown fields are errors. `nan` and `inf` are refused where a "
        "number is expected, `true` where a number is expected and `10.0` where an integer is. A default of "
        "`none` means the field is unset unless given.",
        "",
        "Every command that takes a config also takes the name of a shipped config; `localentropy configs copy "
        "NAME` writes an editable copy. How a comparison runs and what it reports: `localentropy docs comparison`; "
        "training: `localentropy docs training`; sweeps: `localentropy docs sweeps`.",
        "",
        EDITORS,
        "",
    ]
    for heading, model, note in SECTIONS:
        lines += [heading, "", *([note, ""] if note else []), *_table(model), ""]
    lines += [
        "## The shipped configs (`localentropy configs`)",
        "",
        "| name | command | what it is |",
        "|---|---|---|",
        *(f"| `{c.name}` | `localentropy {c.kind} {c.name}` | {c.summary} |" for c in shipped_configs()),
        "",
    ]
    return "\n".join(lines)


def commands_markdown(parser: argparse.ArgumentParser, epilog: str) -> str:
    """The command table of docs/configuration.md from the command line's parser (usage and summary of each)."""
    lines = [
        "",
        "## Commands",
        "",
        "```",
        parser.format_usage().strip(),
        "```",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    commands = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    helps = {a.dest: a.help for a in commands._choices_actions}  # type: ignore[attr-defined]
    for name, command in commands.choices.items():  # type: ignore[union-attr]
        actions = command._subparsers._group_actions[0] if command._subparsers else None
        action_helps = {a.dest: a.help for a in actions._choices_actions} if actions else {}  # type: ignore[attr-defined]
        for sub_name, sub in [(name, command)] if actions is None else actions.choices.items():  # type: ignore[union-attr]
            usage = " ".join(sub.format_usage().split()[1:])
            lines.append(f"| `{usage}` | {helps.get(name, '') if actions is None else action_helps[sub_name]} |")
    lines += ["", *(" ".join(paragraph.split()) + "\n" for paragraph in epilog.split("\n\n"))]
    return "\n".join(lines)


__all__ = ["KINDS", "SCHEMA_DIR", "config_schemas", "configuration_markdown", "schema_text"]
