"""The package's layout rules, checked on the source: no import cycle, lower layers never import higher ones,
experiments/ in rooms; modules over about 400 lines are listed as a warning to review, not refused
(docs/architecture.md)."""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "localentropy"
REVIEW_MODULE_LINES = 400  # a module past this is listed for a look at whether it holds two jobs
# Each layer may import itself and the layers listed before it. Rooms of experiments/ are layers of their own.
LAYERS = [
    ("localentropy._checks", "localentropy._threads"),
    ("localentropy.samplers",),
    ("localentropy.entropy",),
    ("localentropy.diagnostics", "localentropy.data"),
    ("localentropy.llc",),
    ("localentropy.experiments.core",),
    ("localentropy.experiments.tuning",),
    (
        "localentropy.experiments.comparison",
        "localentropy.experiments.training",
        "localentropy.experiments.demo",
        "localentropy.experiments.digits",
        "localentropy.experiments.targets",
        "localentropy.experiments.overhead",
        "localentropy.experiments.speed",
        "localentropy.experiments.atlas",
    ),
    ("localentropy.experiments.sweeps",),
    ("localentropy.experiments.reproduce", "localentropy.experiments.schema", "localentropy.experiments.reports"),
    ("localentropy.cli", "localentropy.__main__", "localentropy"),
]
# rooms of one layer that must not import each other
SIBLINGS = [("localentropy.experiments.comparison", "localentropy.experiments.training")]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every localentropy module this file imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "localentropy" or m.startswith("localentropy.")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _layer(module: str) -> int:
    best, index = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index >= 0, f"{module} is in no layer: add it to LAYERS (and docs/architecture.md)"
    return index


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]) if nxt in stack else f"{node}->{nxt}")
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_lower_layers_never_import_higher_ones() -> None:
    problems = []
    for module, imported in _graph().items():
        if module == "localentropy":  # the public top level re-exports from below
            continue
        for other in imported:
            if other != "localentropy" and _layer(other) > _layer(module):
                problems.append(f"{module} imports {other} (a higher layer)")
            for a, b in SIBLINGS:
                if (module.startswith(a) and other.startswith(b)) or (module.startswith(b) and other.startswith(a)):
                    problems.append(f"{module} imports {other} (sibling rooms)")
    assert not problems, problems


def test_long_modules_are_listed_for_review() -> None:
    """Size follows design: a long module is a warning to read it for two jobs, never a failure."""
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    long = sorted((n, name) for name, n in sizes.items() if n > REVIEW_MODULE_LINES)
    if long:
        listed = ", ".join(f"{name} ({n} lines)" for n, name in reversed(long))
        warnings.warn(f"modules over {REVIEW_MODULE_LINES} lines, to review for two jobs: {listed}", stacklevel=1)


def test_experiments_is_in_rooms() -> None:
    experiments = PACKAGE / "experiments"
    rooms = [p for p in experiments.iterdir() if p.is_dir() and (p / "__init__.py").is_file()]
    loose = [p for p in experiments.glob("*.py") if p.name != "__init__.py"]
    assert len(rooms) >= 4 and len(loose) <= 6, (rooms, loose)
