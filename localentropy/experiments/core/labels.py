"""Labels that cannot lie: default labels built from what runs, and labels naming something else refused.

A label is what a report prints for an estimator or optimizer. Left out, it defaults to the name of what runs
(the sampler, the optimizer kind, ...) and, when several entries share that name, the settings that tell them
apart. Given, it may not name a registered sampler or optimizer kind that the entry does not use: changing
``sampler = "sgld"`` to ``"sghmc"`` while keeping ``label = "sgld"`` is a config error naming both.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

TOKEN_SPLIT = re.compile(r"[\s(),/=+:;|\[\]{}]+")


def named_kinds(label: str, registered: Collection[str]) -> list[str]:
    """The registered names (samplers, optimizer kinds) that appear as words of ``label``, in order."""
    words = [w for w in TOKEN_SPLIT.split(label.lower()) if w]
    return list(dict.fromkeys(w for w in words if w in registered))


def lying_label(label: str, used: Collection[str], registered: Collection[str], runs: str) -> str | None:
    """Why ``label`` misnames its entry (a registered name it does not use), or None when it is honest.

    ``used`` holds the names the entry does run (a sampler and the sampler it wraps, an optimizer kind, ...);
    ``runs`` says in words what it runs, for the message.
    """
    wrong = [name for name in named_kinds(label, registered) if name not in used]
    if not wrong:
        return None
    names = " and ".join(repr(n) for n in wrong)
    return (
        f"got {label!r}, which names {names} but this entry runs {runs}: rename it, or remove the label "
        "(the default label names what runs)"
    )


def optimizer_label_base(kind: Any, sampler: Any = None, preset: Any = None) -> str:
    """What an optimizer runs: its kind, with the inner sampler or preset of an Entropy-SGD kind beside it."""
    kind = kind if isinstance(kind, str) else "optimizer"
    if isinstance(sampler, str):
        return f"{kind} ({sampler})"
    if isinstance(preset, str):
        return f"{kind} (preset {preset})"
    return kind


def _flat(settings: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        elif value is not None:
            out[f"{prefix}{key}"] = f"{value:g}" if isinstance(value, float) else str(value)
    return out


def default_labels(bases: Sequence[str], settings: Sequence[Mapping[str, Any]], taken: Collection[str]) -> list[str]:
    """Unique labels: each base name, with the settings that differ among entries sharing it, then ' #k'.

    ``bases[i]`` is what entry i runs (e.g. "sgld"); ``settings[i]`` its settings (nested tables flattened to
    ``a.b``); ``taken`` the labels given explicitly, which a default never repeats.
    """
    flat = [_flat(s) for s in settings]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, base in enumerate(bases):
        groups[base].append(i)
    labels = list(bases)
    for base, members in groups.items():
        if len(members) < 2 and base not in taken:
            continue
        keys = sorted({k for i in members for k in flat[i]})
        differing = [k for k in keys if len({flat[i].get(k) for i in members}) > 1]
        for i in members:
            parts = [f"{k}={flat[i][k]}" for k in differing if k in flat[i]]
            labels[i] = f"{base} ({', '.join(parts)})" if parts else base
    seen = set(taken)
    for i, label in enumerate(labels):
        unique, k = label, 2
        while unique in seen:
            unique, k = f"{label} #{k}", k + 1
        labels[i] = unique
        seen.add(unique)
    return labels
