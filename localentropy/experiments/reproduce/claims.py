"""Claims of the findings as records, and whether a replication on fresh seeds upheld them.

A claim has a stable ``id`` (``<step>/<what>``, the same in every run of the step) and is one of two kinds:

* ``"difference"``: a mean difference with its 95 % t-interval over ``n`` units (``mean``, ``ci95``); what it
  says is the sign when the interval excludes 0, and "no detectable difference" when it does not.
* ``"verdict"``: which candidates are the best (``best``: the one lowest, or the tied set).

:func:`compare_claim` says whether the fresh run's claim of the same id **held**: a difference whose interval
excluded 0 held when the fresh one has the same sign, also excludes 0, and the two intervals overlap; a "no
detectable difference" held when the fresh interval also holds 0 (the intervals then overlap at 0). A verdict held
when the fresh best set is the same. Otherwise ``changes`` says what changed: the sign flipped, the interval no
longer (or now) excludes 0, the intervals do not overlap, the verdict changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Claim = dict[str, Any]


def difference_claim(claim_id: str, text: str, d: dict[str, Any], scale: float = 100.0,
                     unit: str = "points", digits: int = 2) -> Claim:  # fmt: skip
    """A claim from a paired difference (``mean``, ``ci95`` or ``half_width``, ``n``), in units of ``unit``
    after multiplying by ``scale``; ``digits`` after the point when shown."""
    half = d.get("ci95", d.get("half_width"))
    claim = {"id": claim_id, "kind": "difference", "text": text, "n": int(d.get("n") or 0), "unit": unit,
             "mean": None if d.get("mean") is None else float(d["mean"]) * scale,
             "ci95": None if half is None else float(half) * scale}  # fmt: skip
    return claim if digits == 2 else {**claim, "digits": digits}


def verdict_claim(claim_id: str, text: str, best: Sequence[str], n: int, unit: str = "replicates",
                  verdict: Mapping[str, Any] | None = None) -> Claim:  # fmt: skip
    """A claim that ``best`` (one name: the lowest; several: tied) are the best candidates over ``n`` units; with
    the statistics module's ``verdict`` (a best set as a dict) it also records the tied members' means, so that a
    tie with a candidate whose mean is far off (one runaway unit) can be seen for what it is."""
    claim = {"id": claim_id, "kind": "verdict", "text": text, "best": list(best), "n": int(n), "unit": unit}
    means = best_means(verdict) if verdict is not None and len(best) > 1 else {}
    return {**claim, "means": {name: means[name] for name in best}} if set(best) <= set(means) else claim


def best_means(verdict: Mapping[str, Any]) -> dict[str, float]:
    """Each candidate's mean from a best set's dict (the lowest's is any comparison's mean minus its difference)."""
    comparisons = verdict.get("comparisons") or []
    means = {c["name"]: float(c["mean"]) for c in comparisons if c.get("mean") is not None}
    first = next((c for c in comparisons if c.get("mean") is not None and c.get("difference") is not None), None)
    if first is not None and verdict.get("lowest") is not None:
        means[verdict["lowest"]] = float(first["mean"]) - float(first["difference"])
    return means


def excludes_zero(claim: Claim) -> bool:
    return claim["mean"] is not None and claim["ci95"] is not None and abs(claim["mean"]) > claim["ci95"]


def _verdict_words(claim: Claim, means: bool = False) -> str:
    if not claim["best"]:
        return "no verdict"
    if len(claim["best"]) == 1:
        return f"lowest: {claim['best'][0]}"
    shown = claim.get("means") if means else None
    return "tied: " + ", ".join(claim["best"]) + (
        " (means " + ", ".join(f"{shown[name]:.3g}" for name in claim["best"]) + ")" if shown else "")


def claim_text(claim: Claim) -> str:
    """The claim's numbers in a few words: "+1.23 ± 0.72 points over 5 seeds", "lowest: a over 10 replicates"."""
    if claim["kind"] == "verdict":
        return _verdict_words(claim, means=True) + (f" over {claim['n']} {claim['unit']}" if claim["best"] else "")
    if claim["mean"] is None:
        return "not measured"
    ci = f" ± {claim['ci95']:.{claim.get('digits', 2)}f}" if claim["ci95"] is not None else ""
    unit = f" {claim['unit']}" if claim["unit"] else ""
    return f"{claim['mean']:+.{claim.get('digits', 2)}f}{ci}{unit} over {claim['n']} {claim.get('over', 'seeds')}"


def _overlap(a: Claim, b: Claim) -> bool:
    return abs(a["mean"] - b["mean"]) <= a["ci95"] + b["ci95"]


def compare_claim(original: Claim, fresh: Claim | None) -> dict[str, Any]:
    """``{"held": bool | None, "changes": [...]}`` for the fresh claim against the original (None: not
    comparable, e.g. the fresh run lacks it or either lacks an interval)."""
    if fresh is None:
        return {"held": None, "changes": ["not measured in the fresh run"]}
    if original["kind"] != fresh["kind"]:
        raise ValueError(f"claim {original['id']}: a {original['kind']} against a {fresh['kind']}")
    if original["kind"] == "verdict":
        if not original["best"] or not fresh["best"]:
            return {"held": None, "changes": ["no verdict to compare"]}
        if set(original["best"]) == set(fresh["best"]):
            return {"held": True, "changes": []}
        return {"held": False, "changes": [f"verdict changed: {_verdict_words(original)} -> {_verdict_words(fresh)}"]}
    if None in (original["mean"], original["ci95"], fresh["mean"], fresh["ci95"]):
        return {"held": None, "changes": ["no interval to compare (fewer than 2 seeds)"]}
    changes = []
    if excludes_zero(original):
        if excludes_zero(fresh) and (fresh["mean"] > 0) != (original["mean"] > 0):
            changes.append("sign flipped")
        elif not excludes_zero(fresh):
            changes.append("interval no longer excludes 0")
    elif excludes_zero(fresh):
        changes.append(f"interval now excludes 0 ({'positive' if fresh['mean'] > 0 else 'negative'})")
    if not _overlap(original, fresh):
        changes.append("intervals do not overlap")
    return {"held": not changes, "changes": changes}


def compare_claims(original: Iterable[Claim], fresh: Iterable[Claim]) -> list[dict[str, Any]]:
    """Every original claim with its fresh counterpart (by id) and the comparison."""
    fresh_by_id = {c["id"]: c for c in fresh}
    return [{"id": c["id"], "original": c, "fresh": fresh_by_id.get(c["id"]),
             **compare_claim(c, fresh_by_id.get(c["id"]))} for c in original]  # fmt: skip


def outcome_text(entry: dict[str, Any], k: int, units: str = "seeds") -> str:
    """What to write beside a claim: "held on 20 fresh seeds (+0.10 ± 0.20 points)" or what changed."""
    fresh = entry["fresh"]
    shown = f" ({claim_text(fresh)})" if fresh is not None else ""
    if entry["held"] is None:
        return f"not comparable on {k} fresh {units}: {'; '.join(entry['changes'])}{shown}"
    if entry["held"]:
        return f"held on {k} fresh {units}{shown}"
    return f"did not hold on {k} fresh {units}: {'; '.join(entry['changes'])}{shown}"
