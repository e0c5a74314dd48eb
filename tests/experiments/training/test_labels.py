"""Training labels that cannot lie: defaults from the kind and inner sampler, and a label naming an optimizer
kind or sampler the optimizer does not run is a config error (exit 2) naming both."""

from __future__ import annotations

from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.sweeps.paths import optimizer_label
from localentropy.experiments.training.config import parse_train_config


def config(*optimizers: dict) -> dict:
    return {
        "effective_epochs": 1,
        "data": {"source": "digits"},
        "model": {"name": "mlp"},
        "optimizers": list(optimizers),
    }


SGD = {"kind": "sgd", "lr": 0.1}
ESGD = {
    "kind": "entropy-sgd",
    "lr": 0.1,
    "options": {"gamma": 1.0},
    "sampler": "sghmc",
    "sampler_options": {"step_size": 0.01},
}


def test_default_labels_name_what_runs():
    labels = [o.label for o in parse_train_config(config(SGD, ESGD, {**SGD, "lr": 0.5})).optimizers]
    assert labels == ["sgd (lr=0.1)", "entropy-sgd (sghmc)", "sgd (lr=0.5)"]
    # a sweep names an unlabelled optimizer as the training config does
    assert optimizer_label(ESGD, 1) == "entropy-sgd (sghmc)" and optimizer_label(SGD, 0) == "sgd"


def test_a_label_naming_another_kind_or_sampler_is_refused():
    with pytest.raises(
        ConfigError,
        match=r"optimizers\[0\].label: got 'sgd', which names 'sgd' but this entry runs "
        r"'adam'",
    ):
        parse_train_config(config({"label": "sgd", "kind": "adam", "lr": 0.01}))
    with pytest.raises(ConfigError, match="names 'sgld' but this entry runs 'entropy-sgd' with sampler 'sghmc'"):
        parse_train_config(config({**ESGD, "label": "entropy-sgd (sgld)"}))
    honest = [{**ESGD, "label": "entropy-sgd (sghmc)"}, {**SGD, "label": "baseline"}]
    assert [o.label for o in parse_train_config(config(*honest)).optimizers] == ["entropy-sgd (sghmc)", "baseline"]


def test_cli_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "lying.toml"
    path.write_text(
        'effective_epochs = 1\ndata = { source = "digits" }\nmodel = { name = "mlp" }\n'
        '[[optimizers]]\nlabel = "sgd"\nkind = "adam"\nlr = 0.01\n'
    )
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "names 'sgd' but this entry runs 'adam'" in err and "Traceback" not in err
