"""Dotted paths into a training config (``optimizers[0].options.gamma``, ``optimizers[*].lr``): parsing, checking
against a base config, and setting a value; what a sweep's ``[grid]`` and ``[[runs]]`` keys name."""

from __future__ import annotations

import copy
import re
from typing import Any

from localentropy.experiments.core.config import shown
from localentropy.experiments.core.labels import optimizer_label_base

OPTIMIZER_AXIS = "optimizer"
# the training config's fields (train_config.parse_train_config); ``name`` is set by the sweep (the run id)
TRAIN_FIELDS = (
    "seed",
    "threads",
    "batch_size",
    "eval_batch_size",
    "epochs",
    "effective_epochs",
    "data",
    "model",
    "schedule",
    "flatness",
    "optimizers",
)
# bare names that set a field of every optimizer that takes it (``optimizers[*].<path>``)
SHORTHANDS: dict[str, tuple[str, ...]] = {
    "lr": ("lr",),
    **{
        k: ("options", k)
        for k in (
            "gamma",
            "scoping",
            "inner_steps",
            "temperature",
            "averaging",
            "outer_scale",
            "coupling",
            "warm_start",
            "sigma",
            "n_samples",
            "rho",
        )
    },
    **{k: ("sampler_options", k) for k in ("step_size", "noise_scale", "friction", "noise")},
}


class _Star:
    """``optimizers[*]``: every optimizer the rest of the path applies to."""

    def __repr__(self) -> str:
        return "*"


STAR = _Star()

Segment = str | int | _Star | tuple[str]  # a key, a list index, the wildcard, an optimizer label ("label",)

KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

_BRACKET = re.compile(r"""\[(?:(-?\d+)|(\*)|"([^"]*)"|'([^']*)')\]""")


def parse_path(text: str) -> tuple[Segment, ...]:
    """``optimizers[0].options.gamma`` -> ("optimizers", 0, "options", "gamma"); raises ValueError."""
    segments: list[Segment] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "[" and segments:
            m = _BRACKET.match(text, pos)
            if m is None:
                raise ValueError(f"a bracket must hold an index, * or a quoted label (at character {pos})")
            index, star, dq, sq = m.groups()
            segments.append(int(index) if index is not None else STAR if star else ((dq if dq is not None else sq),))
            pos = m.end()
            continue
        if segments:
            if text[pos] != ".":
                raise ValueError(f"expected '.' or '[' at character {pos}")
            pos += 1
        m = KEY_PATTERN.match(text, pos)
        if m is None:
            raise ValueError(f"expected a field name at character {pos}")
        segments.append(m.group())
        pos = m.end()
    if not segments:
        raise ValueError("an empty path")
    return tuple(segments)


def format_path(path: tuple[Segment, ...]) -> str:
    out = ""
    for s in path:
        if isinstance(s, str):
            out += ("." if out else "") + s
        elif isinstance(s, tuple):
            out += f'["{s[0]}"]'
        else:
            out += f"[{s}]"
    return out


def optimizer_label(opt: Any, i: int) -> str:
    if not isinstance(opt, dict):
        return f"optimizer{i}"
    if "label" not in opt:  # the training config's default (optimizers left unlabelled share no settings here)
        return optimizer_label_base(opt.get("kind"), opt.get("sampler"), opt.get("preset"))
    label = opt["label"]
    return label if isinstance(label, str) else f"optimizer{i}"


def _applies(opt: dict[str, Any], rest: tuple[Segment, ...]) -> bool:
    """Whether an ``optimizers[*]`` path's remainder is a field that this optimizer takes."""
    from localentropy.entropy.presets import INNER_LOOP_PRESETS
    from localentropy.experiments.training.optim import OPTIONS, SAMPLER_KINDS
    from localentropy.samplers import available_samplers, sampler_hyperparameters

    kind = opt.get("kind")
    head = rest[0] if rest else None
    if head == "options" and len(rest) >= 2:
        return kind in OPTIONS and rest[1] in OPTIONS[kind]
    if head in ("sampler_options", "sampler", "preset"):
        if kind not in SAMPLER_KINDS:
            return False
        if head != "sampler_options" or len(rest) < 2:
            return True
        if "preset" in opt and kind != "parle":  # a Parle preset leaves the sampler (default SGLD) to the config
            preset = INNER_LOOP_PRESETS.get(opt["preset"]) if isinstance(opt["preset"], str) else None
            return rest[1] in (preset.sampler_options if preset is not None else ("step_size", "noise_scale"))
        sampler = opt.get("sampler", "sgld" if kind == "parle" else None)
        return sampler in available_samplers() and rest[1] in sampler_hyperparameters(sampler)
    return True


def _optimizer_indices(optimizers: list[Any], segment: Segment, rest: tuple[Segment, ...]) -> list[int]:
    if isinstance(segment, _Star):
        return [i for i, o in enumerate(optimizers) if isinstance(o, dict) and _applies(o, rest)]
    if isinstance(segment, tuple):
        return [i for i, o in enumerate(optimizers) if optimizer_label(o, i) == segment[0]]
    assert isinstance(segment, int)
    return [segment % len(optimizers)] if -len(optimizers) <= segment < len(optimizers) else []


def check_path(base: dict[str, Any], path: tuple[Segment, ...]) -> str | None:
    """Why ``path`` cannot be set in the base config (None: it can)."""
    if path[0] not in TRAIN_FIELDS:
        return (
            f"unknown field {path[0]!r}; sweepable: {', '.join(TRAIN_FIELDS)}, {OPTIMIZER_AXIS!r} and the "
            f"shorthands {', '.join(SHORTHANDS)}"
        )
    if path[0] == "optimizers":
        optimizers = base.get("optimizers")
        if len(path) < 3 or isinstance(path[1], str):
            return "give an optimizer and a field: optimizers[<index>|*|\"<label>\"].<field> (or the 'optimizer' axis)"
        if not isinstance(optimizers, list) or not optimizers:
            return "the base config has no [[optimizers]]"
        rest = path[2:]
        if not _optimizer_indices(optimizers, path[1], rest):
            labels = ", ".join(repr(optimizer_label(o, i)) for i, o in enumerate(optimizers))
            if isinstance(path[1], int):
                return f"no optimizer {path[1]}: the base config has {len(optimizers)} ({labels})"
            if isinstance(path[1], tuple):
                return f"no optimizer labelled {path[1][0]!r}; labels: {labels}"
            return f"no optimizer of the base config takes {format_path(rest)} ({labels})"
        for i in _optimizer_indices(optimizers, path[1], rest):
            reason = _check_walk(optimizers[i], rest, path)
            if reason is not None:
                return reason
        return None
    return _check_walk(base, path, path)


def _check_walk(node: Any, rest: tuple[Segment, ...], path: tuple[Segment, ...]) -> str | None:
    """A path may create missing tables, but not go through a value that is not a table (or a list, by index)."""
    offset = len(path) - len(rest)
    for i, segment in enumerate(rest):
        here = format_path(path[: offset + i + 1])
        if isinstance(segment, (tuple, _Star)):
            return "a label or * is only for optimizers[...]"
        if isinstance(segment, int):
            if not isinstance(node, list) or not -len(node) <= segment < len(node):
                return f"{here}: no such list element in the base config"
            node = node[segment]
            continue
        if not isinstance(node, dict):
            return f"{format_path(path[: offset + i])} is {shown(node)}, not a table: nothing below it can be set"
        if segment not in node:  # missing tables are created; a list index into a missing list cannot be
            if all(isinstance(s, str) for s in rest[i + 1 :]):
                return None
            return f"{here}: not in the base config, so it has no list elements"
        node = node[segment]
    return None


def _set(node: Any, path: tuple[Segment, ...], value: Any) -> None:
    for segment in path[:-1]:
        node = node[segment] if isinstance(segment, int) else node.setdefault(segment, {})
    node[path[-1]] = copy.deepcopy(value)


def apply_override(config: dict[str, Any], path: tuple[Segment, ...], value: Any) -> list[str] | None:
    """Set ``path`` in ``config`` (in place); the labels of the optimizers it set, or None for a global field."""
    if path[0] != "optimizers":
        _set(config, path, value)
        return None
    optimizers = config["optimizers"]
    rest = path[2:]
    touched = []
    for i in _optimizer_indices(optimizers, path[1], rest):
        _set(optimizers[i], rest, value)
        touched.append(optimizer_label(optimizers[i], i))
    return touched
