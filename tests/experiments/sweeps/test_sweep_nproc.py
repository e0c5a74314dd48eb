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
        parse_sweep_config(sweep(grid={"seed": [0]}, base=base, nproc=2)), tmp_path / "s", workers=2, quiet_wait=0
    )
    (run,) = results["runs"]
    assert run["status"] == "ok", run["message"]
    trained = json.loads((path / run["dir"] / "results.json").read_text())
    assert trained["world_size"] == 2 and trained["records"][0]["bytes_communicated"] > 0


@pytest.mark.slow  # two tuning trials and one evaluation run, each a launch of 2 processes: about 1 minute alone
def test_a_tuned_sweep_tunes_parle_through_the_launcher_on_its_replicas(tmp_path: Path) -> None:
    base = copy.deepcopy(BASE) | {"data": {"source": "digits", "validation_fraction": 0.1, "train_limit": 256}}
    base["optimizers"] = [
        {
            "label": "parle",
            "kind": "parle",
            "lr": 0.5,
            "options": {"gamma": 1.0, "rho": 0.1, "inner_steps": 2},
            "sampler": "sgld",
            "sampler_options": {"step_size": 0.1, "temperature": 1e-8},
        }
    ]
    space = {"parle": {"options.rho": {"low": 0.01, "high": 1.0, "log": True}}}
    data = sweep(grid={"seed": [0]}, base=base, nproc=2)
    data["tuning"] = {"trials": 2, "max_extensions": 0, "seeds": 1, "space": space}
    path, _, results = run_sweep(parse_sweep_config(data), tmp_path / "s", workers=2, quiet_wait=0)
    record = results["tuning"]["optimizers"]["parle"]
    assert record["trials"] == 2 and set(record["chosen"]) == {"options.rho"}
    assert [trial["state"] for trial in record["history"]] == ["complete", "complete"]
    assert all(math.isfinite(trial["objective"]) for trial in record["history"])
    (run,) = results["runs"]
    trained = json.loads((path / run["dir"] / "results.json").read_text())
    assert trained["world_size"] == 2
    assert trained["config"]["optimizers"][0]["options"]["rho"] == pytest.approx(record["chosen"]["options.rho"])


def test_tuning_trials_of_an_nproc_sweep_go_through_the_launcher(tmp_path: Path, monkeypatch) -> None:
    """Each trial is `train --nproc` (Parle's replicas; one process would train Parle without its elastic term)."""
    from localentropy.experiments.sweeps import tuning

    calls = []

    def launched(config: dict, nproc: int) -> tuple[float, int]:
        calls.append((config["seed"], nproc, config["optimizers"][0]["options"]["rho"]))
        return 0.5, 10

    monkeypatch.setattr(tuning, "launched_validation_error", launched)
    monkeypatch.setattr(tuning, "validation_error", lambda config: pytest.fail("a trial ran in one process"))
    base = copy.deepcopy(BASE)
    base["optimizers"] = [
        {"label": "parle", "kind": "parle", "lr": 0.5, "options": {"gamma": 1.0, "rho": 0.1, "inner_steps": 2}}
    ]
    data = sweep(grid={"seed": [0]}, base=base, nproc=2)
    data["tuning"] = {
        "trials": 3,
        "max_extensions": 0,
        "seeds": 2,
        "space": {"parle": {"options.rho": {"low": 0.01, "high": 1.0, "log": True}}},
    }
    config = parse_sweep_config(data)
    job = tuning.tuning_jobs(config.base, config.tuning, config.spaces, config.nproc)[0][1]
    record = tuning.tune_one(job, str(tmp_path))
    assert len(calls) == 6 and {(seed, nproc) for seed, nproc, _ in calls} == {(1_000_000, 2), (1_000_001, 2)}
    assert record["chosen"]["options.rho"] in {rho for _, _, rho in calls}


def test_an_nproc_sweep_tunes_an_optimizer_without_replicas_in_one_process(tmp_path: Path, monkeypatch) -> None:
    """SGD (or Entropy-SGD) under DDP is one process on the whole batch: its trials need no ranks."""
    from localentropy.experiments.sweeps import tuning

    ran = []
    monkeypatch.setattr(tuning, "launched_validation_error", lambda config, nproc: pytest.fail("a trial launched"))
    monkeypatch.setattr(tuning, "validation_error", lambda config: ran.append(config["seed"]) or (0.5, 10))
    data = sweep(grid={"seed": [0]}, base=copy.deepcopy(BASE), nproc=2)
    data["tuning"] = {"trials": 2, "max_extensions": 0, "seeds": 1}
    config = parse_sweep_config(data)
    jobs = tuning.tuning_jobs(config.base, config.tuning, config.spaces, config.nproc)
    assert jobs and {payload["nproc"] for _, payload, _ in jobs} == {1}
    for _, payload, _ in jobs:
        tuning.tune_one(payload, str(tmp_path), nproc=2)  # as the executor calls it for an nproc sweep
    assert ran and set(ran) == {1_000_000}
