"""The tuning record in reports: one table row per tuned method (comparison and sweep reports alike)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DASH = "—"


def value_text(value: Any) -> str:
    """A configured or chosen value as reports write it: floats to 4 significant digits, booleans in TOML's
    spelling, lists and tables entry by entry."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {value_text(v)}" for k, v in value.items()) + "}"
    return str(value)


def _range_text(dim: dict[str, Any]) -> str:
    if "choices" in dim:
        return "{" + ", ".join(value_text(c) for c in dim["choices"]) + "}"
    return f"[{value_text(dim['low'])}, {value_text(dim['high'])}]" + (" log" if dim.get("log") else "")


def _edge_text(record: dict[str, Any]) -> str:
    parts = [f"{e['name']} ({e['side']}{', its limit' if e.get('hard_limit') else ''})" for e in record["at_edge"]]
    return "at edge: " + ", ".join(parts) if parts else "inside"


def tuning_table(
    methods: dict[str, dict[str, Any]], objective: str, show: Callable[[float], str] = lambda v: f"{v:.4g}"
) -> list[str]:
    """Per tuned method: the trials run (finished / pruned / diverged), gradient evaluations, the chosen values,
    the objective they reached, the space searched (after any extension) and whether a value is at an edge."""
    lines = [
        f"| method | trials (finished / pruned / diverged) | grad evals per trial | grad evals in all | chosen "
        f"| {objective} | space searched | edge |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in methods.items():
        chosen = ", ".join(f"{k} = {value_text(v)}" for k, v in (r["chosen"] or {}).items()) or "configured values"
        space = "; ".join(f"{n} {_range_text(d)}" for n, d in r["space"].items())
        extended = f" (extended {len(r['extensions'])}x)" if r.get("extensions") else ""
        objective_value = DASH if r["objective"] is None else show(r["objective"])
        per_trial = DASH if r.get("grad_evals_per_trial") is None else f"{r['grad_evals_per_trial']:,}"
        lines.append(
            f"| {label} | {r['trials']} ({r['complete']} / {r['pruned']} / {r['diverged']}) | {per_trial} | "
            f"{r['grad_evals']:,} | {chosen} | {objective_value} | {space}{extended} | {_edge_text(r)} |"
        )
    return lines


def tuning_summary(tuning: dict[str, Any], units: str) -> str:
    """One sentence: the search, its equal budget and how the tuning data differ from the reported data."""
    pruner = ", successive halving between units" if tuning.get("pruner") == "successive-halving" else ""
    return (
        f"Every method was tuned alike: {tuning['method']} search{pruner}, {tuning['trials']} trials each, every "
        f"trial the mean objective over {units}; at most {tuning['max_extensions']} extension(s) of a log range "
        "whose best value lay in its outer tenth. The evaluation below runs each method at its chosen values."
    )


def tuned_line(label: str, record: dict[str, Any], objective: str) -> str:
    """The progress line of a finished search: chosen values, the objective (``objective``, already formatted),
    trials, gradient evaluations and any range at an edge."""
    chosen = ", ".join(f"{k} {value_text(v)}" for k, v in (record["chosen"] or {}).items())
    edge = (
        "; at edge: " + ", ".join(f"{e['name']} ({e['side']})" for e in record["at_edge"]) if record["at_edge"] else ""
    )
    reached = "no trial finished" if record["objective"] is None else objective
    return (
        f"tuned {label}: {chosen or 'configured values kept'} ({reached}, {record['trials']} trials, "
        f"{record['grad_evals']:,} gradient evaluations{edge})"
    )
