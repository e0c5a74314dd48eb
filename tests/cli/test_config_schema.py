"""The published JSON Schemas: `localentropy configs schema --json` prints one per config kind, the installed copies
match it, every shipped config names its schema and satisfies it, and a misspelt field does not."""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest

from localentropy.cli import main
from localentropy.experiments.core.shipped import SCHEMA_LINE, copy_config, schema_path, shipped_config, shipped_configs
from localentropy.experiments.schema import KINDS, config_schemas, schema_text

SHIPPED = shipped_configs()


def test_configs_schema_json_prints_one_schema_per_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs", "schema", "--json"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert set(schemas) == set(KINDS) == {"run", "train", "sweep"}
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_installed_schemas_are_the_generated_ones(kind: str) -> None:
    assert schema_path(kind).read_text() == schema_text(kind), (
        "stale: regenerate with python -c 'from localentropy.experiments.schema import KINDS, schema_text; "
        "from localentropy.experiments.core.shipped import schema_path; "
        "[schema_path(k).write_text(schema_text(k)) for k in KINDS]'"
    )


@pytest.mark.parametrize("config", SHIPPED, ids=[c.name for c in SHIPPED])
def test_every_shipped_config_names_and_satisfies_its_schema(config) -> None:
    text = config.path.read_text()
    assert text.splitlines()[0] == f"{SCHEMA_LINE}./schemas/{config.kind}.schema.json"
    assert (config.path.parent / "schemas" / f"{config.kind}.schema.json").is_file()
    jsonschema.validate(tomllib.loads(text), config_schemas()[config.kind])


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("quadratic20", lambda d: d.update(replicate=3)),  # replicates, misspelt
        ("quadratic20", lambda d: d["estimators"][0].update(step_size_fration=0.1)),
        ("quadratic20", lambda d: d["problem"].update(dim="20")),
        ("train_digits_small", lambda d: d.update(batchsize=32)),
        ("train_digits_small", lambda d: d["optimizers"][0].update(samplr="sgld")),
        ("train_digits_small", lambda d: d["schedule"].update(kind="cosin")),
        ("sweep_scoping", lambda d: d.update(gird={})),
        ("quadratic20", lambda d: d.update(tuning={"seeds": 2})),  # a sweep's [tuning] field in a comparison
        ("sweep_scoping", lambda d: d.update(tuning={"replicates": 2})),  # and a comparison's in a sweep
    ],
)
def test_a_typo_fails_the_schema(name: str, change) -> None:
    config = shipped_config(name)
    data = tomllib.loads(config.path.read_text())
    change(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, config_schemas()[config.kind])


def test_a_copy_names_the_installed_schema(tmp_path) -> None:
    target = copy_config(shipped_config("quadratic20"), tmp_path)
    first = target.read_text().splitlines()[0]
    assert first == f"{SCHEMA_LINE}{schema_path('run').as_uri()}"
    assert tomllib.loads(target.read_text()) == tomllib.loads(shipped_config("quadratic20").path.read_text())
