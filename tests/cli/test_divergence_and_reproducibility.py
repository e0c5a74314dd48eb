# ruff: noqa: F403, F405
"""Divergence is recorded with its cause and never crashes; the same config and seed give the same numbers."""

from __future__ import annotations

from tests.cli.common import *

# ----------------------------------------------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------------------------------------------

DIVERGENT = """\
name = "div"
seed = 3
replicates = 3
chains = 2
gamma = 1.0
temperature = 0.1
keep_draws = true

[problem]
kind = "quadratic"
dim = 3
condition = 4            # eigenvalues in [1, 4]: the SGLD limit 2 / lambda_max(A + gamma I) is 2 / 5 = 0.4

[[estimators]]
label = "stable"
sampler = "sgld"
step_size_fraction = 0.5
budgets = [16, 32]

[[estimators]]
label = "too-big"
sampler = "sgld"
hyperparameters = { step_size = 4.0 }    # 10 times the limit: |1 - 4 x 5| = 19 per step overflows in 250 steps
budgets = [600, 800]

[[estimators]]
label = "smooth"
kind = "smoothing"
budgets = [16]
"""


def test_a_diverged_estimator_is_recorded_and_the_others_go_on(tmp_path, capsys):
    config = tmp_path / "div.toml"
    config.write_text(DIVERGENT)
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    results = shared_no_nan((out / "results.json").read_text())
    by_key = {(r["key"]["estimator"], r["key"]["budget"]): r for r in results["records"]}
    assert len(by_key) == 5 and len(results["records"]) == 5
    for budget in (600, 800):
        record = by_key[("too-big", budget)]
        assert record["status"] == "diverged"
        assert record["metrics"] is None and record["chains"] is None and record["ksd"] is None
        error = record["error"]
        assert error.startswith("diverged in replicate 0:")  # stopped at the first replicate that diverged
        assert re.search(r"at inner step \d+ of \d+", error)
        assert "SGLD(step_size=4.0" in error
        assert "step size 4 is at or above the SGLD stability limit 2 / lambda_max(A + gamma I) = 0.4" in error
        assert not (out / "records" / f"too-big__p0__g1__T0.1__b{budget}.npy").exists()  # no draws kept
    for key in (("stable", 16), ("stable", 32), ("smooth", 16)):
        record = by_key[key]
        assert record["status"] == "ok" and record["error"] is None
        assert all(math.isfinite(v) for v in record["metrics"].values() if isinstance(v, float))
    assert "too-big x0 gamma=1 T=0.1 budget=800: diverged in replicate 0" in captured.err
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| `")]
    assert rows and not any("too-big" in line for line in rows)  # never in a table of results
    assert "- `too-big`, budget 800: **diverged**: diverged in replicate 0" in report
    results_lines = [line for line in report.splitlines() if line.startswith(("|", "**Best"))]
    assert results_lines and not any(re.search(r"\bnan\b|\binf\b", line, re.IGNORECASE) for line in results_lines)
    with __import__("xarray").open_datatree(out / "draws.nc", engine="h5netcdf") as tree:
        assert not any(name.startswith("too-big") for name in tree.children)


@pytest.mark.parametrize("sampler", [s for s in available_samplers() if s != "cyclical"] + ["cyclical", "paper"])
def test_every_sampler_with_a_huge_step_is_recorded_never_crashes(tmp_path, sampler):
    """Each sampler at step size 1000 on the quadratic: either diverged (recorded with its step and sampler) or
    finite (MALA rejects, pSGLD's preconditioner shrinks the step): never an exception, never a NaN."""
    if sampler == "cyclical":
        spec = {
            "sampler": "cyclical",
            "hyperparameters": {"sampler": {"name": "sgld", "step_size": 1000.0}, "n_cycles": 2},
        }
    elif sampler == "paper":
        spec = {"preset": "paper", "noise_scale": 0.1, "hyperparameters": {"step_size": 1000.0}}
    else:
        spec = {"sampler": sampler, "hyperparameters": {"step_size": 1000.0}}
    data = copy.deepcopy(RUN_BASE)
    data["estimators"] = [{"label": "huge", "budgets": [400], **spec}, data["estimators"][1]]
    config = tmp_path / "c.toml"
    config.write_text(to_toml(data))
    path, _ = run_comparison(config, tmp_path / "out", progress=io.StringIO())
    records = {r["key"]["estimator"]: r for r in shared_no_nan((path / "results.json").read_text())["records"]}
    assert records["s"]["status"] == "ok"
    huge = records["huge"]
    if huge["status"] == "diverged":
        assert "inner step" in huge["error"] and "likely cause" in huge["error"] and "step size" in huge["error"]
    else:
        assert huge["status"] == "ok" and all(
            math.isfinite(v) for v in huge["metrics"].values() if isinstance(v, float)
        )


DIVERGING_OPTIMIZERS = {
    "adam": {"kind": "adam", "lr": 1e30},
    "lpf-sgd": {"kind": "lpf-sgd", "lr": 1e30, "options": {"sigma": 1e-3, "n_samples": 2}},
    "sam": {"kind": "sam", "lr": 1e30, "options": {"rho": 0.05}},
    "entropy-adam": {
        "kind": "entropy-adam",
        "lr": 0.01,
        "options": {"gamma": 1.0, "inner_steps": 3},
        "sampler": "sghmc",
        "sampler_options": {"step_size": 1e30, "temperature": 1e-8},
    },
    "entropy-sgd": {
        "kind": "entropy-sgd",
        "lr": 0.1,
        "options": {"gamma": 1.0, "inner_steps": 3},
        "preset": "paper",
        "sampler_options": {"step_size": 1e6, "noise_scale": 1e-4},
    },
    "sgd": {"kind": "sgd", "lr": 1e30},
}


def test_every_training_optimizer_stops_within_an_epoch_and_never_reports_nan(tmp_path):
    pytest.importorskip("pytorch_optimizer")
    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["epochs"] = 3
    cfg["data"]["train_limit"] = 128
    cfg["optimizers"] = [{"label": k, **v} for k, v in DIVERGING_OPTIMIZERS.items()]
    cfg["optimizers"].append({"label": "fine", "kind": "sgd", "lr": 0.1})
    out = tmp_path / "run"
    run_training(parse_train_config(cfg), out, progress=io.StringIO())
    records = {r["label"]: r for r in shared_no_nan((out / "results.json").read_text())["records"]}
    spe = math.ceil(128 / cfg["batch_size"])
    for label, spec in DIVERGING_OPTIMIZERS.items():
        rec = records[label]
        assert rec["status"] == "diverged", (label, rec["message"])
        assert rec["final"] is None and rec["flatness"] is None
        assert rec["epochs_run"] == 0 and rec["steps"] <= spe  # caught in the first epoch
        message = rec["message"]
        step = re.search(r"diverged at optimizer step (\d+) \(epoch 1", message)
        assert step and int(step.group(1)) <= 2, message  # within one or two outer steps of the blow-up
        assert "likely cause" in message.lower() or "try a smaller" in message.lower(), message
        if spec["kind"].startswith("entropy"):  # the sampler is named, with its settings
            assert "sampler sghmc" in message or "the 'paper' preset" in message, message
            assert "SGHMC(step_size=1e+30" in message or "SGLD(step_size=1000000.0" in message, message
        assert len(rec["rows"]) == 1  # only epoch 0: no row past the last finite epoch
    assert records["fine"]["status"] == "ok"
    for name in ("epochs.csv", "final.csv"):
        with (out / name).open() as handle:
            cells = [c for row in csv.reader(handle) for c in row]
        assert not any(c.lower() in ("nan", "inf", "-inf") for c in cells), name
    final = {row["optimizer"]: row for row in csv.DictReader((out / "final.csv").open())}
    assert all(final[label]["test_error"] == "" for label in DIVERGING_OPTIMIZERS)
    report = (out / "report.md").read_text()
    table = [line for line in report.splitlines() if line.startswith("|")]
    assert "## Diverged" in report and not any(re.search(r"\bnan\b|\binf\b", line, re.IGNORECASE) for line in table)


# ----------------------------------------------------------------------------------------------------------------
# Reproducibility
# ----------------------------------------------------------------------------------------------------------------


def test_run_is_reproducible_for_every_sampler(tmp_path):
    """tests/experiments/comparison/test_cli_run.py checks SGLD and smoothing; here every registered sampler and a
    preset, twice."""
    data = copy.deepcopy(RUN_BASE)
    data["ksd"] = True
    data["estimators"] = [
        {
            "label": name,
            "sampler": name,
            "step_size_fraction": 0.3,
            "budgets": [16],
            **({"hyperparameters": {"sampler": {"name": "sghmc"}, "n_cycles": 2}} if name == "cyclical" else {}),
        }
        for name in available_samplers()
    ] + [
        {"label": "paper", "preset": "paper", "noise_scale": 0.3, "step_size_fraction": 0.3, "budgets": [16]},
        {"label": "stein", "kind": "smoothing", "order": 0, "budgets": [16]},
    ]
    config = tmp_path / "c.toml"
    config.write_text(to_toml(data))
    first = run_comparison(config, tmp_path / "a", progress=io.StringIO())[0]
    second = run_comparison(config, tmp_path / "b", progress=io.StringIO())[0]
    a, b = (shared_no_nan((p / "results.json").read_text()) for p in (first, second))
    assert all(r["status"] == "ok" for r in a["records"])
    assert without_timing(a) == without_timing(b)


def test_train_is_reproducible(tmp_path):
    """Two fresh runs of one training config: identical results.json apart from the seconds (flatness included)."""
    pytest.importorskip("pytorch_optimizer")
    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["epochs"] = 2
    cfg["model"]["options"]["dropout"] = 0.2
    cfg["flatness"] = {
        "measures": ["top_eigenvalue", "trace", "sharpness", "local_entropy"],
        "examples": 40,
        "power_iterations": 5,
        "hutchinson_samples": 3,
        "sharpness_iterations": 2,
        "local_entropy": {"steps": 3, "chains": 2, "burn_in": 1},
    }
    cfg["optimizers"] += [
        {"label": "lpf", "kind": "lpf-sgd", "lr": 0.1, "options": {"sigma": 1e-3, "n_samples": 2}},
        {"label": "sam", "kind": "sam", "lr": 0.1, "options": {"rho": 0.05}},
    ]
    results = []
    for name in ("a", "b"):
        run_training(parse_train_config(copy.deepcopy(cfg)), tmp_path / name, progress=io.StringIO())
        results.append(shared_no_nan((tmp_path / name / "results.json").read_text()))
    assert all(r["status"] == "ok" for r in results[0]["records"])
    assert without_timing(results[0]) == without_timing(results[1])
    for label in ("sgd", "esgd", "lpf", "sam"):
        a, b = (torch.load(tmp_path / n / "checkpoints" / f"{label}.pt", weights_only=True) for n in ("a", "b"))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_torn_or_foreign_records_are_redone_never_reported(tmp_path):
    """A record file that is torn, not an object, or another record's, found by a resume, is computed again."""
    config = tmp_path / "c.toml"
    config.write_text(to_toml(RUN_BASE))
    clean = run_comparison(config, tmp_path / "clean", progress=io.StringIO())[0]
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text((clean / "config.json").read_text())
    (out / "records").mkdir()
    ids = sorted(p.stem for p in (clean / "records").glob("*.json"))
    (out / "records" / f"{ids[0]}.json").write_text('{"key": {"estim')  # torn
    (out / "records" / f"{ids[1]}.json").write_text((clean / "records" / f"{ids[0]}.json").read_text())  # foreign
    (out / "records" / ".x.json.abc.tmp").write_text("half")  # a killed write
    path, state = run_comparison(config, out, progress=io.StringIO())
    assert state == "resume" and (path / "COMPLETE").is_file() and not (out / "records" / ".x.json.abc.tmp").exists()
    a, b = (shared_no_nan((d / "results.json").read_text()) for d in (clean, out))
    assert without_timing(a) == without_timing(b)

    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["optimizers"] = cfg["optimizers"][:1]
    clean = tmp_path / "train_clean"
    run_training(parse_train_config(copy.deepcopy(cfg)), clean, progress=io.StringIO())
    record = json.loads((clean / "records" / "sgd.json").read_text())
    (clean / "records" / "sgd.json").write_text(json.dumps({**record, "label": "other"}))
    (clean / "COMPLETE").unlink()
    run_training(parse_train_config(copy.deepcopy(cfg)), clean, progress=io.StringIO())
    assert json.loads((clean / "records" / "sgd.json").read_text())["label"] == "sgd"
    assert without_timing(shared_no_nan((clean / "results.json").read_text())["records"]) == without_timing([record])
