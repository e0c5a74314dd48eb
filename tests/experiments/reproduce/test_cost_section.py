"""The cost section (Q1) of the findings, from a real (tiny) tuned run of the shipped sweep_cost.toml: every
optimizer's chosen values, the ranges searched and the edges come from the sweep's tuning record, and every number
the section prints is in its record."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from localentropy.experiments.core.config import read_toml
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.reproduce.findings.cost import section_cost
from localentropy.experiments.reproduce.findings.render import unsupported_numbers
from localentropy.experiments.sweeps.config import parse_sweep_config
from localentropy.experiments.sweeps.runner import run_sweep
from localentropy.experiments.tuning.record import value_text

CONFIG = shipped_dir() / "sweep_cost.toml"
LABELS = ["entropy-sgd", "adam", "sgd", "lpf-sgd"]


def tiny_cost(**tuning: int) -> dict:
    """sweep_cost.toml at a tiny size: its spaces, its optimizers and their schedules, 2 seeds, 2 effective
    epochs of the small mnistfc, Entropy-SGD with L = 2."""
    data = copy.deepcopy(read_toml(CONFIG))
    data["grid"]["seed"] = [0, 1]
    data["set"] |= {"effective_epochs": 2, "model.name": "small-mnistfc", "optimizers[0].options.inner_steps": 2}
    data["tuning"] |= tuning
    return data


def test_the_shipped_sweep_tunes_every_optimizer_alike() -> None:
    config = parse_sweep_config(read_toml(CONFIG), name="sweep_cost", source=str(CONFIG))
    assert config.tuning is not None and sorted(config.spaces) == sorted(LABELS)
    assert config.base["effective_epochs"] == 40  # where validation has stopped improving (the config's comment)
    assert set(config.spaces["sgd"]) == {"lr", "options.momentum"}
    assert set(config.spaces["adam"]) == {"lr"}
    assert set(config.spaces["entropy-sgd"]) == {"lr", "options.gamma", "step_size", "options.scoping"}
    assert set(config.spaces["lpf-sgd"]) == {"lr", "options.sigma"}
    for opt in config.base["optimizers"]:  # every range brackets the base's hand-set value
        values = {"lr": opt["lr"], **{f"options.{k}": v for k, v in opt.get("options", {}).items()}}
        values |= opt.get("sampler_options", {})
        for name, dim in config.spaces[opt.get("label", opt["kind"])].items():
            assert dim.low < values[name.removeprefix("sampler_options.")] < dim.high, (opt["kind"], name)


@pytest.fixture(scope="module")
def cost_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reproduce")
    sweep = parse_sweep_config(tiny_cost(trials=2, seeds=1), name="sweep_cost", source=str(CONFIG))
    run_sweep(sweep, out / "cost", executor="inline")
    return out


def test_every_number_of_the_cost_section_is_in_its_record(cost_run: Path, tmp_path: Path) -> None:
    numbers: dict = {}
    lines, summary = section_cost(cost_run, tmp_path, None, numbers)
    text = "\n".join([*lines, summary])
    view = numbers["cost"]["view"]
    assert "## Q1. Cost" in text and "2 effective epochs for every optimizer" in text
    assert "Every optimizer was first tuned alike: 2 trials each on 1 tuning seed apart from the reported ones" in text
    assert "every optimizer tuned alike (2 trials each)" in summary
    tuning = view["tuning"]
    assert sorted(tuning["chosen"]) == sorted(LABELS)
    for label, chosen in tuning["chosen"].items():  # the chosen values, as the tuning table shows them
        row = next(line for line in lines if line.startswith(f"| {label} |"))
        assert all(f"{name} = {value_text(value)}" in row for name, value in chosen.items()), row
    if tuning["at_edge"]:
        assert "At an edge of its range" in text
        assert all(f"`{label}` {', '.join(names)}" in text for label, names in tuning["at_edge"].items())
    else:
        assert "No chosen value lay at an edge of its range." in text
    assert "searched" in view and view["searched"]["entropy-sgd"] == 4
    assert "4 hyperparameters for `entropy-sgd`" in text and "1 hyperparameter for `adam`" in text
    assert "`entropy-sgd` runs the `authors` inner loop with L = 2" in text
    assert "lr multiplied by 0.1 after epoch 1" in text and "lr multiplied by 0.2 every 30 epochs" in text
    assert "100 effective epochs" not in text
    assert unsupported_numbers(text, numbers, {"5,000"}) == []  # the mnist5k source's size: fixed text


def test_an_untuned_sweep_says_so(cost_run: Path, tmp_path: Path) -> None:
    """A cost sweep without [tuning] (an older record) renders without a tuning paragraph."""
    import json

    path = cost_run / "cost" / "results.json"
    results = json.loads(path.read_text())
    results.pop("tuning")
    untuned = tmp_path / "untuned"
    (untuned / "cost").mkdir(parents=True)
    (untuned / "cost" / "results.json").write_text(json.dumps(results))
    numbers: dict = {}
    lines, summary = section_cost(untuned, tmp_path, None, numbers)
    text = "\n".join(lines)
    assert "The optimizers run at hand-set values (no `[tuning]`)." in text and "tuned alike" not in text + summary


def test_the_points_where_entropy_sgd_is_lowest_are_printed_as_effective_epochs() -> None:
    """The record keys the matched errors by the points' text (JSON keys); the summary prints the points where
    Entropy-SGD's mean was the lowest as numbers (a quick reproduction, where it is lowest at some, failed here)."""
    from localentropy.experiments.reproduce.findings.cost import _lowest_at
    from localentropy.experiments.reproduce.findings.render import TEMPLATES

    matched = {
        "entropy-sgd": {"2.0": [0.10, 0.12], "4.0": [0.30, 0.20]},
        "sgd": {"2.0": [0.20, 0.20], "4.0": [0.10, 0.10]},
    }
    lowest = _lowest_at(matched, "entropy-sgd")
    assert lowest == {"points": 2, "lowest": [2.0]}
    template = '{% import "_macros.md.j2" as say %}{{ say.lowest_at(l) }}'
    text = TEMPLATES.environment.from_string(template).render(l=lowest)
    assert (
        text
        == "Its mean test error was the lowest of all optimizers at 1 of its 2 evaluation points (2 effective epochs)."
    )
