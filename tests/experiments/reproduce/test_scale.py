"""The scale section of the findings (Parle against data-parallel training) from a small fake step directory, its
projection against the alpha-beta model, and the steps that feed it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from localentropy.experiments.core.config import read_toml
from localentropy.experiments.core.shipped import shipped_dir
from localentropy.experiments.reproduce.findings.scale import LABELS, PARLE, SGD, projection, section_scale
from localentropy.experiments.reproduce.run import step_config
from localentropy.experiments.reproduce.scale import measure_sweep_compute
from localentropy.experiments.reproduce.steps import SECTIONS, registered_steps
from localentropy.experiments.training.scaling import LINKS, ring_allreduce_seconds

PARAMETERS = 1000
COMPUTE = {
    "model": "small-mnistfc",
    "input_shape": [1, 28, 28],
    "repeats": 3,
    "threads": 1,
    "nproc": 2,
    "parameters": PARAMETERS,
    "batch_size": 100,
    "gradient": 0.01,
    "sgd_update": 0.001,
    "entropy_update": 0.002,
}
ERRORS = {"sgd-ddp": [0.10, 0.12, 0.11], "entropy-sgd-ddp": [0.13, 0.15, 0.14], "parle": [0.12, 0.13, 0.125]}
INNER = 5  # Parle's L as configured
TUNED_INNER = {"entropy-sgd-ddp": 5, "parle": 25}  # L as the fake search chose it
# results.json's tuning record of a sweep whose [tuning] searched every optimizer (sweeps.runner), trimmed to what
# the section reads: parle's rho ended at the edge of its range
TUNING = {
    "method": "tpe",
    "trials": 8,
    "tuning_seeds": [1000000],
    "optimizers": {
        "sgd-ddp": {"chosen": {"lr": 0.2, "options.momentum": 0.85}, "at_edge": []},
        "entropy-sgd-ddp": {
            "chosen": {"lr": 0.7, "options.gamma": 0.3, "options.inner_steps": 5, "options.scoping": 0.002},
            "at_edge": [],
        },
        "parle": {
            "chosen": {"lr": 1.5, "options.gamma": 0.1, "options.inner_steps": 25, "options.rho": 0.95},
            "at_edge": [{"name": "options.rho", "side": "high"}],
            "space": {
                "options.inner_steps": {"choices": [5, 25]},
                "options.rho": {"low": 0.01, "high": 1.0, "log": True},
            },
            "objective": 0.0825,
        },
    },
}


def _record(label: str, seed: int, inner: int) -> dict:
    error = ERRORS[label][seed]
    passes = 50
    calls = passes if label != PARLE else passes // inner + 1
    rows = [
        {
            "epoch": e,
            "seconds": 0.1 * e,
            "test_error": error + 0.1 * (2 - e),
            "effective_epochs": e,
            "grad_evals": 25 * e,
            "bytes_communicated": calls * 4 * PARAMETERS * e // 2,
        }
        for e in range(3)
    ]
    final = {"test_error": error, "effective_epochs": 2.0, "seconds": 0.2 + 0.01 * seed, "grad_evals": passes}
    return {
        "label": label,
        "kind": label,
        "status": "ok",
        "world_size": 2,
        "passes_per_step": 1 if label == SGD else inner,
        "steps": passes if label == SGD else passes // inner,
        "rows": rows,
        "final": final,
        "bytes_communicated": calls * 4 * PARAMETERS,
        "collective_calls": calls,
    }


def fake_step(out: Path, tuned: bool = False) -> Path:
    """A finished `scale` sweep of 3 seeds (``tuned``: after its [tuning], the runs at the chosen L) and a
    `scale_compute` measurement, as the steps write them."""
    base = {
        "batch_size": 100,
        "optimizers": [
            {"label": "sgd-ddp", "kind": "sgd"},
            {"label": "entropy-sgd-ddp", "kind": "entropy-sgd", "options": {"inner_steps": INNER}},
            {"label": "parle", "kind": "parle", "options": {"inner_steps": INNER}},
        ],
    }
    runs = []
    for seed in range(3):
        records = [_record(label, seed, TUNED_INNER[label] if tuned and label != SGD else INNER) for label in LABELS]
        run_dir = out / "scale" / "runs" / f"seed-{seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "results.json").write_text(json.dumps({"data": {"sizes": {"train": 1000}}, "records": records}))
        summary = [{k: r[k] for k in ("label", "kind", "status", "final")} | {"curve": r["rows"]} for r in records]
        runs.append(
            {
                "id": f"seed-{seed}",
                "dir": f"runs/seed-{seed}",
                "overrides": {"seed": seed},
                "touched": {"seed": None},
                "status": "ok",
                "records": summary,
            }
        )
    results = {"config": {"base": base, "nproc": 2}, "axes": [{"key": "seed", "values": [0, 1, 2]}], "runs": runs}
    if tuned:
        results["tuning"] = TUNING
    (out / "scale" / "results.json").write_text(json.dumps(results))
    (out / "scale_compute").mkdir()
    (out / "scale_compute" / "compute.json").write_text(json.dumps(COMPUTE))
    return out


def test_the_scale_section_renders_from_a_step_directory(tmp_path: Path) -> None:
    out = fake_step(tmp_path / "reproduce")
    figures = tmp_path / "findings"
    figures.mkdir()
    numbers: dict = {}
    lines, summary = section_scale(out, figures, numbers)
    text = "\n".join(lines)
    assert text.startswith("## P1. Parle at scale") and (figures / "scale.png").is_file()
    scale = numbers["scale"]
    # 3 paired seeds: parle - sgd-ddp = +0.02, +0.01, +0.015 -> mean 0.015, a t-interval on 2 df
    d = scale["paired"]["parle - sgd-ddp"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(0.015) and d["ci95"] > 0
    assert scale["best_set"]["lowest"] == "sgd-ddp" and scale["world_size"] == [2]
    # Parle's bytes: (50 / 5 + 1) all-reduces of the weights against SGD-DDP's 50 of the gradient
    assert scale["bytes_ratio_parle_sgd"] == pytest.approx(11 / 50)
    assert "22.0 % of SGD-DDP's payload" in text and "1 / L = 20 %" in text
    assert "not Parle's convergence at large n" in text and "not Parle's convergence at large n" in summary
    assert "| 64 |" in text and "Projected wall-clock per epoch" in text
    # the section is rendered from its view, which findings.json stores: the stored view renders the same text
    from localentropy.experiments.reproduce.findings.render import section_text

    stored = json.loads(json.dumps(scale["view"]))
    assert section_text("scale", stored) == (lines, summary)
    assert "{{" not in text and "{%" not in text
    # untuned: said so, and L is the configured one
    assert scale["tuning"] is None and scale["inner_steps"] == {"entropy-sgd-ddp": INNER, "parle": INNER}
    assert "the sweep tuned none" in text and "At hand-set values (untuned)" in summary


def test_the_scale_section_reports_the_tuned_values_and_parle_beside_entropy_sgd(tmp_path: Path) -> None:
    out = fake_step(tmp_path / "reproduce", tuned=True)
    figures = tmp_path / "findings"
    figures.mkdir()
    numbers: dict = {}
    lines, summary = section_scale(out, figures, numbers)
    text = "\n".join(lines)
    scale = numbers["scale"]
    # L as the runs ran it (the tuned one), in the projection and the bytes sentence
    assert scale["inner_steps"] == TUNED_INNER and scale["view"]["inner"] == 25
    assert scale["view"]["inner_entropy"] == 5 and "1 / L = 4 %" in text
    assert scale["projection"] == projection(COMPUTE, 1000, 25)
    # the chosen values in a table, the edge named
    assert (
        "| `parle` | 1.5 | 0.1 | 25 | — | 0.95 | — | options.inner_steps {5, 25}; options.rho [0.01, 1] log | 8.25 % |"
        in text
    )
    assert "| parle | 12.50 ± 0.50 % | 2.00 ± 0.00 | 2 |" in text  # 50 passes: 2 outer steps of L = 25
    assert "`parle` options.rho" in text and "the optimum may lie beyond" in text
    # Parle beside Entropy-SGD-DDP: the paired difference with its interval, in the section and the summary
    d = scale["paired"]["parle - entropy-sgd-ddp"]
    assert d["n"] == 3 and d["mean"] == pytest.approx(-0.015)
    from localentropy.experiments.reproduce.findings.common import short

    assert f"Parle minus Entropy-SGD-DDP: {short(d)}" in summary and "Tuned alike (8 trials each" in summary
    assert "`parle` minus `entropy-sgd-ddp`: -1.50 points (95 % t-interval" in text
    assert "L = 25 for Parle, 5 for Entropy-SGD-DDP" in summary
    # every number it states is in its record (findings.json)
    from localentropy.experiments.reproduce.findings.render import unsupported_numbers

    assert unsupported_numbers(text + summary, numbers) == []


def test_the_projection_follows_the_alpha_beta_model() -> None:
    rows = projection(COMPUTE, examples=1000, inner_steps=INNER, workers=(2, 64))
    assert len(rows) == 2 * len(LINKS)
    name, bandwidth, alpha = LINKS[0]
    row = next(r for r in rows if r["link"] == name and r["n"] == 64)
    ring = ring_allreduce_seconds(4 * PARAMETERS, 64, alpha, bandwidth)
    passes = 10  # 1000 examples / batch 100
    assert row[SGD] == pytest.approx(passes * (0.01 / 64 + 0.001 + ring))
    assert row[PARLE] == pytest.approx(passes * (0.01 / 64 + 0.002) + math.ceil(passes / INNER) * ring)
    assert row["speedup"] == pytest.approx(row[SGD] / row[PARLE])
    # Parle wins where an all-reduce costs more than L / (L - 1) x the extra update
    assert (row["speedup"] > 1) == (ring * (1 - 1 / INNER) > 0.002 - 0.001)


def test_the_scale_steps_are_registered_and_their_compute_is_measured() -> None:
    steps = {s.name: s for s in registered_steps()}
    assert "scale" in SECTIONS
    assert steps["scale"].kind == "sweep" and steps["scale"].config == "sweep_scale.toml"
    assert steps["scale_compute"].kind == "compute" and steps["scale_compute"].section == "scale"
    sweep = read_toml(shipped_dir() / "sweep_scale.toml")
    assert sweep["nproc"] == 2 and len(sweep["grid"]["seed"]) >= 3
    config = step_config(steps["scale_compute"], shipped_dir(), quick=True)
    assert config["sweep"] == sweep and config["repeats"] == steps["scale_compute"].quick["repeats"]
    measured = measure_sweep_compute(sweep, repeats=2)
    assert measured["model"] == "small-mnistfc" and measured["batch_size"] == 128 and measured["nproc"] == 2
    assert measured["parameters"] == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert measured["gradient"] > 0 and measured["entropy_update"] > 0


def test_the_readme_summary_repeats_parle_beside_entropy_sgd_ddp_and_sgd_ddp(tmp_path: Path) -> None:
    from localentropy.experiments.reproduce.findings.replication import headline_claims
    from localentropy.experiments.reproduce.findings.scale import scale_claims

    out = fake_step(tmp_path / "reproduce", tuned=True)
    record = {"scale": {"claims": scale_claims(out / "scale")}}
    ids = [c["id"] for c in headline_claims("scale", record)]
    assert ids == ["scale/parle - sgd-ddp", "scale/parle - entropy-sgd-ddp"]


def test_l_is_read_from_the_runs_then_from_the_config_with_the_chosen_values() -> None:
    from localentropy.experiments.reproduce.findings.scale import inner_steps

    base = {"optimizers": [{"label": "parle", "kind": "parle", "options": {"inner_steps": 5}}]}
    tuned = {"chosen": {"parle": {"options.inner_steps": 25}}}
    assert inner_steps({PARLE: {0: {"passes_per_step": 25}, 1: {"passes_per_step": 25}}}, base, None, PARLE) == 25
    assert inner_steps({PARLE: {0: {}}}, base, tuned, PARLE) == 25  # an older record: the config as tuned
    assert inner_steps({PARLE: {}}, base, None, PARLE) == 5
    with pytest.raises(ValueError, match="different L"):
        inner_steps({PARLE: {0: {"passes_per_step": 5}, 1: {"passes_per_step": 25}}}, base, None, PARLE)
