"""The configs that ship with the package (``localentropy/configs/*.toml``, installed as package data).

Every command that takes a config file also takes a shipped config's name where no such file exists
(``localentropy run shootout``), and a sweep's ``base = "..."`` is looked up in the sweep config's own folder
first, then among the shipped configs by name: a copy made with ``localentropy configs copy`` runs anywhere.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from localentropy.experiments.core.config import ConfigError

SUFFIX = ".toml"
KINDS = {"estimators": "run", "optimizers": "train", "base": "sweep"}  # a top-level field that says the kind
SCHEMA_DIR = "schemas"  # beside the shipped configs: <kind>.schema.json (localentropy.experiments.schema)
SCHEMA_LINE = "#:schema "  # the directive TOML language servers (taplo, Even Better TOML) read


@dataclass(frozen=True)
class ShippedConfig:
    name: str
    path: Path
    kind: str  # "run", "train" or "sweep": the command that runs it
    summary: str  # the first comment line


def shipped_dir() -> Path:
    """The folder of the shipped configs (inside the installed package)."""
    return Path(str(files("localentropy").joinpath("configs")))


def _describe(path: Path) -> ShippedConfig:
    text = path.read_text(encoding="utf-8")
    fields = tomllib.loads(text)
    kind = next((k for field, k in KINDS.items() if field in fields), "run")
    return ShippedConfig(path.stem, path, kind, first_sentence(text))


def first_sentence(text: str) -> str:
    """The first sentence of a config's opening comment (its summary), whole even when it spans lines."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith(SCHEMA_LINE):
            words += line.lstrip("#").split()
    summary = " ".join(words)
    end = next((i for i in range(len(summary)) if summary[i] == "." and summary[i + 1 : i + 2] in ("", " ")), None)
    return summary if end is None else summary[: end + 1]


def schema_path(kind: str) -> Path:
    """The installed JSON Schema of a config kind (``run``, ``train`` or ``sweep``)."""
    return shipped_dir() / SCHEMA_DIR / f"{kind}.schema.json"


def shipped_configs() -> list[ShippedConfig]:
    """Every shipped config, by name."""
    return [_describe(p) for p in sorted(shipped_dir().glob(f"*{SUFFIX}"))]


def shipped_path(name: str) -> Path | None:
    """The shipped config called ``name`` (with or without ``.toml``), or None."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if not stem or any(c in stem for c in "/\\\0") or stem.startswith("."):
        return None
    path = shipped_dir() / f"{stem}{SUFFIX}"
    return path if path.is_file() else None


def shipped_config(name: str) -> ShippedConfig:
    """A shipped config by name; an unknown name is bad input naming the shipped ones."""
    path = shipped_path(name)
    if path is None:
        names = ", ".join(c.name for c in shipped_configs())
        raise ConfigError([f"no shipped config named {name!r}; shipped: {names}"])
    return _describe(path)


def resolve_config(text: str | Path) -> Path:
    """A config argument as a file: the file when it exists, else the shipped config of that name, else the path
    as given (reading it then fails with a message naming it)."""
    path = Path(text).expanduser()
    if "\0" in str(text) or path.exists():
        return path
    return shipped_path(str(text)) or path


def find_base(name: str, folder: Path | None) -> Path:
    """A sweep's ``base``: relative to the sweep config's folder first, then a shipped config of that name."""
    path = Path(name).expanduser()
    if path.is_absolute():
        return path
    local = (folder / path) if folder is not None else path
    if local.exists():
        return local
    return shipped_path(name) or local


def _with_installed_schema(config: ShippedConfig) -> str:
    """A shipped config's text, its ``#:schema`` line pointing at the installed schema: a copy is checked anywhere."""
    lines = config.path.read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(
        f"{SCHEMA_LINE}{schema_path(config.kind).as_uri()}\n" if line.startswith(SCHEMA_LINE) else line
        for line in lines
    )


def docs_dir() -> Path:
    """The folder of the documentation installed with the package (the repository's docs/)."""
    return Path(str(files("localentropy").joinpath("docs")))


def shipped_docs() -> dict[str, str]:
    """Every installed document by name (``samplers``, ``findings/recurrent``) with its title."""
    root = docs_dir()
    out = {}
    for path in sorted(root.rglob("*.md")):
        lines = path.read_text(encoding="utf-8").splitlines()
        out[path.relative_to(root).with_suffix("").as_posix()] = next(
            (line.lstrip("# ").strip() for line in lines if line.startswith("#")), ""
        )
    return out


def shipped_doc(name: str) -> Path:
    """An installed document by name; ``samplers``, ``samplers.md`` and ``docs/samplers.md`` name the same one (the
    paths the README, messages and configs give work as they are). An unknown name is bad input naming them all."""
    stem = name.removeprefix("./").removeprefix("docs/").removesuffix(".md")
    if stem in shipped_docs():
        return docs_dir() / f"{stem}.md"
    raise ConfigError([f"no document named {name!r}; installed: {', '.join(shipped_docs())}"])


def copy_config(config: ShippedConfig, path: str | Path | None, *, force: bool = False) -> Path:
    """Write an editable copy of a shipped config to ``path`` (a file, or a folder for ``<name>.toml``; default
    ``./<name>.toml``); an existing file is kept unless ``force``. Returns the file written."""
    from localentropy.experiments.core.files import atomic_write_bytes
    from localentropy.experiments.core.rundir import RunDirectoryError

    target = Path(path) if path else Path(f"{config.name}{SUFFIX}")
    if target.is_dir():
        target = target / f"{config.name}{SUFFIX}"
    if target.exists() and not force:
        raise RunDirectoryError(f"{target} exists; use --force to overwrite it or give another path")
    try:
        atomic_write_bytes(target, _with_installed_schema(config).encode("utf-8"))
    except OSError as exc:
        raise RunDirectoryError(f"{target}: cannot write the copy: {exc.strerror or exc}") from None
    return target
