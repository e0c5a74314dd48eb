"""The recurrent-network steps: their shipped sweeps tune every optimizer alike, and the findings section renders
from a tuned sweep (a tiny real run of both steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.reproduce import findings
from localentropy.experiments.reproduce import run as reproduce
from localentropy.experiments.reproduce.findings.recurrent import IMAGE_LEVEL, TEXT_MARGIN, recurrent_claims
from localentropy.experiments.sweeps.config import load_sweep_config
from tests.experiments.reproduce.test_reproduce import TINY as TINY_STEPS

STEPS = ("recurrent_char", "recurrent_row")
TINY = {step: TINY_STEPS[step] for step in STEPS}  # smaller than --quick: 2 seeds, one epoch, one trial each
# what each method's authors tune (issue 35): every optimizer's space holds these names
AUTHORS_TUNE = {
    "sgd": {"lr", "options.momentum"},
    "adam": {"lr"},
    "entropy-sgd": {"lr", "options.gamma", "step_size", "options.scoping"},
    "entropy-adam": {"lr", "options.gamma", "step_size"},
}


@pytest.mark.parametrize("name", ["sweep_recurrent_char.toml", "sweep_recurrent_row.toml"])
def test_shipped_recurrent_sweeps_tune_every_optimizer_alike(name: str) -> None:
    sweep = load_sweep_config(shipped_dir() / name)
    assert sweep.tuning is not None and sweep.tuning.optimizers == list(AUTHORS_TUNE)
    assert {label: set(space) for label, space in sweep.tuning.space.items()} == AUTHORS_TUNE
    base = sweep.base
    sgd = next(o for o in base["optimizers"] if o["label"] == "sgd")
    assert sgd["options"]["nesterov"] is True  # SGD with Nesterov momentum, as its authors run it
    assert base["schedule"]["kind"] == "cosine"
    assert sorted({run.config["seed"] for run in sweep.runs}) == [0, 1, 2, 3, 4]
    if base["data"]["source"] == "markov-text":
        assert base["data"]["options"]["sample_seed"] == "run"  # each seed samples its own text


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("recurrent")
    patch = pytest.MonkeyPatch()
    patch.setattr(reproduce, "QUICK", {**reproduce.QUICK, **TINY})
    try:
        with open(root / "log.txt", "w") as log:
            reproduce.reproduce(quick=True, out=root / "runs", steps=",".join(STEPS), workers=1, progress=log)
    finally:
        patch.undo()
    return root / "runs", findings.write_recurrent(root / "runs", root / "doc" / "recurrent.md")


def test_the_section_renders_from_a_tuned_sweep(tiny: tuple[Path, Path]) -> None:
    out, doc = tiny
    text = doc.read_text()
    numbers = json.loads((doc.parent / "recurrent" / "findings.json").read_text())
    char, row = numbers["recurrent"]["view"]["char"], numbers["recurrent"]["view"]["row"]
    for step, view in (("recurrent_char", char), ("recurrent_row", row)):
        recorded = json.loads((out / step / "results.json").read_text())["tuning"]["optimizers"]
        assert set(view["tuning"]["chosen"]) == set(AUTHORS_TUNE) and view["tuning"]["trials"] == 1
        for label, record in recorded.items():
            assert view["tuning"]["chosen"][label] == record["chosen"]  # read from the record, not recomputed
            lr = record["chosen"]["lr"]
            assert f"| {label} | lr {lr:.3g}" in text  # the table shows the chosen values
    # the level is fixed before looking at the methods: the floor plus a stated margin, a stated error
    assert char["level"] == pytest.approx(char["floor"] + TEXT_MARGIN) and row["level"] == IMAGE_LEVEL
    assert char["count_model"] is not None and "| count model (order 2" in text and "| exact floor" in text
    assert set(char["above_floor"]) == set(AUTHORS_TUNE)
    assert set(char["within"]) == {lab for lab, gap in char["above_floor"].items() if gap <= TEXT_MARGIN}
    assert f"{len(char['within'])} of 4 optimizers end within {TEXT_MARGIN} bits" in text
    assert "tuned alike before its runs (1 trial each on 1 tuning seed" in text
    assert "{{" not in text and "{%" not in text
    for name in ("recurrent_char.png", "recurrent_row.png"):
        assert (doc.parent / "recurrent" / name).is_file()
    claims = recurrent_claims(out / "recurrent_char")
    assert len(claims) == 6  # two pairs x (epochs, seconds, final)
