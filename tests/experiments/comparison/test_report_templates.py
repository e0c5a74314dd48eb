"""The comparison report's words come from its Jinja2 templates: a sentence appears only when the run carries the
datum it states, with its number; a missing name fails instead of printing nothing; the templates ship."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import jinja2
import pytest

from localentropy.experiments.comparison.formatting import render
from localentropy.experiments.comparison.report import write_report
from localentropy.experiments.comparison.suite import suite_markdown
from tests.experiments.comparison.test_report import ok_record, write_run

ROOT = Path(__file__).resolve().parents[3]
NEAR_ZERO = "The truth is near zero here"
CLIPPED = "Not drawn in the figure below"


def _group(**changes: object) -> dict:
    group = {
        "title": "point 0, gamma = 1, T = 0.1",
        "rows": [["`sgld`", "100"]],
        "near_zero": [],
        "verdicts": [],
        "clipped": [],
        "failed": [],
        "figure": None,
    }
    return group | changes


def test_a_sentence_appears_only_with_its_datum_and_states_its_number(tmp_path: Path) -> None:
    plain = write_run(tmp_path / "plain", "plain", [ok_record("sgld", 0, 100, 0.1), ok_record("sghmc", 0, 100, 0.2)])
    text = write_report([plain], tmp_path / "a").read_text()
    assert NEAR_ZERO not in text and CLIPPED not in text and "## Tuning" not in text and "Not in the table" not in text

    records = [ok_record("sgld", 0, 100, 0.1), ok_record("sghmc", 0, 100, 0.2)]
    records[0]["metrics"] |= {"truth_near_zero": True, "truth_norm": 0.000123}
    records[1]["metrics"]["variance"] = 0.0  # a value a log axis cannot show
    marked = write_run(tmp_path / "marked", "marked", records)
    text = write_report([marked], tmp_path / "b").read_text()
    assert f"{NEAR_ZERO} (‖truth‖ = 0.000123, below the noise of one gradient evaluation)" in text
    assert f"{CLIPPED}" in text and "variance: `sghmc` at budget 100." in text


def test_the_parts_render_from_their_data_alone() -> None:
    assert "No record finished for this combination." in render("group.md.j2", g=_group(rows=[]))
    failed = {"label": "a|b", "budget": 100, "status": "ok", "error": None}
    text = render("group.md.j2", g=_group(failed=[failed]))
    assert "- `a\\|b`, budget 100: **ok, but no metrics**: no error message" in text
    # the clipped note names "the figure below": without a figure there is none
    clipped = [{"panel": "MSE", "label": "sgld", "budgets": [100, 200]}]
    assert CLIPPED not in render("group.md.j2", g=_group(clipped=clipped))
    text = render("group.md.j2", g=_group(clipped=clipped, figure="errors.png"))
    assert f"{CLIPPED}" in text and "MSE: `sgld` at budget 100, 200." in text and "](errors.png)" in text
    verdict = {"budget": 1000, "text": "lowest: `sgld`", "lowest": "sgld", "excluded": ["mala"]}
    text = render("group.md.j2", g=_group(verdicts=[verdict]))
    assert "- budget 1000: lowest: `sgld`; not compared (no squared errors on the common replicates): `mala`" in text
    with pytest.raises(jinja2.UndefinedError):  # a datum the view lacks fails; it is never printed as nothing
        render("group.md.j2", g={k: v for k, v in _group().items() if k != "failed"})


def test_a_suite_heading_states_the_llc_truth_only_when_its_rows_carry_it() -> None:
    row = {"estimator": "sgld", "budget": 10, "status": "ok", "error": None, "chosen": {"step_size": 0.01234}}
    row |= {"mse": 0.5, "mse_mcse": 0.01, "min_ess_bulk": 12.3, "max_rhat": 1.01}
    llc = row | {"estimate": 1.0, "bias": 0.01, "bias_se": 0.02, "rmse": 0.1, "mean_mcse": 0.03}
    llc |= {"truth": 0.99012, "truth_kind": "exact", "nbeta": 1000.0, "localization": 20.0}
    summary = {"name": "s", "problems": [{"label": "a", "rows": [row], "verdicts": []}]}
    text = suite_markdown(summary)
    assert "## a\n\n\n| estimator | budget | tuned | MSE ± MCSE |" in text and "LLC truth" not in text
    assert "| sgld | 10 | step_size 0.0123 | 0.5 ± 0.01 | 12 | 1.010 |" in text
    summary["problems"][0]["rows"] = [llc]
    assert "## a: LLC truth 0.9901 (exact), nbeta 1000, localization 20\n" in suite_markdown(summary)


def test_every_template_is_package_data() -> None:
    """Each package's templates/ ships: its files match the package-data globs (an install without them could not
    write a report)."""
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["localentropy"]
    package = ROOT / "localentropy"
    found = [p.relative_to(package).as_posix() for p in package.rglob("*.j2") if "templates" in p.parts]
    assert any(name.startswith("experiments/comparison/templates/") for name in found)
    # a setuptools glob's * matches within one folder
    patterns = [re.compile(re.escape(glob).replace(r"\*", "[^/]*")) for glob in globs]
    missing = [name for name in found if not any(p.fullmatch(name) for p in patterns)]
    assert not missing, missing
