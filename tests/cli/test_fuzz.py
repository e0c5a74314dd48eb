# ruff: noqa: F403, F405
"""Malformed configs, results files, flags and paths for every command: exit 2, a message naming the field, no
traceback, no output directory (hypothesis; counts reported at the end)."""

from __future__ import annotations

from tests.cli.common import *

# ----------------------------------------------------------------------------------------------------------------
# The bases are valid (so each mutation is what breaks a config) and the TOML writer round-trips
# ----------------------------------------------------------------------------------------------------------------


def test_fuzz_bases_are_valid_and_round_trip(tmp_path, capsys):
    for base in (RUN_BASE, TRAIN_BASE, SWEEP_BASE):
        assert tomllib.loads(to_toml(base)) == base
    config = tmp_path / "run.toml"
    config.write_text(to_toml(RUN_BASE))
    assert main(["run", str(config), "--out", str(tmp_path / "run")]) == 0
    config = tmp_path / "train.toml"
    config.write_text(to_toml(TRAIN_BASE))
    assert main(["train", str(config), "--out", str(tmp_path / "train")]) == 0
    if HAS_SWEEP:
        from localentropy.experiments.sweeps.runner import parse_sweep_config

        assert len(parse_sweep_config(copy.deepcopy(SWEEP_BASE)).runs) == 2
    capsys.readouterr()


# ----------------------------------------------------------------------------------------------------------------
# Fuzz: malformed configs for every command
# ----------------------------------------------------------------------------------------------------------------


@FUZZ
@given(data=malformed_file(RUN_BASE, RUN_FIELDS, RUN_REQUIRED, RUN_TABLES))
def test_fuzz_run_refuses_malformed_configs(workspace, capsys, data):
    shared_fuzz_config("run", workspace, capsys, *data)


@FUZZ
@given(data=malformed_file(TRAIN_BASE, TRAIN_FIELDS, TRAIN_REQUIRED, TRAIN_TABLES))
def test_fuzz_train_refuses_malformed_configs(workspace, capsys, data):
    shared_fuzz_config("train", workspace, capsys, *data)


SWEEP_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("name",), bad_name()),
    (("base",), st.sampled_from([0, 1.5, True, [], "", "no-such-file.toml", "."])),
    (("grid",), NOT_A_TABLE),
    (("grid", "seed"), NOT_A_LIST | st.just([]) | st.just([1, 1]) | st.lists(bad_int(0, 2**62), min_size=1), ("seed",)),
    (("grid", "zz_not_a_field"), st.just([1, 2])),
    (("runs",), NOT_A_LIST | st.just([5])),
]
# a base field mutated inside the sweep: every expanded run is checked by the training config's rules (the grid
# sets the seed and the sweep names the runs, so those two are left alone)
SWEEP_BASE_FIELDS = [f for f in TRAIN_FIELDS if f[0] not in (("seed",), ("name",))]


@pytest.mark.skipif(not HAS_SWEEP, reason="`localentropy sweep` is not in this build")
@FUZZ
@given(
    data=malformed_file(SWEEP_BASE, SWEEP_FIELDS, [("base",), ("grid",)], [()])
    | malformed_file(SWEEP_BASE, SWEEP_BASE_FIELDS, TRAIN_REQUIRED, TRAIN_TABLES[1:], prefix=("base",))
)
def test_fuzz_sweep_refuses_malformed_configs(workspace, capsys, data):
    content, mentions = data
    # the training config's own paths are reported inside the expanded runs' messages, without the "base." prefix
    mentions = tuple(m.removeprefix("base.") for m in mentions if m != "base" or content.count(b"[base]") == 0)
    shared_fuzz_config("sweep", workspace, capsys, content, mentions)


# ----------------------------------------------------------------------------------------------------------------
# Fuzz: malformed results.json for `report`
# ----------------------------------------------------------------------------------------------------------------


NOT_A_STRING = st.sampled_from([0, 1.5, True, [], {}, ["a"]])
NOT_AN_OBJECT = st.sampled_from([0, 1.5, "x", True, [], [1]])
NOT_A_METRIC = st.sampled_from(["0.1", "", True, False, {"a": "b"}, ["x"], [True], 10**400])  # 10**400: no float
RESULTS_FIELDS: list[tuple[Path_, st.SearchStrategy]] = [
    (("schema",), st.sampled_from([0, 2, 99, "1", None, [], {}, 1.5])),
    (("records",), NOT_A_LIST | st.just([]) | st.just({"a": 1})),
    (("records", 0), NOT_AN_OBJECT),
    (("records", 0, "key"), NOT_AN_OBJECT | st.just({})),
    (("records", 0, "key", "estimator"), NOT_A_STRING | st.just("")),
    (("records", 0, "key", "point"), st.sampled_from([-1, 1.5, "0", None, True, [], {}])),
    (("records", 1, "key", "gamma"), st.sampled_from([0, -1.0, "1", None, True, [], {}, 10**400])),
    (("records", 1, "key", "temperature"), st.sampled_from([0.0, -2, "x", None, False, [1.0], -(10**400)])),
    (("records", 2, "key", "budget"), st.sampled_from([0, -5, 1.5, "8", None, True, [8]])),
    (("records", 0, "status"), st.sampled_from([0, None, True, [], {}])),
    (("records", 2, "error"), st.sampled_from([0, 1.5, True, [], {"a": 1}])),
    (("records", 0, "metrics"), NOT_AN_OBJECT),
    (("records", 0, "metrics", "mse"), NOT_A_METRIC),
    (("records", 1, "metrics", "bias"), NOT_A_METRIC.map(lambda v: [0.1, v])),
    (("records", 0, "chains"), NOT_AN_OBJECT),
    (("records", 0, "chains", "max_rhat"), NOT_A_METRIC),
    (("records", 0, "timing"), NOT_AN_OBJECT),
    (("records", 0, "timing", "seconds_per_replicate"), NOT_A_METRIC),
    (("records", 0, "ksd"), st.sampled_from(["0.3", True, [], {}, [0.3], 10**400])),
    (("records", 0, "estimator"), NOT_AN_OBJECT),
    (("records", 0, "estimator", "kind"), NOT_A_STRING),
    (("name",), NOT_A_STRING),
    (("meta",), NOT_AN_OBJECT.filter(lambda v: v is not None)),
    (("meta", "versions"), NOT_AN_OBJECT),
]


@st.composite
def malformed_results(draw) -> tuple[bytes | None, str]:
    """(results.json content or None for none at all, how it is malformed)."""
    kind = draw(st.sampled_from(["field"] * 5 + ["missing", "garbage", "not-json", "truncated", "not-object"]))
    text = json.dumps(RESULTS_BASE, indent=1)
    if kind == "field":
        changes = draw(
            st.lists(
                st.sampled_from(RESULTS_FIELDS).flatmap(lambda f: f[1].map(lambda v, path=f[0]: ("set", path, v, ()))),
                min_size=1,
                max_size=3,
            )
        )
        return json.dumps(apply(RESULTS_BASE, changes)).encode(), "field"
    if kind == "missing":
        return None, kind
    if kind == "garbage":
        return draw(st.binary(max_size=100)).replace(b"{", b"").replace(b"[", b""), kind
    if kind == "not-json":
        return draw(st.text(max_size=50)).replace("{", "").replace("[", "").encode("utf-8", "surrogatepass"), kind
    if kind == "truncated":
        return text[: draw(st.integers(0, len(text) - 1))].encode(), kind
    return json.dumps(draw(st.sampled_from([[RESULTS_BASE], 1, "results", None, []]))).encode(), kind


@FUZZ
@given(data=malformed_results(), merge=st.booleans())
def test_fuzz_report_refuses_malformed_results(workspace, capsys, data, merge):
    content, _ = data
    where = workspace.next()
    run = where / "run"
    run.mkdir()
    if content is not None:
        (run / "results.json").write_bytes(content)
    good = where / "good"
    good.mkdir()
    (good / "results.json").write_text(json.dumps(RESULTS_BASE))
    out = where / "out"
    capsys.readouterr()
    rc = main(["report", *([str(good)] if merge else []), str(run), "--out", str(out)])
    captured = capsys.readouterr()
    TRIED["report"] += 1
    assert_refused("report", rc, captured.out, captured.err, out, ("results.json",))


def test_report_of_the_fuzz_base_works(tmp_path, capsys):
    """The control: the unmutated results.json gives a report (so each mutation is what is refused)."""
    (tmp_path / "results.json").write_text(json.dumps(RESULTS_BASE))
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "`sgld`" in text and "**diverged**" in text and "nan" not in text.lower()
    capsys.readouterr()


def test_report_reads_nan_from_other_writers_as_undefined(tmp_path, capsys):
    """results.json never holds NaN (JSON has none); a file with NaN shows a dash, never 'nan', as a result."""
    text = json.dumps(RESULTS_BASE).replace('"mse": 0.1', '"mse": NaN').replace('"ksd": 0.3', '"ksd": Infinity')
    (tmp_path / "results.json").write_text(text)
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert not re.search(r"\bnan\b|\binf\b", report, re.IGNORECASE)
    capsys.readouterr()


def test_report_of_an_incomplete_train_run_says_what_it_lacks(tmp_path, capsys):
    results = {"schema": 1, "records": [{"label": "sgd", "rows": [], "status": "ok"}]}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "localentropy train" in err and "records[0].kind: field required" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------------
# Fuzz: bad flags and paths
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_configs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("valid")
    paths = {"run": base / "run.toml", "train": base / "train.toml", "sweep": base / "sweep.toml"}
    paths["run"].write_text(to_toml(RUN_BASE))
    paths["train"].write_text(to_toml(TRAIN_BASE))
    paths["sweep"].write_text(to_toml(SWEEP_BASE))
    (base / "a_file").write_text("not a directory")
    (base / "garbage.toml").write_bytes(b"\x00\x01\xff garbage")
    (base / "empty.toml").write_bytes(b"")
    (base / "a_dir").mkdir()
    return {
        **paths,
        "file": base / "a_file",
        "garbage": base / "garbage.toml",
        "empty": base / "empty.toml",
        "dir": base / "a_dir",
    }


def _options(command: str) -> list[str]:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices.get(command, parser)
    return [o for action in sub._actions for o in action.option_strings] + ["--debug", "--version", "--help"]


@st.composite
def bad_argv(draw, configs: dict[str, Path], out: Path) -> list[str]:
    commands = sorted(SUBCOMMANDS)
    kind = draw(
        st.sampled_from(
            [
                "unknown-command",
                "unknown-option",
                "missing-positional",
                "missing-value",
                "bad-number",
                "bad-out",
                "bad-config",
                "extra-positional",
                "no-command",
            ]
        )
    )
    with_config = [c for c in ("run", "train", "sweep") if c in SUBCOMMANDS]
    if kind == "no-command":
        return []
    if kind == "unknown-command":
        return [draw(st.text(min_size=1, max_size=10).filter(lambda t: t not in commands and not t.startswith("-")))]
    if kind == "unknown-option":
        command = draw(st.sampled_from(commands))
        known = _options(command)
        option = draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_é", min_size=1, max_size=8)
            .map(lambda t: "--z" + t)
            .filter(lambda o: not any(k.startswith(o.split("=")[0]) for k in known))
        )
        positional = [str(configs.get(command, configs["dir"]))] if command in (*with_config, "report") else []
        return [command, *positional, option]
    if kind == "missing-positional":
        return [draw(st.sampled_from([*with_config, "report"])), *draw(st.sampled_from([[], ["--force"]]))]
    if kind == "missing-value":
        command = draw(st.sampled_from([*with_config, "report"]))
        return [command, str(configs.get(command, configs["dir"])), "--out"]
    if kind == "bad-number":
        command, option = draw(
            st.sampled_from(
                [
                    ("demo", "--chains"),
                    ("demo", "--steps"),
                    ("demo", "--seed"),
                    ("digits", "--epochs"),
                    ("digits", "--seed"),
                ]
                + ([("sweep", "--workers")] if HAS_SWEEP else [])
            )
        )
        positive = option != "--seed"
        value = draw(
            st.sampled_from(
                ["0", "-3", "1.5", "abc", "", "1e3", " ", "1_0x"]
                if positive
                else ["1.5", "abc", "", "1e3", "--", "0x10"]
            )
        )
        prefix = [str(configs["sweep"])] if command == "sweep" else []
        return [command, *prefix, option, value]
    if kind == "bad-out":
        command = draw(st.sampled_from(with_config))
        target = draw(st.sampled_from(["", " ", "file", "under-file"]))
        path = {"file": str(configs["file"]), "under-file": str(configs["file"] / "sub")}.get(target, target)
        return [command, str(configs[command]), "--out", path]
    if kind == "bad-config":
        command = draw(st.sampled_from(with_config))
        which = draw(st.sampled_from(["garbage", "empty", "dir", "missing"]))
        path = str(configs[which]) if which != "missing" else str(configs["dir"] / "no-such.toml")
        return [command, path, "--out", str(out)]
    command = draw(st.sampled_from(with_config))
    return [command, str(configs[command]), str(configs[command]), "--out", str(out)]


@FUZZ
@given(data=st.data())
def test_fuzz_bad_flags_and_paths(valid_configs, workspace, capsys, data):
    out = workspace.next() / "out"
    argv = data.draw(bad_argv(valid_configs, out))
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    TRIED["flags"] += 1
    assert_refused(argv[0] if argv and argv[0] in SUBCOMMANDS else "?", rc, captured.out, captured.err, out)
    assert not (valid_configs["file"].parent / "COMPLETE").exists()


def test_fuzz_tried_a_few_hundred_inputs():
    """Runs after the fuzz tests of this module (pytest keeps definition order): how many inputs they tried."""
    if not TRIED:
        pytest.skip("the fuzz tests did not run")
    assert sum(TRIED.values()) >= min(300, 3 * FUZZ_EXAMPLES)
