"""Installed use and run directories that hold: the shipped configs (list, show, copy, by name), the run-directory
lock, --force only on the same config, `report A B` leaving A and B alone, a closed output pipe, progress bars."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.progress import Progress, bars_allowed
from localentropy.experiments.core.rundir import HOLDER, RunDirectory, RunDirectoryError
from localentropy.experiments.core.shipped import resolve_config, shipped_configs, shipped_dir
from localentropy.experiments.sweeps.runner import load_sweep_config, run_sweep
from localentropy.experiments.training.trainer import run_training
from tests.cli.common import RUN_BASE, SWEEP_BASE, TRAIN_BASE, to_toml

ROOT = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    """A stream that says it is a terminal: where progress bars are drawn."""

    def isatty(self) -> bool:
        return True


def _tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------ shipped configs


def test_configs_lists_every_shipped_config_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [c.name for c in shipped_configs()]
    assert len(lines) == len(names) >= 18 and [line.split()[0] for line in lines] == names
    kinds = {line.split()[0]: line.split()[1] for line in lines}
    assert kinds["shootout"] == "run" and kinds["train_digits"] == "train" and kinds["sweep_overhead"] == "sweep"
    assert all(p.parent == shipped_dir() for p in (c.path for c in shipped_configs()))
    assert shipped_dir().parent == ROOT / "localentropy"  # package data, not a folder of the checkout


def test_configs_show_prints_the_file_and_unknown_names_are_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["configs", "show", "shootout"]) == 0
    assert capsys.readouterr().out == (shipped_dir() / "shootout.toml").read_text()
    assert main(["configs", "show", "no-such-config"]) == 2
    err = capsys.readouterr().err
    assert "no shipped config named 'no-such-config'" in err and "shootout" in err


def test_a_copied_sweep_config_runs_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["configs", "copy", "sweep_overhead", "x.toml"]) == 0
    copy, shipped_text = (tmp_path / "x.toml").read_text(), (shipped_dir() / "sweep_overhead.toml").read_text()
    # the same config, its #:schema line pointing at the installed schema instead of the shipped folder's
    assert copy.splitlines()[1:] == shipped_text.splitlines()[1:] and copy.startswith("#:schema file:")
    assert "localentropy sweep x.toml" in capsys.readouterr().out
    # its base (train_digits_small.toml) is not beside it: the shipped one of that name is used
    shipped = load_sweep_config(shipped_dir() / "sweep_overhead.toml")
    copied = load_sweep_config(tmp_path / "x.toml")
    assert copied.name == "sweep_overhead" and copied.base == shipped.base and len(copied.runs) == len(shipped.runs)
    # a base beside the copy wins over the shipped one
    (tmp_path / "train_digits_small.toml").write_text(
        (shipped_dir() / "train_digits_small.toml").read_text().replace("seed = 0", "seed = 7", 1)
    )
    assert load_sweep_config(tmp_path / "x.toml").base["seed"] == 7
    # no overwrite without --force; a folder gets NAME.toml
    assert main(["configs", "copy", "sweep_overhead", "x.toml"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["configs", "copy", "sweep_overhead", "x.toml", "--force"]) == 0
    (tmp_path / "sub").mkdir()
    assert main(["configs", "copy", "shootout", "sub"]) == 0 and (tmp_path / "sub" / "shootout.toml").is_file()
    assert main(["configs", "copy", "shootout"]) == 0 and (tmp_path / "shootout.toml").is_file()


def test_a_config_argument_is_a_file_first_then_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_config("shootout") == shipped_dir() / "shootout.toml"
    assert resolve_config("shootout.toml") == shipped_dir() / "shootout.toml"
    (tmp_path / "shootout.toml").write_text("x")
    assert resolve_config("shootout.toml") == Path("shootout.toml")  # a file of that name wins
    assert resolve_config("nothing-here") == Path("nothing-here")  # reading it then says "not found"


# ------------------------------------------------------------------------------------------------ run directories


def test_a_run_directory_in_use_is_refused_at_once_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    holder = RunDirectory(out)
    holder.acquire()  # another command holds it (a separate lock object, as another process has)
    recorded = json.loads((out / HOLDER).read_text())
    assert recorded["pid"] == os.getpid() and recorded["host"] and "command" in recorded
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} is in use by pid {os.getpid()}" in err and "Traceback" not in err
    assert main(["report", str(out)]) == 2 and "in use" in capsys.readouterr().err
    holder.release()
    assert not (out / HOLDER).exists()
    assert main(["run", str(config), "--out", str(out), "--force"]) == 0  # the same config name: --force may delete
    assert not (out / HOLDER).exists()  # released when the command ends


def test_a_second_process_on_a_directory_in_use_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    holder = RunDirectory(tmp_path / "out")
    holder.prepare({"name": "fz"})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "localentropy", "run", str(config), "--out", str(holder.path)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        holder.release()
    assert done.returncode == 2 and "is in use by pid" in done.stderr, done.stderr


def test_force_deletes_only_a_run_of_the_same_config_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    other = tmp_path / "other.toml"
    other.write_text(to_toml({**RUN_BASE, "name": "other", "seed": 2}))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    before = _tree_digest(out)
    capsys.readouterr()
    assert main(["run", str(other), "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert "--force would delete" in err and "'fz'" in err and "'other'" in err
    assert _tree_digest(out) == before
    with pytest.raises(RunDirectoryError, match="not of"):
        RunDirectory(out).prepare({"name": "else"}, force=True)


def test_report_of_several_runs_writes_a_new_directory_and_leaves_them_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    assert main(["run", str(config), "--out", "a"]) == 0
    assert main(["run", str(config), "--out", "b"]) == 0
    before = {name: _tree_digest(tmp_path / name) for name in ("a", "b")}
    assert main(["report", "a", "b"]) == 0
    assert "runs/report-a-b/report.md" in capsys.readouterr().out
    assert (tmp_path / "runs" / "report-a-b" / "report.md").is_file()
    assert {name: _tree_digest(tmp_path / name) for name in ("a", "b")} == before
    assert main(["report", "a", "b", "--out", "a"]) == 2  # a merged report never goes into one of its runs
    assert {name: _tree_digest(tmp_path / name) for name in ("a", "b")} == before


# ------------------------------------------------------------------------------------------------ closed pipe


def test_a_closed_output_pipe_ends_quietly_with_exit_0(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line (`localentropy configs | head -0`)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "localentropy", "configs"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_a_broken_pipe_inside_a_command_is_exit_0(monkeypatch: pytest.MonkeyPatch) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["samplers"]) == 0


# ------------------------------------------------------------------------------------------------ progress


def test_progress_draws_a_bar_with_elapsed_and_left_only_on_a_terminal() -> None:
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        with Progress(stream, 4, desc="work", unit="item") as bar:
            for i in range(4):
                bar.advance()
                bar.line(f"item {i} ({bar.times()})")
    assert "work:" in terminal.getvalue() and "4/4" in terminal.getvalue() and "<" in terminal.getvalue()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 4 and "elapsed, about" in lines[0] and "left" in lines[0]
    quiet = Terminal()
    with bars_allowed(False), Progress(quiet, 2, desc="work") as bar:
        bar.advance()
        bar.line("plain")
    assert quiet.getvalue() == "plain\n"


def test_training_epochs_and_sweep_runs_show_bars_on_a_terminal(tmp_path: Path) -> None:
    from localentropy.experiments.training.config import parse_train_config

    terminal = Terminal()
    run_training(parse_train_config(dict(TRAIN_BASE), name="fz"), tmp_path / "train", progress=terminal)
    assert "sgd:" in terminal.getvalue() and "epoch" in terminal.getvalue() and "1/1" in terminal.getvalue()
    from localentropy.experiments.sweeps.config import parse_sweep_config

    terminal = Terminal()
    run_sweep(
        parse_sweep_config(json.loads(json.dumps(SWEEP_BASE))), tmp_path / "sweep", executor="inline", progress=terminal
    )
    text = terminal.getvalue()
    assert "sweep fz:" in text and "2/2" in text and "run" in text and "elapsed" in text


def test_quiet_is_accepted_by_the_long_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    assert main(["run", str(config), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "[1/2]" in capsys.readouterr().err
    for command in ("train", "sweep", "reproduce"):
        assert main([command, "--help"]) == 0 and "--quiet" in capsys.readouterr().out


def test_reproduce_shows_a_bar_over_its_steps_weighted_by_their_expected_minutes(tmp_path: Path) -> None:
    from localentropy.experiments.reproduce import run as reproduce

    def runner(step, config, configs, out, workers, progress, tuned_in=None):
        out.mkdir(parents=True, exist_ok=True)
        return "fresh"

    terminal = Terminal()
    reproduce.reproduce(
        quick=True,
        out=tmp_path / "r",
        doc=tmp_path / "d.md",
        steps=reproduce.STEPS[:3],
        runner=runner,
        progress=terminal,
    )
    text = terminal.getvalue()
    assert "reproduce (quick):" in text and "100%|" in text and "[3/3]" in text
