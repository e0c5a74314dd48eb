# ruff: noqa: F403, F405
"""Safety: no eval / exec / unsafe unpickling, labels stay inside the run directory, malicious checkpoints
and CIFAR batches run nothing."""

from __future__ import annotations

from tests.cli.common import *

# ----------------------------------------------------------------------------------------------------------------
# Safety
# ----------------------------------------------------------------------------------------------------------------


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return ""


def test_package_never_evaluates_or_unpickles_freely():
    """Source scan of localentropy/: no eval/exec/compile, torch.load only with weights_only=True, np.load without
    allow_pickle, pickle only through the restricted unpickler, imports by name only where a user names them."""
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("yaml", "marshal", "shelve", "dill", "cloudpickle") for n in names):
                    problems.append(f"{rel}:{node.lineno}: imports {names}")
        for call in _calls(tree):
            name = _name(call.func)
            keywords = {k.arg: k.value for k in call.keywords}
            where = f"{rel}:{call.lineno}: {name}"
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
                problems.append(where)
            if name == "torch.load":
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where} without weights_only=True")
            if name in ("np.load", "numpy.load"):
                value = keywords.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where} with allow_pickle")
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.serialization.load"):
                problems.append(where)
            if name.endswith("import_module") and str(rel) not in (
                # problem.factory = "package.module:function", named by the user
                "localentropy/experiments/comparison/plan.py",
                "localentropy/data/sources.py",  # optional packages by their fixed names (sklearn, mlxtend, mnist1d)
            ):
                problems.append(where)
            if name in ("yaml.load", "yaml.unsafe_load"):
                problems.append(where)
    assert not problems, problems


def test_configs_are_toml_and_a_factory_is_only_a_name(tmp_path, capsys):
    """A config is parsed as TOML, never evaluated; a problem factory must be 'module:function', nothing more."""
    marker = tmp_path / "PWNED"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for text in (
        code,  # Python is not TOML
        json.dumps({"name": "x"}),  # neither is JSON
        f"name = {json.dumps(code)}\n",  # a string that looks like code is just a (bad) name
        to_toml({**RUN_BASE, "problem": {"kind": "python", "dim": 2, "factory": "os:system('touch x')"}}),
        to_toml({**RUN_BASE, "problem": {"kind": "python", "dim": 2, "factory": code}}),
    ):
        config = tmp_path / "c.toml"
        config.write_text(text)
        assert main(["run", str(config), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "x").exists()
    assert "problem.factory: got" in err and "'package.module:function'" in err


def _files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*")}


def test_labels_cannot_write_outside_the_run_directory(tmp_path, capsys):
    """Labels with '../', '/', a leading '/', and unicode become sanitised file names inside the run directory."""
    data = copy.deepcopy(RUN_BASE)
    data["keep_draws"] = True
    labels = ["../../escape", "a/b", "/abs", "..", "é/../x"]
    data["estimators"] = [
        {"label": label, "sampler": "sgld", "step_size_fraction": 0.5, "budgets": [8]} for label in labels
    ]
    parent = tmp_path / "p"
    parent.mkdir()
    config = parent / "c.toml"
    config.write_text(to_toml(data))
    out = parent / "deep" / "out"
    before = _files(tmp_path)
    assert main(["run", str(config), "--out", str(out)]) == 0
    created = _files(tmp_path) - before
    assert created and all(p.resolve().is_relative_to(out.resolve()) or p == out.parent for p in created), created
    names = {p.name for p in (out / "records").glob("*.json")}
    assert len(names) == len(labels) and all("/" not in n for n in names)
    assert not any(p.name.startswith("escape") for p in tmp_path.rglob("*") if p.parent != out / "records")

    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["optimizers"] = [{"label": label, "kind": "sgd", "lr": 0.1} for label in ("../../up", "/root", "a/../b")]
    config.write_text(to_toml(cfg))
    out = parent / "train"
    before = _files(tmp_path)
    assert main(["train", str(config), "--out", str(out)]) == 0
    created = _files(tmp_path) - before
    assert all(p.resolve().is_relative_to(out.resolve()) for p in created), created
    assert len(list((out / "checkpoints").glob("*.pt"))) == 3 and len(list((out / "records").glob("*.json"))) == 3
    cfg["name"] = "../escape"
    config.write_text(to_toml(cfg))
    assert main(["train", str(config)]) == 2  # the default run directory runs/<name>: the name must be plain
    assert "name: got '../escape'" in capsys.readouterr().err


class _Marker:
    """Unpickling this would run a shell command that creates a file: the proof that a loader executed it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


def test_a_malicious_checkpoint_is_refused_without_running(tmp_path):
    """Checkpoints load with weights_only=True: a checkpoint that would run code is treated as torn and redone."""
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "label": "sgd", "payload": _Marker(marker)}, evil)
    assert load_checkpoint(evil) is None and not marker.exists()

    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["optimizers"] = cfg["optimizers"][:1]
    clean = tmp_path / "clean"
    run_training(parse_train_config(copy.deepcopy(cfg)), clean, progress=io.StringIO())
    resumed = tmp_path / "resumed"  # an incomplete run whose checkpoint was replaced by the malicious file
    resumed.mkdir()
    (resumed / "config.json").write_text((clean / "config.json").read_text())
    (resumed / "checkpoints").mkdir()
    (resumed / "checkpoints" / "sgd.pt").write_bytes(evil.read_bytes())
    path, state = run_training(parse_train_config(copy.deepcopy(cfg)), resumed, progress=io.StringIO())
    assert state == "resume" and (path / "COMPLETE").is_file() and not marker.exists()
    a, b = (shared_no_nan((d / "results.json").read_text()) for d in (clean, resumed))
    assert without_timing(a["records"]) == without_timing(b["records"])


def test_a_malicious_cifar_batch_is_refused_from_the_command_line(tmp_path, capsys):
    """`localentropy train` on a CIFAR-10 directory whose first batch would run code: exit 2, nothing runs."""
    marker = tmp_path / "PWNED"
    data = tmp_path / "cifar"
    data.mkdir()
    (data / "data_batch_1").write_bytes(pickle.dumps(_Marker(marker), protocol=2))
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in ("data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (data / name).write_bytes(pickle.dumps(good, protocol=2))
    cfg = copy.deepcopy(TRAIN_BASE)
    cfg["data"] = {"source": "cifar10", "path": str(data)}
    cfg["model"] = {"name": "mlp", "options": {"hidden": [8]}}
    config = tmp_path / "c.toml"
    config.write_text(to_toml(cfg))
    assert main(["train", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "data_batch_1" in err and "refused to load global posix.system" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "out").exists()
