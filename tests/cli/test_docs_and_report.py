"""Reachable from an install: the docs ship with the package and `localentropy docs` prints them, every docs path
the package's texts name is one of them, every report template is package data, and `localentropy report DIR`
rebuilds a training run's report too."""

from __future__ import annotations

import fnmatch
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from localentropy.cli import main
from localentropy.experiments.core.shipped import docs_dir, shipped_configs, shipped_doc, shipped_docs
from tests.cli.common import TRAIN_BASE, to_toml

ROOT = Path(__file__).resolve().parents[2]
POINTER = re.compile(r"docs/([a-z0-9_/]+)\.md|`localentropy docs ([a-z0-9_/]+)`")  # NAME: a placeholder


def test_the_docs_are_package_data_and_the_command_prints_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert docs_dir().parent == ROOT / "localentropy" and (docs_dir() / "samplers.md").is_file()
    assert main(["docs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(shipped_docs()) and "configuration" in shipped_docs()
    for name in ("samplers", "samplers.md", "docs/samplers.md"):
        assert main(["docs", name]) == 0
        assert capsys.readouterr().out == (ROOT / "docs" / "samplers.md").read_text()
    assert main(["docs", "no-such-doc"]) == 2
    assert "installed: architecture" in capsys.readouterr().err


def test_every_docs_pointer_of_the_package_and_readme_is_installed() -> None:
    texts = [ROOT / "README.md", *(ROOT / "localentropy").rglob("*.py"), *(c.path for c in shipped_configs())]
    named = {m.group(1) or m.group(2) for path in texts for m in POINTER.finditer(path.read_text(encoding="utf-8"))}
    assert len(named) >= 10
    missing = sorted(name for name in named if name not in shipped_docs())
    assert not missing, missing
    assert all(shipped_doc(name).is_file() for name in named)


def test_every_template_is_package_data() -> None:
    """The reports render their prose from templates/*.j2 inside the package: a wheel without one fails at the
    first report, so pyproject.toml's package data must name every template."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["localentropy"]
    package = ROOT / "localentropy"
    found = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.j2"))
    assert "experiments/training/templates/answer.md.j2" in found

    def shipped(name: str) -> bool:  # setuptools' globs: a * stays within one path part
        parts = name.split("/")
        return any(
            len(g.split("/")) == len(parts)
            and all(fnmatch.fnmatchcase(p, q) for p, q in zip(parts, g.split("/"), strict=True))
            for g in globs
        )

    assert [name for name in found if not shipped(name)] == []


def test_report_rebuilds_a_training_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "train.toml"
    config.write_text(to_toml(TRAIN_BASE))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run)]) == 0
    first = (run / "report.md").read_text()
    (run / "report.md").unlink()
    (run / "final.csv").unlink()
    capsys.readouterr()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").read_text() == first and (run / "final.csv").is_file()
    other = tmp_path / "elsewhere"
    assert main(["report", str(run), "--out", str(other)]) == 0 and (other / "report.md").read_text() == first
    shutil.copytree(run, tmp_path / "run2")
    assert main(["report", str(run), str(tmp_path / "run2"), "--out", str(tmp_path / "merged")]) == 2
    assert "rebuilt alone" in capsys.readouterr().err


def test_a_runs_report_from_memory_is_the_report_rebuilt_from_disk(tmp_path: Path) -> None:
    """The run renders its report from the results it holds; `report DIR` reads them back: the same report."""
    from tests.cli.common import RUN_BASE

    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    run = tmp_path / "run"
    assert main(["run", str(config), "--out", str(run)]) == 0
    written = (run / "report.md").read_text()
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.md").read_text() == written
