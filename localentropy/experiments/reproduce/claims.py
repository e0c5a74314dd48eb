"""Claims of the findings as records, and what a replication on fresh seeds adds to each: a consistency check
between the two batches and the estimate pooled over the union of their units.

A claim has a stable ``id`` (``<step>/<what>``, the same in every run of the step) and is one of two kinds:

* ``"difference"``: a mean difference with its 95 % t-interval over ``n`` units (``mean``, ``ci95``); what it
  says is the sign when the interval excludes 0, and "no detectable difference" when it does not.
* ``"verdict"``: which candidates are the best (``best``: the one lowest, or the tied set), with each
  candidate's per-unit ``values`` when the step kept them (so that a pooled verdict can be formed) and the
  candidates ranked out as diverged (``divergence``).

:func:`compare_claim` judges the fresh run's claim of the same id against the original:

* **pooled** (the same statistic over the union of the units): for a difference, the paired t-interval over all
  n1 + n2 units, derived exactly from each batch's n, mean and sd (the sd from the stored 95 % half-width:
  sd = ci95 sqrt(n) / t(0.975, n - 1); the union's sum of squares is the two within-batch sums plus
  n_i (mean_i - pooled mean)^2); for a verdict, :func:`localentropy.diagnostics.compare.best_set` over every
  replicate of both batches (needs ``values`` in both).
* **consistency**: for a difference, Welch's t-test of the two batch means (H0: the same mean; unequal
  variances, Welch-Satterthwaite degrees of freedom), consistent when p >= 0.05; for a verdict, whether the two
  best sets are the same. Each claim is tested at 5 % on its own: over many claims about 1 in 20 consistent
  ones reads inconsistent by chance.

``changes`` still says in words how the fresh batch on its own differs (the sign flipped, the interval no longer
or now excludes 0, the intervals do not overlap, the verdict changed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from localentropy.diagnostics.compare import best_set, divergence_text

Claim = dict[str, Any]
ALPHA = 0.05  # the consistency test's level, per claim


def difference_claim(
    claim_id: str, text: str, d: dict[str, Any], scale: float = 100.0, unit: str = "points", digits: int = 2
) -> Claim:
    """A claim from a paired difference (``mean``, ``ci95`` or ``half_width``, ``n``), in units of ``unit``
    after multiplying by ``scale``; ``digits`` after the point when shown."""
    half = d.get("ci95", d.get("half_width"))
    claim = {
        "id": claim_id,
        "kind": "difference",
        "text": text,
        "n": int(d.get("n") or 0),
        "unit": unit,
        "mean": None if d.get("mean") is None else float(d["mean"]) * scale,
        "ci95": None if half is None else float(half) * scale,
    }
    return claim if digits == 2 else {**claim, "digits": digits}


def verdict_claim(
    claim_id: str,
    text: str,
    best: Sequence[str],
    n: int,
    unit: str = "replicates",
    verdict: Mapping[str, Any] | None = None,
    values: Mapping[str, Sequence[float]] | None = None,
) -> Claim:
    """A claim that ``best`` (one name: the lowest; several: tied) are the best candidates over ``n`` units; with
    the statistics module's ``verdict`` (a best set as a dict) it also records the tied members' means (a tie
    with a far-off mean can be seen for what it is) and the candidates ranked out as diverged; ``values`` (each
    candidate's per-unit values, unit r at position r) let a replication pool the verdict."""
    claim: Claim = {"id": claim_id, "kind": "verdict", "text": text, "best": list(best), "n": int(n), "unit": unit}
    means = best_means(verdict) if verdict is not None and len(best) > 1 else {}
    if set(best) <= set(means) and len(best) > 1:
        claim["means"] = {name: means[name] for name in best}
    divergence = {k: c for k, c in ((verdict or {}).get("divergence") or {}).items() if c}
    if divergence:
        claim["divergence"] = divergence
    if values is not None:
        claim["values"] = {name: [float(v) for v in vs] for name, vs in values.items()}
    return claim


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
    return (
        "tied: "
        + ", ".join(claim["best"])
        + (" (means " + ", ".join(f"{shown[name]:.3g}" for name in claim["best"]) + ")" if shown else "")
    )


def _units(claim: Claim) -> str:
    """What a claim's n counts: "seeds" or "replicates" (a verdict's ``unit``, a difference's ``over``)."""
    return claim["unit"] if claim["kind"] == "verdict" else claim.get("over", "seeds")


def claim_text(claim: Claim) -> str:
    """The claim's numbers in a few words: "+1.23 ± 0.72 points (95 % CI over 5 seeds)", "lowest: a over 10
    replicates" (and the candidates ranked out as diverged)."""
    if claim["kind"] == "verdict":
        if not claim["best"]:
            return "no verdict"
        text = _verdict_words(claim, means=True) + f" over {claim['n']} {claim['unit']}"
        if claim.get("divergence"):
            shown = {"divergence": claim["divergence"], "n": claim["n"], "unit": claim["unit"].rstrip("s")}
            text += f"; {divergence_text(shown)}"
        return text
    if claim["mean"] is None:
        return "not measured"
    digits = claim.get("digits", 2)
    unit = f" {claim['unit']}" if claim["unit"] else ""
    if claim["ci95"] is None:
        return f"{claim['mean']:+.{digits}f}{unit} over {claim['n']} {_units(claim)} (no interval)"
    return f"{claim['mean']:+.{digits}f} ± {claim['ci95']:.{digits}f}{unit} (95 % CI over {claim['n']} {_units(claim)})"


def _overlap(a: Claim, b: Claim) -> bool:
    return abs(a["mean"] - b["mean"]) <= a["ci95"] + b["ci95"]


def claim_sd(claim: Claim) -> float | None:
    """The sd over the claim's units, recovered exactly from its 95 % t half-width: ci95 sqrt(n) / t(0.975, n-1)."""
    n, half = claim.get("n") or 0, claim.get("ci95")
    if claim.get("sd") is not None:
        return float(claim["sd"])
    if half is None or n < 2:
        return None
    return float(half) * math.sqrt(n) / float(stats.t.ppf(0.975, n - 1))


def pooled_difference(original: Claim, fresh: Claim) -> dict[str, Any] | None:
    """The paired t-interval over the union of both batches' units, from each batch's n, mean and sd: the mean
    over n1 + n2 units, and the sd from the union's sum of squares about that mean."""
    a, b = (original["n"], original["mean"], claim_sd(original)), (fresh["n"], fresh["mean"], claim_sd(fresh))
    if any(v is None for v in (*a, *b)):
        return None
    (n1, m1, s1), (n2, m2, s2) = a, b
    n = n1 + n2
    mean = (n1 * m1 + n2 * m2) / n
    squares = (n1 - 1) * s1**2 + (n2 - 1) * s2**2 + n1 * (m1 - mean) ** 2 + n2 * (m2 - mean) ** 2
    sd = math.sqrt(max(squares, 0.0) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "ci95": half}


def welch(original: Claim, fresh: Claim) -> dict[str, Any] | None:
    """Welch's t-test of the two batch means (unequal variances, Welch-Satterthwaite df): ``t``, ``df``, two-sided
    ``p``, and ``consistent`` (p >= ALPHA). None without an sd in either batch."""
    s1, s2 = claim_sd(original), claim_sd(fresh)
    if s1 is None or s2 is None:
        return None
    n1, n2 = original["n"], fresh["n"]
    v1, v2 = s1**2 / n1, s2**2 / n2
    diff = fresh["mean"] - original["mean"]
    if v1 + v2 == 0:
        t, df, p = (0.0 if diff == 0 else math.copysign(math.inf, diff)), float(n1 + n2 - 2), float(diff == 0)
    else:
        t = diff / math.sqrt(v1 + v2)
        df = (v1 + v2) ** 2 / (v1**2 / (n1 - 1) + v2**2 / (n2 - 1))
        p = float(2 * stats.t.sf(abs(t), df))
    return {"test": "Welch t of the two batch means", "t": t, "df": df, "p": p, "consistent": p >= ALPHA}


def pooled_verdict(original: Claim, fresh: Claim) -> dict[str, Any] | None:
    """The best set over every unit of both batches (candidates with values in both), or None without values."""
    a, b = original.get("values"), fresh.get("values")
    if not a or not b:
        return None
    names = [name for name in a if name in b]
    verdict = best_set({name: [*a[name], *b[name]] for name in names}, unit=original["unit"].rstrip("s"))
    means = {name: float(np.mean([*a[name], *b[name]])) for name in names}
    return {
        "n": verdict.n,
        "best": verdict.best,
        "means": {k: means[k] for k in verdict.best},
        "divergence": {k: c for k, c in verdict.divergence.items() if c},
        "verdict": verdict.as_dict(),
    }


def compare_claim(original: Claim, fresh: Claim | None) -> dict[str, Any]:
    """``{"consistent": bool | None, "consistency": {...} | None, "pooled": {...} | None, "changes": [...]}`` for
    the fresh claim against the original (None: not comparable, e.g. the fresh run lacks it or either lacks an
    interval)."""
    if fresh is None:
        return {"consistent": None, "consistency": None, "pooled": None, "changes": ["not measured in the fresh run"]}
    if original["kind"] != fresh["kind"]:
        raise ValueError(f"claim {original['id']}: a {original['kind']} against a {fresh['kind']}")
    if original["kind"] == "verdict":
        pooled = pooled_verdict(original, fresh)
        if not original["best"] or not fresh["best"]:
            return {"consistent": None, "consistency": None, "pooled": pooled, "changes": ["no verdict to compare"]}
        # Batches of unequal size differ in power: the smaller one ties what the larger separates. They contradict
        # each other only when their best sets are disjoint (each ranks out everything the other calls best).
        same = set(original["best"]) == set(fresh["best"])
        overlap = bool(set(original["best"]) & set(fresh["best"]))
        changes = [] if same else [f"verdict changed: {_verdict_words(original)} -> {_verdict_words(fresh)}"]
        consistency = {"test": "the two best sets share a candidate", "consistent": overlap}
        return {"consistent": overlap, "consistency": consistency, "pooled": pooled, "changes": changes}
    if None in (original["mean"], original["ci95"], fresh["mean"], fresh["ci95"]):
        changes = ["no interval to compare (fewer than 2 seeds)"]
        return {"consistent": None, "consistency": None, "pooled": None, "changes": changes}
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
    consistency = welch(original, fresh)
    pooled = pooled_difference(original, fresh)
    consistent = None if consistency is None else bool(consistency["consistent"])
    return {"consistent": consistent, "consistency": consistency, "pooled": pooled, "changes": changes}


def compare_claims(original: Iterable[Claim], fresh: Iterable[Claim]) -> list[dict[str, Any]]:
    """Every original claim with its fresh counterpart (by id), the consistency check and the pooled estimate."""
    fresh_by_id = {c["id"]: c for c in fresh}
    return [
        {"id": c["id"], "original": c, "fresh": fresh_by_id.get(c["id"]), **compare_claim(c, fresh_by_id.get(c["id"]))}
        for c in original
    ]


def pooled_claim(entry: dict[str, Any]) -> Claim | None:
    """The entry's pooled estimate as a claim of the original's kind, unit and digits (None when not pooled)."""
    pooled, original = entry.get("pooled"), entry["original"]
    if pooled is None:
        return None
    if original["kind"] == "verdict":
        claim = {**original, "best": pooled["best"], "n": pooled["n"], "means": pooled["means"]}
        claim.pop("values", None)
        return {**claim, "divergence": pooled["divergence"]} if pooled["divergence"] else claim
    return {**original, "n": pooled["n"], "mean": pooled["mean"], "ci95": pooled["ci95"]}


def consistency_text(entry: dict[str, Any]) -> str:
    """ "consistent (Welch t = 0.56, p = 0.59)", "inconsistent (the best sets are disjoint)", or why not comparable."""
    c = entry.get("consistency")
    if entry.get("consistent") is None or c is None:
        return "not comparable: " + "; ".join(entry["changes"])
    word = "consistent" if entry["consistent"] else "inconsistent"
    if "p" in c:
        return f"{word} (Welch t = {c['t']:.2f}, df = {c['df']:.1f}, p = {c['p']:.2g})"
    if not c["consistent"]:
        return f"{word} (the best sets are disjoint)"
    return f"{word} ({'the same best set' if not entry.get('changes') else 'the best sets overlap'})"


def outcome_text(entry: dict[str, Any]) -> str:
    """What to write beside a claim: the batches' consistency, then the pooled estimate."""
    pooled = pooled_claim(entry)
    shown = f"; pooled: {claim_text(pooled)}" if pooled is not None else ""
    return consistency_text(entry) + shown
