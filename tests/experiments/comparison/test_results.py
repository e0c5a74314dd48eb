"""The typed results of a comparison run: results.json is the dump of the models the runner built in memory, the
verdicts are computed once (by the runner) and read by the report, ``report DIR`` validates the file back with
field-named errors, and the run directory is checked once, under its lock."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from localentropy.cli import main
from localentropy.experiments.comparison.loading import load_run
from localentropy.experiments.comparison.results import SCHEMA, SCHEMA_VERSION, Record, Results
from localentropy.experiments.comparison.verdicts import comparison_verdicts
from localentropy.experiments.core.rundir import LOCK, RunDirectory
from tests.experiments.comparison.test_cli_run import write_config

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("typed")
    assert main(["run", str(write_config(base)), "--out", str(base / "out")]) == 0
    return base / "out"


def damaged(run: Path, tmp_path: Path, change: Any) -> Path:
    """A copy of the run's results.json with ``change(results)`` applied, in a directory of its own."""
    data = json.loads((run / "results.json").read_text())
    change(data)
    target = tmp_path / "damaged"
    target.mkdir()
    (target / "results.json").write_text(json.dumps(data))
    return target


def test_results_json_is_the_dump_of_the_typed_results(tiny_run: Path) -> None:
    data = json.loads((tiny_run / "results.json").read_text())
    assert data["schema"] == SCHEMA == 1 and data["schema_version"] == SCHEMA_VERSION == 2
    assert list(data) == ["schema", "schema_version", "name", "config", "meta", "records", "verdicts"]
    results = load_run(tiny_run)
    assert results.dump() == data  # every field and value, read back into the models and dumped again, unchanged
    for record in results.records:  # each record file of the per-record cache is the record's dump too
        saved = json.loads((tiny_run / "records" / f"{record_file(record)}.json").read_text())
        assert saved == record.model_dump()


def record_file(record: Record) -> str:
    k = record.key
    return f"{k.estimator}__p{k.point}__g{k.gamma:g}__T{k.temperature:g}__b{k.budget}"


def test_the_verdicts_are_computed_once_and_the_report_reads_them(tiny_run: Path, tmp_path: Path) -> None:
    results = load_run(tiny_run)
    assert results.verdicts and results.verdicts == comparison_verdicts(results.records)

    def swap(data: dict[str, Any]) -> None:  # a verdict the data do not support: only a report that reads it shows it
        for verdict in data["verdicts"]:
            verdict["lowest"], verdict["best"], verdict["comparisons"] = "smooth", ["smooth"], []

    run = damaged(tiny_run, tmp_path, swap)
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "- budget 16: lowest: `smooth`, distinguishable" in text and "- budget 32: lowest: `smooth`" in text


def test_a_file_without_verdicts_gets_them_when_read(tiny_run: Path, tmp_path: Path) -> None:
    run = damaged(tiny_run, tmp_path, lambda data: data.pop("verdicts"))
    results = load_run(run)
    assert results.schema_version == 2 and results.verdicts == load_run(tiny_run).verdicts
    (tmp_path / "older").mkdir()
    older = damaged(run, tmp_path / "older", lambda data: data.pop("schema_version"))
    assert load_run(older).schema_version == 1  # written before the field: revision 1


@pytest.mark.parametrize(
    ("where", "value", "message"),
    [
        (("records", 1, "metrics", "mse"), 10**400, "records[1].metrics.mse: got 1000"),  # beyond the float range
        (("records", 0, "key", "gamma"), True, "records[0].key.gamma: got True (bool)"),
        (("records", 0, "key", "budget"), 16.0, "records[0].key.budget: got 16.0 (float)"),
        (("records", 2, "chains"), [1], "records[2].chains: got [1] (list)"),
        (("verdicts", 0, "best"), "sgld", "verdicts[0].best: got 'sgld' (str)"),
        (("meta", "seed"), "3", "meta.seed: got '3' (str)"),
    ],
)
def test_a_damaged_results_json_is_refused_naming_the_field(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: tuple, value: Any, message: str
) -> None:
    def change(data: dict[str, Any]) -> None:
        node = data
        for part in where[:-1]:
            node = node[part]
        node[where[-1]] = value

    run = damaged(tiny_run, tmp_path, change)
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert message in err and "results.json" in err and "Traceback" not in err
    assert not (run / "report.md").exists()


def test_counts_of_any_size_are_read_and_shown_exactly(tiny_run: Path, tmp_path: Path) -> None:
    """Integers are unbounded in JSON and in the models: a count beyond the float range is shown digit for digit,
    never turned into a float on the way (which overflowed)."""
    huge = 10**400

    def grow(data: dict[str, Any]) -> None:
        data["meta"]["seed"] = huge
        for record in data["records"]:
            record["key"]["point"] = huge
        data.pop("verdicts")

    run = damaged(tiny_run, tmp_path, grow)
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert f"point {huge}" in text and f"seed: {huge}" in text


def test_the_run_directory_is_checked_once_under_its_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    checks: list[str] = []
    for name in ("check_free", "_check"):
        original = getattr(RunDirectory, name)

        def counted(self: RunDirectory, *args: Any, original: Any = original, name: str = name) -> Any:
            checks.append(name if self._lock is None else f"{name} (locked)")
            return original(self, *args)

        monkeypatch.setattr(RunDirectory, name, counted)
    config = write_config(tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    assert checks == ["_check (locked)"]
    checks.clear()
    assert main(["run", str(config), "--out", str(out)]) == 0  # complete: skipped, after the same one check
    assert checks == ["_check (locked)"] and "skipped" in capsys.readouterr().out


def test_a_refused_directory_keeps_no_lock_and_a_created_one_is_removed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a run directory"):
        RunDirectory(precious).prepare({"name": "x"})
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    run = RunDirectory(tmp_path / "run")
    assert run.prepare({"name": "x"}) == "fresh" and (run.path / LOCK).exists()
    run.release()
    with pytest.raises(ValueError, match="different config"):
        RunDirectory(run.path).prepare({"name": "y"})
    assert (run.path / LOCK).exists()  # a lock it did not create stays (another command may be waiting on it)


def test_results_hold_typed_records(tiny_run: Path) -> None:
    results = load_run(tiny_run)
    assert isinstance(results, Results)
    by_key = {(r.key.estimator, r.key.budget): r for r in results.records}
    sgld = by_key[("sgld", 32)]
    assert sgld.ok and sgld.chains is not None and sgld.chains.n_chains == 2 and sgld.metric("mse") > 0
    smooth = by_key[("smooth", 16)]
    assert smooth.estimator is not None and smooth.estimator.kind == "smoothing" and smooth.chains is None
    assert copy.deepcopy(results) == results


def test_a_record_left_out_of_a_verdict_is_named(tiny_run: Path, tmp_path: Path) -> None:
    def diverge(data: dict[str, Any]) -> None:
        data.pop("verdicts")  # an older file: the verdicts are computed when it is read
        for record in data["records"]:
            if record["key"]["estimator"] == "sgld" and record["key"]["budget"] == 16:
                record.update(status="diverged", error="the chains left the finite range", metrics=None, chains=None)

    run = damaged(tiny_run, tmp_path, diverge)
    assert load_run(run).verdicts[0].excluded == ["sgld"]
    assert main(["report", str(run)]) == 0
    text = (run / "report.md").read_text()
    assert "- budget 16: lowest: `smooth`, distinguishable from every other" in text
    assert "not compared (no squared errors on the common replicates): `sgld`" in text
