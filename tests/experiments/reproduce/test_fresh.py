"""``localentropy reproduce --fresh-seeds K``: the fresh configs, the run into ``<out>/fresh``, the record of the
seeds, the comparison claim by claim, and the command line's refusals."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from localentropy.cli import main
from localentropy.diagnostics.compare import mean_interval
from localentropy.experiments.comparison.config import parse_config
from localentropy.experiments.core.config import ConfigError, read_toml
from localentropy.experiments.core.rundir import MARKER
from localentropy.experiments.core.seeds import FRESH_SEED_OFFSET
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.reproduce import findings
from localentropy.experiments.reproduce import run as reproduce
from localentropy.experiments.reproduce.claims import difference_claim
from localentropy.experiments.reproduce.findings import replication
from localentropy.experiments.reproduce.fresh import QUICK_FRESH_CAP, fresh_config
from localentropy.experiments.reproduce.steps import select_steps

CONFIGS = shipped_dir()


def test_fresh_configs_replace_the_seeds_of_a_sweep_and_the_replicates_of_a_run() -> None:
    (sweep,) = select_steps("overhead_training")
    data = read_toml(CONFIGS / str(sweep.config))
    fresh, record = fresh_config(sweep, data, 20)
    assert fresh["grid"]["seed"] == list(range(FRESH_SEED_OFFSET, FRESH_SEED_OFFSET + 20))
    assert data["grid"]["seed"] == [0, 1, 2, 3, 4]  # the original is left alone
    assert record == {
        "k": 20,
        "round": 0,
        "offset": FRESH_SEED_OFFSET,
        "seeds": fresh["grid"]["seed"],
        "evaluation_seeds": [0, 1, 2, 3, 4],
        "unit": "seed",
    }
    assert fresh_config(sweep, data, 3, round_=2)[0]["grid"]["seed"][0] == FRESH_SEED_OFFSET + 200_000
    (run,) = select_steps("shootout")
    fresh, record = fresh_config(run, read_toml(CONFIGS / str(run.config)), 4)
    assert (fresh["first_replicate"], fresh["replicates"], record["unit"]) == (FRESH_SEED_OFFSET, 4, "replicate")
    assert record["evaluation_seeds"] == list(range(10))
    assert parse_config(fresh).first_replicate == FRESH_SEED_OFFSET
    with pytest.raises(
        ConfigError,
        match=r"step overhead_training \(sweep_overhead.toml, grid.seed\): the fresh "
        r"seeds .* include the evaluation seed\(s\) 2000004",
    ):
        fresh_config(sweep, {**data, "grid": {**data["grid"], "seed": [0, 2_000_004]}}, 20)
    (targets,) = select_steps("smoothing_targets")
    with pytest.raises(ConfigError, match="computation, not a run or sweep"):
        fresh_config(targets, {}, 3)


def test_first_replicate_is_recorded_only_when_set() -> None:
    data = read_toml(CONFIGS / "shootout.toml")
    assert "first_replicate" not in parse_config(data).as_dict()  # runs recorded before it existed still match
    assert parse_config({**data, "first_replicate": 7}).as_dict()["first_replicate"] == 7
    with pytest.raises(ConfigError, match="first_replicate"):
        parse_config({**data, "first_replicate": -1})


def _fake_runner(calls: list[tuple[str, list[int]]], shift: float):
    """A sweep that "measures" one number per seed: original seeds near +1, fresh ones near +1 + shift."""

    def runner(step, config, configs, out, workers, progress, tuned_in=None):
        seeds = config["grid"]["seed"]
        calls.append((str(out), seeds))
        # a fresh rerun is handed the original's directory, whose tuning it reuses; an original none
        assert tuned_in == (out.parent.parent / step.name if out.parent.name == "fresh" else None)
        if (out / MARKER).is_file():
            return "skip"
        out.mkdir(parents=True, exist_ok=True)
        offset = shift if seeds[0] >= FRESH_SEED_OFFSET else 0.0
        values = {s: 0.01 * (1 + offset + 0.1 * np.sin(s)) for s in seeds}
        (out / "results.json").write_text(json.dumps({"values": values}))
        (out / MARKER).write_text("done")
        return "fresh"

    return runner


def _read_claims(step_dir: Path) -> list[dict]:
    values = json.loads((step_dir / "results.json").read_text())["values"]
    return [difference_claim("overhead_training/effect", "test error, effect", mean_interval(values).as_dict())]


@pytest.mark.parametrize(("shift", "consistent"), [(0.0, True), (-2.0, False)])
def test_fresh_seeds_run_beside_the_original_and_each_claim_is_judged(
    tmp_path: Path, monkeypatch, shift: float, consistent: bool
) -> None:
    monkeypatch.setattr(replication, "STEP_CLAIMS", {"overhead_training": _read_claims})
    calls: list[tuple[str, list[int]]] = []
    out = tmp_path / "r"
    for _ in range(2):  # the second call finds both runs complete: resumable like every step
        with open(tmp_path / "log", "w") as log:
            doc, _ = reproduce.reproduce(
                out=out, fresh_seeds=6, steps="overhead_training", runner=_fake_runner(calls, shift), progress=log
            )
    assert doc is None  # the other steps are not done: no document, but the replication is written
    assert [c[1] for c in calls[:2]] == [[0, 1, 2, 3, 4], list(range(FRESH_SEED_OFFSET, FRESH_SEED_OFFSET + 6))]
    assert calls[1][0] == str(out / "fresh" / "overhead_training") and len(calls) == 4
    recorded = json.loads((out / "fresh" / "overhead_training" / "results.json").read_text())["fresh_seeds"]
    assert (recorded["k"], recorded["offset"], recorded["evaluation_seeds"]) == (6, FRESH_SEED_OFFSET, [0, 1, 2, 3, 4])
    record = json.loads((out / "fresh" / "replication.json").read_text())["overhead_training"]
    entry = record["claims"][0]
    assert entry["consistent"] is consistent and record["total"] == 1 and entry["pooled"]["n"] == 11
    text = (out / "fresh" / "replication.md").read_text()
    assert ("| consistent (Welch t = " if consistent else "| inconsistent (Welch t = ") in text
    assert "replication on 6 fresh seeds: overhead_training: " in (tmp_path / "log").read_text()
    body, summary = replication.with_replication(
        ["## Overhead"], "**Overhead.** ...", "overhead", {"overhead_training": record}
    )
    assert any("Replicated on 6 fresh seeds" in line for line in body) and "Replication: " in summary
    assert f"`overhead_training` on 6 fresh seeds: {int(consistent)} of 1 claims consistent between" in summary


def test_one_call_runs_every_step_then_replicates_those_with_claims_and_writes_the_document(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(replication, "STEP_CLAIMS", {"overhead_training": _read_claims})
    written: list[dict] = []
    monkeypatch.setattr(findings, "write_findings", lambda out, doc, resolved, meta: written.append(meta))
    out, calls = tmp_path / "r", []

    def runner(step, config, configs, where, workers, progress, tuned_in=None):
        calls.append(where.relative_to(out).as_posix())
        where.mkdir(parents=True, exist_ok=True)
        seeds = config.get("grid", {}).get("seed", [0, 1, 2])
        (where / "results.json").write_text(json.dumps({"values": {s: 0.01 * (1 + 0.1 * np.sin(s)) for s in seeds}}))
        (where / MARKER).write_text("done")
        return "fresh"

    doc, _ = reproduce.reproduce(out=out, fresh_seeds=3, runner=runner, progress=io.StringIO())
    assert calls == [step.name for step in reproduce.STEPS] + ["fresh/overhead_training"]
    assert doc is not None and written[0]["fresh"]["k"] == 3 and set(written[0]["timings"]) == set(calls[:-1])


def test_quick_caps_the_fresh_seeds_and_steps_without_claims_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(replication, "STEP_CLAIMS", {"overhead_training": _read_claims})
    calls: list[tuple[str, list[int]]] = []
    with open(tmp_path / "log", "w") as log:
        reproduce.reproduce(
            quick=True,
            out=tmp_path / "q",
            fresh_seeds=50,
            steps="overhead_training",
            runner=_fake_runner(calls, 0.0),
            progress=log,
        )
    assert calls[0][1] == list(range(reproduce.QUICK["overhead_training"]["seeds"]))
    assert len(calls[1][1]) == QUICK_FRESH_CAP
    with pytest.raises(
        ConfigError, match="step\\(s\\) cost state no claims to replicate; steps with claims: overhead_training"
    ):
        reproduce.reproduce(out=tmp_path / "c", fresh_seeds=3, steps="cost", runner=_fake_runner(calls, 0.0))


def test_cli_refuses_a_bad_count_or_colliding_seeds_with_exit_2(tmp_path: Path, capsys) -> None:
    for k in ("0", "-3", "x"):
        assert main(["reproduce", "--fresh-seeds", k, "--out", str(tmp_path / "r")]) == 2
        assert "--fresh-seeds: expected a positive integer" in capsys.readouterr().err
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    edited = (configs / "sweep_overhead.toml").read_text().replace("seed = [0, 1, 2, 3, 4]", "seed = [0, 2000001]")
    (configs / "sweep_overhead.toml").write_text(edited)
    argv = [
        "reproduce",
        "--fresh-seeds",
        "20",
        "--steps",
        "overhead_training",
        "--configs",
        str(configs),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "grid.seed): the fresh seeds 2000000..2000019 include the evaluation seed(s) 2000001" in err
    assert "Traceback" not in err and not (tmp_path / "r").exists()


@pytest.mark.slow  # about 3 minutes on a loaded 2-core machine (the shootout's diagnostics, twice)
def test_the_shootout_runs_for_real_on_fresh_replicates(tmp_path: Path, monkeypatch) -> None:
    """The comparison-run path end to end, at the smallest size: 2 replicates, one budget, then 2 fresh ones."""
    monkeypatch.setattr(reproduce, "QUICK", {**reproduce.QUICK, "shootout": {"replicates": 2, "budgets": 1}})
    with open(tmp_path / "log", "w") as log:
        reproduce.reproduce(quick=True, out=tmp_path / "r", steps="shootout", fresh_seeds=2, workers=1, progress=log)
    fresh = json.loads((tmp_path / "r" / "fresh" / "shootout" / "results.json").read_text())
    assert fresh["config"]["first_replicate"] == FRESH_SEED_OFFSET and fresh["config"]["replicates"] == 2
    assert fresh["fresh_seeds"]["unit"] == "replicate" and fresh["fresh_seeds"]["evaluation_seeds"] == [0, 1]
    original = json.loads((tmp_path / "r" / "shootout" / "results.json").read_text())
    assert "first_replicate" not in original["config"]
    record = json.loads((tmp_path / "r" / "fresh" / "replication.json").read_text())["shootout"]
    assert record["total"] == 1 and record["claims"][0]["id"] == "shootout/budget 400"
    assert "2 fresh replicates" in (tmp_path / "r" / "fresh" / "replication.md").read_text()
