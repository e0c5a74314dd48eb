"""docs/configuration.md is generated from the config classes and the command line: it must not go stale."""

from __future__ import annotations

from pathlib import Path

from localentropy.cli import reference_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_md_is_the_generated_reference() -> None:
    assert DOC.read_text() == reference_markdown(), (
        "docs/configuration.md is stale: regenerate it with `localentropy configs schema > docs/configuration.md`"
    )


def test_the_reference_lists_every_field_command_and_shipped_config() -> None:
    from localentropy.experiments.comparison.config import EstimatorConfig, RunConfig
    from localentropy.experiments.core.shipped import shipped_configs
    from localentropy.experiments.training.config import FlatnessConfig, TrainConfig

    text = reference_markdown()
    for cls in (RunConfig, EstimatorConfig, TrainConfig, FlatnessConfig):
        for name, field in cls.model_fields.items():
            assert f"| `{field.alias or name}` |" in text, (cls.__name__, name)
    for command in ("run", "train", "sweep", "reproduce", "report", "configs copy", "samplers", "demo", "digits"):
        assert f"| `localentropy {command} " in text, command
    assert all(f"| `{c.name}` |" in text for c in shipped_configs())
