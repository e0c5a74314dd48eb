"""``localentropy reproduce`` and the findings document: the plan, the resume logic, the numbers, end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.reproduce import findings
from localentropy.experiments.reproduce import run as reproduce
from localentropy.experiments.reproduce.findings.replication import STEP_CLAIMS

CONFIGS = shipped_dir()

# Smaller than --quick: every step still runs for real, on one seed, a couple of epochs and a few replicates.
TINY = {
    "shootout": {"replicates": 2, "budgets": 1, "tuning": {"trials": 3, "replicates": 2, "budget": 400}},
    "smoothing_sharp_wide": {"replicates": 2, "budgets": 1},
    "smoothing_quadratic": {"replicates": 2, "budgets": 1},
    "smoothing_targets": {"n_grid": 61},
    "flatness": {
        "seeds": 2,
        "set": {
            "effective_epochs": 2,
            "flatness.power_iterations": 5,
            "flatness.hutchinson_samples": 3,
            "flatness.lanczos_steps": 5,
            "flatness.lanczos_runs": 1,
        },
    },
    "cost": {
        "seeds": 2,
        "set": {"effective_epochs": 2, "model.name": "small-mnistfc", "optimizers[0].options.inner_steps": 2},
        "tuning": {"trials": 2, "seeds": 1},
    },
    "samplers_training": {"seeds": 2, "set": {"effective_epochs": 2}, "tuning": {"trials": 2, "seeds": 1}},
    "sensitivity": {"seeds": 2, "set": {"effective_epochs": 1}},
    "scoping": {"seeds": 2, "set": {"effective_epochs": 1}},
    "overhead_training": {"seeds": 2, "set": {"effective_epochs": 1}},
    "overhead_accuracy": {"replicates": 2, "outer_steps": 8, "inner_steps": (1, 2), "dim": 5},
    "recurrent_char": {
        "seeds": 2,
        "set": {"effective_epochs": 1, "data.options.length": 20000},
        "tuning": {"trials": 1, "seeds": 1, "max_extensions": 0},
    },
    "recurrent_row": {
        "seeds": 2,
        "set": {"effective_epochs": 1, "data.train_limit": 500},
        "tuning": {"trials": 1, "seeds": 1, "max_extensions": 0},
    },
    "atlas": {"quick": True, "samplers": ["sgld"], "targets": ["banana"]},
    "scale": {"seeds": 2, "set": {"effective_epochs": 1}, "tuning": {"trials": 1, "seeds": 1, "max_extensions": 0}},
    "scale_compute": {"repeats": 3},
    "llc_samplers": {
        "replicates": 2,
        "budgets": 1,
        "set": {"chains": 48, "keep_draws": False},
        "tuning": {"trials": 3, "replicates": 2},
    },
    "llc_training": {
        "seeds": 2,
        "set": {"effective_epochs": 1, "flatness.examples": 200, "flatness.power_iterations": 5},
    },
    "overhead_speed": {
        "args": [
            "--quick",
            "--hidden",
            "32",
            "--sampler-repeats",
            "2",
            "--entropy-repeats",
            "1",
            "--max-seconds",
            "2",
            "--max-other-cores",
            "-1",
        ]  # keep every repeat: the test must not depend on a quiet machine
    },
}


# ------------------------------------------------------------------------------------------------ numbers


def test_paired_by_hand() -> None:
    d = findings.paired({0: 0.05, 1: 0.07, 2: 0.06, 3: 0.9}, {0: 0.04, 1: 0.05, 2: 0.06})
    assert d["n"] == 3 and d["higher"] == 2 and d["lower"] == 0
    assert d["mean"] == pytest.approx(0.01)
    assert d["sd"] == pytest.approx(0.01)
    # t_{0.975, 2} = 4.302653 times sd / sqrt(3)
    assert d["ci95"] == pytest.approx(4.302653 * 0.01 / math.sqrt(3), rel=1e-5)


def test_paired_text_says_what_the_interval_allows() -> None:
    clear = findings.paired({i: 0.05 for i in range(5)} | {0: 0.051}, {i: 0.03 for i in range(5)})
    assert "is worse than" in findings.paired_text(clear, "a", "b")
    noisy = findings.paired({0: 0.05, 1: 0.03, 2: 0.06}, {0: 0.04, 1: 0.05, 2: 0.05})
    assert "not distinguishable" in findings.paired_text(noisy, "a", "b")
    assert "share no finished seed" in findings.paired_text(findings.paired({}, {0: 1.0}), "a", "b")


def test_mean_sd_and_pm() -> None:
    assert findings.mean_sd([]) == (None, None)
    assert findings.mean_sd([1.0]) == (1.0, None)
    assert findings.pm([0.01, 0.03], 100) == "2.00 ± 1.41"
    assert findings.pm([], 100) == "—"
    assert findings.pm([float("nan"), 0.02], 100) == "2.00"


def test_first_reach() -> None:
    curve = [
        {"test_error": 0.9, "effective_epochs": 0.0},
        {"test_error": 0.05, "effective_epochs": 20.0},
        {"test_error": 0.04, "effective_epochs": 40.0},
    ]
    assert findings.first_reach(curve, 0.05, "effective_epochs") == 20.0
    assert findings.first_reach(curve, 0.01, "effective_epochs") is None


# ------------------------------------------------------------------------------------------------ the plan


@pytest.mark.parametrize("quick", [False, True])
def test_every_step_config_is_valid(quick: bool) -> None:
    plan = reproduce.plan(CONFIGS, quick)
    assert [s["name"] for s in plan["steps"]] == [s.name for s in reproduce.STEPS]
    for entry in plan["steps"]:
        reproduce._validate(entry, CONFIGS)  # raises ConfigError on a bad config


def test_quick_changes_only_the_sizes() -> None:
    full, quick = reproduce.plan(CONFIGS, False), reproduce.plan(CONFIGS, True)
    for f, q in zip(full["steps"], quick["steps"], strict=True):
        if "tuning" in f.get("config", {}):  # a smaller search: fewer trials, replicates, seeds per trial or rounds
            sizes = ("trials", "replicates", "seeds", "max_extensions")
            assert all(q["config"]["tuning"].get(k, 0) <= f["config"]["tuning"].get(k, 0) for k in sizes)
            assert {k: v for k, v in f["config"]["tuning"].items() if k not in sizes} == {
                k: v for k, v in q["config"]["tuning"].items() if k not in sizes
            }
        if f["kind"] == "sweep":
            assert len(q["config"]["grid"]["seed"]) <= min(3, len(f["config"]["grid"]["seed"]))
            rest_f = {k: v for k, v in f["config"].items() if k not in ("grid", "set", "tuning")}
            rest_q = {k: v for k, v in q["config"].items() if k not in ("grid", "set", "tuning")}
            assert rest_f == rest_q
            assert {k: v for k, v in f["config"]["grid"].items() if k != "seed"} == {
                k: v for k, v in q["config"]["grid"].items() if k != "seed"
            }
        if f["kind"] == "run":  # the tuning's sizes aside (above)
            assert q["config"]["replicates"] <= f["config"]["replicates"]
            assert q["config"].get("problem") == f["config"].get("problem")
            assert q["config"].get("problems") == f["config"].get("problems")
    # --quick is budgeted at 10 minutes (its steps' minutes were measured alone: 5.5 in all)
    assert reproduce.expected_minutes(True) < 10 and 10 < reproduce.expected_minutes(False) < 90


def test_missing_configs_directory_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--quick", "--configs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "--configs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_failed_step_writes_no_document_and_the_rerun_resumes(tmp_path: Path) -> None:
    calls: list[str] = []

    def runner(step, config, configs, out, workers, progress, tuned_in=None):
        calls.append(step.name)
        if step.name == "smoothing_quadratic" and calls.count(step.name) == 1:
            raise KeyboardInterrupt
        out.mkdir(parents=True, exist_ok=True)
        return "fresh"

    steps = reproduce.STEPS[:4]
    doc = tmp_path / "doc.md"
    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce(quick=True, out=tmp_path / "r", doc=doc, steps=steps, runner=runner)
    assert not doc.exists() and not (tmp_path / "r" / "COMPLETE").exists()
    saved = json.loads((tmp_path / "r" / "records" / "timings.json").read_text())
    assert set(saved) == {"shootout", "smoothing_sharp_wide"}


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("reproduce")
    patch = pytest.MonkeyPatch()
    patch.setattr(reproduce, "QUICK", TINY)
    try:
        with open(root / "log.txt", "w") as log:
            doc, mode = reproduce.reproduce(
                quick=True, out=root / "runs", doc=root / "doc" / "findings.md", workers=1, progress=log
            )
    finally:
        patch.undo()
    assert mode == "quick"
    return root, doc


@pytest.mark.slow
def test_tiny_reproduction_writes_every_section(tiny_run: tuple[Path, Path]) -> None:
    root, doc = tiny_run
    text = doc.read_text()
    for heading in (
        "## Q1. Cost",
        "## Q2. Exponentiated versus direct smoothing",
        "## Q3. Other MCMC",
        "## Sensitivity",
        "## Cutting the overhead",
        "## Recurrent networks",
        "## P1. Parle at scale",
        "## LLC. Which sampler estimates the local learning coefficient best",
        "## Summary",
    ):
        assert heading in text
    assert "QUICK run" in text
    assert text.count("**What the evidence supports.**") == 7
    assert text.count("**What it does not support.**") == 7
    figures = doc.parent / "findings"
    for name in (
        "targets.png",
        "cost_curves.png",
        "sensitivity.png",
        "recurrent_char.png",
        "recurrent_row.png",
        "scale.png",
        "findings.json",
    ):
        assert (figures / name).is_file(), name
    for link in [part.split(")")[0] for part in text.split("](")[1:]]:
        assert (doc.parent / link).is_file(), link
    numbers = json.loads((figures / "findings.json").read_text())
    sections = {"cost", "smoothing", "samplers", "sensitivity", "overhead", "recurrent", "scale", "llc"}
    assert set(numbers["numbers"]) == sections | {"claims", "replication", "provenance"}
    steps = numbers["numbers"]["provenance"]["steps"]
    assert set(steps) == {s.name for s in reproduce.STEPS} and all(s["seconds"] > 0 for s in steps.values())
    assert (figures / "sections.json").is_file()  # the document re-renders from its records alone
    assert all("view" in numbers["numbers"][s] for s in sections)  # every section's sentences come from its view
    assert "Entropy-SGD took" in text and "the geometric mean of the per-seed ratios" in text  # Q1's time ratio
    before = text
    findings.render_findings(doc)
    assert doc.read_text() == before
    claims = numbers["numbers"]["claims"]
    assert set(claims) == set(STEP_CLAIMS)  # every run and sweep step
    # the paired differences exist on any 2 seeds (verdicts may be empty: a near-zero truth, no best set)
    for step in (
        "cost",
        "flatness",
        "samplers_training",
        "sensitivity",
        "scoping",
        "overhead_training",
        "recurrent_char",
        "recurrent_row",
        "scale",
        "llc_training",
    ):
        assert claims[step] and all(c["kind"] == "difference" for c in claims[step][-1:]), step
    assert numbers["numbers"]["replication"] == {} and "### Replication on fresh seeds" in text
    assert numbers["meta"]["mode"] == "quick"
    assert (root / "runs" / "COMPLETE").is_file()


@pytest.mark.slow
def test_rerun_skips_every_step_and_rewrites_the_same_numbers(tiny_run: tuple[Path, Path]) -> None:
    root, doc = tiny_run
    before = json.loads((doc.parent / "findings" / "findings.json").read_text())["numbers"]
    patch = pytest.MonkeyPatch()
    patch.setattr(reproduce, "QUICK", TINY)
    log = root / "log2.txt"
    try:
        with open(log, "w") as stream:
            reproduce.reproduce(quick=True, out=root / "runs", doc=doc, workers=1, progress=stream)
    finally:
        patch.undo()
    assert log.read_text().count(": skip in") == len(reproduce.STEPS)
    after = json.loads((doc.parent / "findings" / "findings.json").read_text())["numbers"]
    assert after == before


def test_the_quick_and_full_runs_refuse_each_others_directory(tmp_path: Path) -> None:
    def runner(step, config, configs, out, workers, progress, tuned_in=None):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reproduce.reproduce(quick=True, out=tmp_path / "r", doc=tmp_path / "d.md", runner=runner)
    from localentropy.experiments.core.rundir import RunDirectoryError

    with pytest.raises(RunDirectoryError, match="different config"):
        reproduce.reproduce(quick=False, out=tmp_path / "r", doc=tmp_path / "d.md", runner=runner)


def test_find_configs_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--configs"):
        reproduce.find_configs(tmp_path / "missing")
    assert reproduce.find_configs() == CONFIGS
    assert reproduce.find_configs(tmp_path) == tmp_path.resolve()


def test_a_step_runs_once_and_again_only_when_its_config_changes(tmp_path: Path) -> None:
    step = next(s for s in reproduce.STEPS if s.kind == "targets")
    out = tmp_path / "targets"
    with open(tmp_path / "log", "w") as log:
        assert reproduce._run_step(step, {"n_grid": 41}, CONFIGS, out, 1, log) == "fresh"
        first = (out / "targets.json").read_bytes()
        assert reproduce._run_step(step, {"n_grid": 41}, CONFIGS, out, 1, log) == "skip"
        assert reproduce._run_step(step, {"n_grid": 61}, CONFIGS, out, 1, log) == "rerun"
    assert (out / "targets.json").read_bytes() != first
    assert len(json.loads((out / "targets.json").read_text())["x"]) == 61


def test_cli_help_names_the_expected_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--help"]) == 0
    text = capsys.readouterr().out
    assert "minutes" in text and "--quick" in text and "--doc" in text


def test_steps_are_registered_with_their_section_and_a_subset_runs(tmp_path: Path) -> None:
    """Every step names its question, config and findings section; --steps runs a subset, in registration
    order, and the document waits until every step is complete."""
    from localentropy.experiments.reproduce import steps as registry

    for step in reproduce.STEPS:
        assert step.section in registry.SECTIONS and step.question and step.name in reproduce.QUICK
    assert [s.name for s in registry.select_steps("smoothing_targets,shootout")] == ["shootout", "smoothing_targets"]
    with pytest.raises(ConfigError, match=r"unknown step\(s\) 'nope'; allowed: shootout, "):
        registry.select_steps("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_step(
            "shootout",
            kind="run",
            config="shootout.toml",
            question="Q3",
            section="samplers",
            full_minutes=1,
            quick_minutes=1,
        )
    calls: list[str] = []

    def runner(step, config, configs, out, workers, progress, tuned_in=None):
        calls.append(step.name)
        out.mkdir(parents=True, exist_ok=True)
        return "fresh"

    with open(tmp_path / "log", "w") as log:
        doc, mode = reproduce.reproduce(
            quick=True, out=tmp_path / "r", doc=tmp_path / "d.md", steps="cost,shootout", runner=runner, progress=log
        )
    assert calls == ["shootout", "cost"] and doc is None and mode == "quick"
    assert "findings not written" in (tmp_path / "log").read_text() and not (tmp_path / "d.md").exists()


def test_cli_steps_names_unknown_steps_with_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["reproduce", "--quick", "--steps", "nope", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "unknown step(s) 'nope'" in err and "allowed: shootout" in err and "Traceback" not in err


def test_the_atlas_step_writes_the_samplers_atlas_once(tmp_path: Path) -> None:
    step = next(s for s in reproduce.STEPS if s.kind == "atlas")
    assert step.section == "samplers" and reproduce.step_config(step, CONFIGS, True) == {"quick": True}
    config = {"quick": True, "samplers": ["sgld"], "targets": ["banana"]}
    out = tmp_path / "atlas"
    with open(tmp_path / "log", "w") as log:
        assert reproduce._run_step(step, config, CONFIGS, out, 1, log) == "fresh"
        assert reproduce._run_step(step, config, CONFIGS, out, 1, log) == "skip"
    atlas = json.loads((out / "atlas.json").read_text())
    assert [row["sampler"] for row in atlas["rows"]] == ["sgld"] and (out / "atlas.png").is_file()
    assert "sgld on banana" in (tmp_path / "log").read_text()


@pytest.mark.slow
def test_fresh_replicates_are_compared_beside_the_claims(tiny_run: tuple[Path, Path]) -> None:
    """After the rerun test (it compares the numbers before and after): the shootout again on 2 fresh replicates,
    a comparison run and a sweep on 2 fresh seeds."""
    root, doc = tiny_run
    patch = pytest.MonkeyPatch()
    patch.setattr(reproduce, "QUICK", TINY)
    try:
        with open(root / "log3.txt", "w") as log:
            reproduce.reproduce(
                quick=True,
                out=root / "runs",
                doc=doc,
                workers=1,
                progress=log,
                fresh_seeds=2,
                steps="shootout,smoothing_quadratic,scoping",
            )
    finally:
        patch.undo()
    results = json.loads((root / "runs" / "fresh" / "shootout" / "results.json").read_text())
    assert results["config"]["first_replicate"] == 2_000_000 and results["fresh_seeds"]["k"] == 2
    numbers = json.loads((doc.parent / "findings" / "findings.json").read_text())["numbers"]
    assert numbers["replication"]["shootout"]["total"] == len(numbers["claims"]["shootout"]) > 0
    assert numbers["replication"]["scoping"]["total"] == len(numbers["claims"]["scoping"]) > 0
    assert set(numbers["replication"]) == {"shootout", "smoothing_quadratic", "scoping"}
    scoping = json.loads((root / "runs" / "fresh" / "scoping" / "results.json").read_text())
    assert scoping["fresh_seeds"]["seeds"] == [2_000_000, 2_000_001]
    assert "**Replicated on 2 fresh replicates**" in doc.read_text()


def test_a_timed_step_runs_one_at_a_time_but_searches_with_every_worker(tmp_path: Path, monkeypatch) -> None:
    """The cost step's seconds are reported, so its runs go one at a time; its tuning trials are never timed."""
    import io

    from localentropy.experiments.core.config import read_toml
    from localentropy.experiments.reproduce.steps import registered_steps
    from localentropy.experiments.sweeps import runner

    with pytest.raises(ValueError, match="tuning_workers must be a positive integer"):
        runner.run_sweep(CONFIGS / "sweep_flatness.toml", tmp_path / "x", tuning_workers=0)
    seen = {}
    monkeypatch.setattr(runner, "run_sweep", lambda *a, **options: seen.update(options) or (tmp_path, "fresh", {}))
    step = next(s for s in registered_steps() if s.name == "cost")
    assert step.timed
    config = read_toml(CONFIGS / str(step.config))
    reproduce._run_step(step, config, CONFIGS, tmp_path / "cost", 2, io.StringIO(), tmp_path / "original")
    assert (seen["workers"], seen["tuning_workers"]) == (1, 2)
    assert seen["quiet_wait"] == runner.QUIET_WAIT  # its runs start once the machine is quiet
    assert seen["tuning_from"] == tmp_path / "original" / "tuning"
    untimed = next(s for s in registered_steps() if s.kind == "sweep" and not s.timed)
    config = read_toml(CONFIGS / str(untimed.config))
    reproduce._run_step(untimed, config, CONFIGS, tmp_path / untimed.name, 2, io.StringIO(), None)
    assert (seen["workers"], seen["quiet_wait"]) == (2, 0)  # runs not timed need no quiet machine
