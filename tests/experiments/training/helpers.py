"""Helpers shared by the training tests."""

from __future__ import annotations

import json
import tomllib


def toml_text(cfg: dict) -> str:
    """A training config dict as TOML text (checked to read back equal)."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in cfg.items() if k != "optimizers"]
    for spec in cfg["optimizers"]:
        lines += ["[[optimizers]]"] + [f"{json.dumps(k)} = {value(v)}" for k, v in spec.items()]
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text) == cfg
    return text
