# ruff: noqa: F403, F405
"""Bad input beyond the fuzz: --debug, unreadable paths, the console, constructors and data readers naming the
field, the value and what is expected."""

from __future__ import annotations

from tests.cli.common import *


def test_debug_shows_the_traceback_and_only_then(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(to_toml({**RUN_BASE, "replicates": -1}))
    assert main(["run", str(config), "--out", str(tmp_path / "a")]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "run", str(config), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "replicates: got -1" in err


def test_unreadable_paths_are_bad_input(tmp_path, capsys):
    """A config or --out that cannot be used is exit 2 with a message naming it, not a failure (exit 1)."""
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(RESULTS_BASE))
    for argv, expected in [
        (["run", str(config), "--out", str(blocker / "sub")], "cannot use it as the run directory"),
        (["run", str(config), "--out", str(tmp_path / ("d" * 300))], "cannot use it as the run directory"),
        (["run", str(config), "--out", ""], "expected a directory"),
        (["report", str(tmp_path / "run"), "--out", str(blocker / "sub")], "cannot create the report directory"),
        (["run", str(tmp_path / "x\x00y.toml")], "cannot read the config file"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)


def test_out_into_a_non_empty_directory_that_is_not_a_run_is_refused(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "report.md").write_text("my notes")
    for extra in ([], ["--force"]):
        assert main(["run", str(config), "--out", str(precious), *extra]) == 2
        assert "not a run directory" in capsys.readouterr().err
    assert [p.name for p in precious.iterdir()] == ["report.md"]
    assert (precious / "report.md").read_text() == "my notes"


def test_long_labels_are_refused_before_any_work(tmp_path, capsys):
    """A label longer than a file name allows was an OSError mid-run (exit 1): now a config error up front."""
    data = copy.deepcopy(RUN_BASE)
    data["estimators"][0]["label"] = "x" * 300
    config = tmp_path / "run.toml"
    config.write_text(to_toml(data))
    assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "estimators[0].label" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Bad input from the console: real processes
# ----------------------------------------------------------------------------------------------------------------


def test_console_bad_input_exits_2_without_traceback(tmp_path):
    """Real ``python -m localentropy`` processes (started together: a few seconds in all)."""
    bad_run = tmp_path / "bad_run.toml"
    bad_run.write_text(to_toml({**RUN_BASE, "chains": "four", "gamma": math.nan}))
    bad_train = tmp_path / "bad_train.toml"
    bad_train.write_bytes(b"\x89PNG\r\n\x1a\n\x00binary")
    cases = {
        "run": (["run", str(bad_run), "--out", str(tmp_path / "o1")], "chains: got 'four'"),
        "train": (["train", str(bad_train), "--out", str(tmp_path / "o2")], "not UTF-8"),
    }
    if not HAS_SWEEP:  # three processes (each imports torch): bad flags are fuzzed in-process above
        cases["report"] = (["report", str(tmp_path / "missing"), "--frobnicate"], "unrecognized arguments")
    else:
        bad_sweep = tmp_path / "bad_sweep.toml"
        bad_sweep.write_text(to_toml({**SWEEP_BASE, "grid": {"seed": []}}))
        cases["sweep"] = (["sweep", str(bad_sweep), "--out", str(tmp_path / "o3")], "grid.seed")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {}
    for name, (argv, _) in cases.items():
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "localentropy", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=env,
        )
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (name, err)
        assert "Traceback" not in err and "Traceback" not in out, (name, err)
        assert cases[name][1] in err, (name, err)
        assert len(err.strip().splitlines()) <= 5, (name, err)  # one message (a problem list is a few lines)
    assert not any(tmp_path.glob("o*/COMPLETE")) and not any(tmp_path.glob("o*"))


# ----------------------------------------------------------------------------------------------------------------
# Constructors and data readers name the field, the value and what is expected
# ----------------------------------------------------------------------------------------------------------------

BAD_REALS = [math.nan, math.inf, -1.0, "x", None, [1]]


def _sampler_cases() -> list[tuple[str, str, Any]]:
    from localentropy.samplers import sampler_hyperparameters

    cases = []
    for name in available_samplers():
        for parameter, default in sampler_hyperparameters(name).items():
            if parameter in ("potential", "grad_fn", "sampler"):
                continue
            if isinstance(default, bool):
                values = ["x", 2, None]
            elif isinstance(default, str):
                values = ["x", 1, None]
            else:
                values = BAD_REALS
            cases += [(name, parameter, v) for v in values]
    return cases


def _sampler_kwargs(name: str) -> dict[str, Any]:
    if name == "cyclical":
        return {"sampler": {"name": "sgld", "step_size": 0.1}, "n_cycles": 2, "total_steps": 10}
    if name == "mala":
        return {"step_size": 0.1, "potential": lambda y: (y**2).sum(-1)}
    return {"step_size": 0.1}


def _names(message: str, field: str, value: Any) -> bool:
    shown = {repr(value), str(value)} | ({repr(float(value))} if isinstance(value, int | float) else set())
    return field in message and (any(s in message for s in shown) or type(value).__name__ in message)


@pytest.mark.parametrize(("name", "parameter", "value"), _sampler_cases())
def test_sampler_constructors_name_field_and_value(name, parameter, value):
    from localentropy.samplers import make_sampler

    with pytest.raises((ValueError, TypeError)) as info:
        make_sampler(name, **{**_sampler_kwargs(name), parameter: value})
    assert _names(str(info.value), parameter, value), str(info.value)


@pytest.mark.parametrize("name", ["sgld", "sghmc"])
def test_sampler_constructors_refuse_huge_integers(name):
    from localentropy.samplers import make_sampler

    with pytest.raises(ValueError, match="step_size"):
        make_sampler(name, step_size=10**400)


def _estimator_cases() -> list[tuple[str, Callable[[Any], Any], str, Any]]:
    from localentropy.entropy import GaussianSmoothingEstimator, LocalEntropyEstimator
    from localentropy.samplers import SGLD

    def le(field: str) -> Callable[[Any], Any]:
        base = {"grad_fn": lambda y: y, "gamma": 1.0, "sampler": SGLD(step_size=0.1), "n_steps": 10}
        return lambda v: LocalEntropyEstimator(**{**base, field: v})

    def gs(field: str) -> Callable[[Any], Any]:
        return lambda v: GaussianSmoothingEstimator(**{"sigma": 1.0, "n_samples": 4, "grad_fn": lambda y: y, field: v})

    cases = []
    for field in ("gamma", "n_steps", "burn_in", "averaging"):
        cases += [("LocalEntropyEstimator", le(field), field, v) for v in BAD_REALS]
    for field in ("sigma", "n_samples", "order"):
        cases += [("GaussianSmoothingEstimator", gs(field), field, v) for v in BAD_REALS]
    return cases


@pytest.mark.parametrize(
    ("owner", "build", "field", "value"), _estimator_cases(), ids=lambda v: v if isinstance(v, str) else repr(v)[:10]
)
def test_estimator_constructors_name_field_and_value(owner, build, field, value):
    with pytest.raises((ValueError, TypeError)) as info:
        build(value)
    assert _names(str(info.value), field, value), (owner, str(info.value))


OPTIMIZER_OPTIONS = {
    "sgd": {"momentum": [math.nan, -0.1, 1.0, 2, "x"], "weight_decay": [-1.0, math.inf], "nesterov": ["yes", 1]},
    "adam": {"betas": [0.9, [0.9], [1.0, 0.9], ["x", 0.9]], "eps": [0.0, math.inf, None], "amsgrad": [0]},
    "sam": {"rho": [0.0, math.nan, "x"], "momentum": [math.nan, 5.0]},
    "lpf-sgd": {"sigma": [-1.0, math.nan], "nesterov": ["x", None], "momentum": [-1.0]},
    "entropy-sgd": {"gamma": [0.0, math.inf], "inner_steps": [0, 1.5], "momentum": [math.nan]},
    "entropy-adam": {"betas": [0.5, [2.0, 0.9]], "eps": [math.inf, -1.0, None]},
}


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [(k, f, v) for k, fields in OPTIMIZER_OPTIONS.items() for f, values in fields.items() for v in values],
)
def test_training_optimizers_name_field_and_value(kind, field, value):
    """Every optimizer `localentropy train` builds checks its options (torch's SGD takes momentum = nan or 2)."""
    from localentropy.experiments.training.optim import OptimizerConfig, check_optimizer

    options = {"gamma": 1.0} if kind.startswith("entropy") else {}
    # built unchecked (model_construct): the config's own checks end with this one
    spec = OptimizerConfig.model_construct(
        label="o",
        kind=kind,
        lr=0.1,
        options={**options, field: value},
        sampler="sgld" if kind.startswith("entropy") else None,
        sampler_options={"step_size": 0.1} if kind.startswith("entropy") else {},
    )
    problem = check_optimizer(spec)
    assert problem is not None, (kind, field, value)
    loc, reason = problem
    assert field.split("[")[0] in reason and loc in ((), ("options", field)), problem


@pytest.mark.parametrize("lr", [math.nan, math.inf, -0.1, 0.0])
def test_sam_refuses_a_bad_lr(lr):
    from localentropy.experiments.training.optim import SAMStep

    with pytest.raises(ValueError, match="lr"):
        SAMStep([torch.nn.Parameter(torch.zeros(2))], lr=lr)


@settings(
    max_examples=2 * settings.default.max_examples,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(blob=st.binary(max_size=300), header=st.binary(min_size=0, max_size=16))
def test_data_readers_raise_only_value_error_naming_the_file(tmp_path, blob, header):
    """Random bytes (and random IDX headers over random bodies, which may claim huge shapes) are refused by a
    ValueError naming the file, never another exception, never a huge allocation."""
    from localentropy.data import read_cifar_batch, read_idx

    for name, content in (("a.idx", blob), ("b.idx", b"\x00\x00" + header + blob), ("c", blob)):
        path = tmp_path / name
        path.write_bytes(content)
        for reader in (read_idx, read_cifar_batch):
            try:
                reader(path)
            except ValueError as exc:
                assert str(path) in str(exc)
