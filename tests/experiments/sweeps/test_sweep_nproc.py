"""A sweep whose runs are `localentropy train --nproc N` (`nproc` in the sweep config): validation, the resolved
config, the config handed to the ranks as TOML, and one run end to end on 2 processes."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from localentropy.experiments.core.config import ConfigError, toml_text
from localentropy.experiments.sweeps.runner import parse_sweep_config, run_sweep
from tests.experiments.sweeps.test_sweep import BASE, sweep

pytest.importorskip("sklearn")


def test_nproc_is_read_and_recorded_only_when_not_1() -> None:
    plain = parse_sweep_config(sweep(grid={"seed": [0, 1]}))
    assert plain.nproc == 1 and "nproc" not in plain.resolved()  # the resolved config of existing sweeps unchanged
    two = parse_sweep_config(sweep(grid={"seed": [0, 1]}, nproc=2))
    assert two.nproc == 2 and two.resolved()["nproc"] == 2


@pytest.mark.parametrize(("value", "expected"), [(0, "nproc: got 0"), ("2", "nproc: got '2'")])
def test_a_bad_nproc_names_the_field(value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sweep_config(sweep(grid={"seed": [0]}, nproc=value))
    assert any(p.startswith(expected) for p in caught.value.problems), caught.value.problems


def test_nproc_refuses_token_streams_as_train_nproc_does() -> None:
    base = copy.deepcopy(BASE) | {
        "data": {"source": "markov-text"},
        "model": {"name": "char-lstm"},
        "flatness": {"measures": []},
    }
    with pytest.raises(ConfigError, match="data-parallel training"):
        parse_sweep_config(sweep(grid={"seed": [0]}, base=base, nproc=2))


def test_toml_text_reads_back_equal() -> None:
    config = copy.deepcopy(BASE) | {
        "name": "x",
        "weird key": 'a "quoted" \\ string',
        "big": 1e-300,
        "inf": math.inf,
        "nested": {"list": [[1, 2], {"a": True}]},
    }
    import tomllib

    assert tomllib.loads(toml_text(config)) == config
    with pytest.raises(ValueError, match="TOML cannot hold None"):
        toml_text({"a": None})


@pytest.mark.slow  # one launch of 2 processes: about 30 s on the loaded 2-core machine
def test_a_sweep_run_goes_through_the_launcher(tmp_path: Path) -> None:
    base = copy.deepcopy(BASE) | {"data": {"source": "digits", "validation_fraction": 0.1, "train_limit": 256}}
    base["optimizers"] = [BASE["optimizers"][0]]
    path, _, results = run_sweep(
        parse_sweep_config(sweep(grid={"seed": [0]}, base=base, nproc=2)), tmp_path / "s", workers=2
    )
    (run,) = results["runs"]
    assert run["status"] == "ok", run["message"]
    trained = json.loads((path / run["dir"] / "results.json").read_text())
    assert trained["world_size"] == 2 and trained["records"][0]["bytes_communicated"] > 0
