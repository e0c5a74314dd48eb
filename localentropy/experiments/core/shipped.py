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
    comments = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    fields = tomllib.loads(text)
    kind = next((k for field, k in KINDS.items() if field in fields), "run")
    return ShippedConfig(path.stem, path, kind, comments[0] if comments else "")


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
        atomic_write_bytes(target, config.path.read_bytes())
    except OSError as exc:
        raise RunDirectoryError(f"{target}: cannot write the copy: {exc.strerror or exc}") from None
    return target
