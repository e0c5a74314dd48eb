"""A comparison run's records and results as typed models: the runner builds them in memory, ``results.json`` is
their dump (:meth:`Results.dump`), and :func:`load_run` (``localentropy report DIR``) validates the file back into
them, so that a damaged or foreign file is refused with one message naming every field that is wrong.

Numbers are finite or null (JSON has no NaN; a non-finite value is written as null). A number field takes an
integer or a float but never ``true`` or a string, and refuses an integer beyond the float range (TOML and JSON
integers are unbounded; pydantic's float check refuses them instead of overflowing later in the report). Counts
(point, budget, replicates...) are integers of any size, never ``10.0`` or ``true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, Strict, ValidationError, model_validator

from localentropy.diagnostics.compare import LEVEL
from localentropy.experiments.core.config import got, path_text, shown

SCHEMA = 1  # the format: every reader of schema 1 reads the file
SCHEMA_VERSION = 2  # its revision: 2 added schema_version (a file without the field is revision 1)
SCHEMAS = (SCHEMA,)
MAX_PROBLEMS = 10
METRIC = "squared error per replicate (its mean is the MSE)"  # what the verdicts compare
UNIT = "replicate"

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]  # an int is taken as a float; true and "1" are not
Integer = Annotated[int, Strict()]  # of any size: never 10.0, true or "3"
Flag = Annotated[bool, Strict()]
Count = Annotated[Integer, Field(ge=0)]


class Model(BaseModel):
    """A part of results.json: unknown fields (a newer writer's) are ignored, every known one is checked."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class RecordKey(Model):
    """What a record measured: one estimator at one point, scope gamma, temperature T and gradient budget."""

    model_config = ConfigDict(frozen=True)

    estimator: Annotated[str, Field(min_length=1)]
    point: Count
    gamma: Annotated[Number, Field(gt=0)]
    temperature: Annotated[Number, Field(gt=0)]
    budget: Annotated[Integer, Field(ge=1)]

    @property
    def group(self) -> tuple[int, float, float]:
        """The (point, gamma, T) of the record: one table of the report."""
        return (self.point, self.gamma, self.temperature)


class Metrics(Model):
    """The record's quality against the truth over its replicates
    (:class:`localentropy.diagnostics.quality.EstimatorQuality`, without its seconds, which are in the timing)."""

    replicates: Count | None = None
    bias: list[Number | None] | None = None
    bias_norm: Number | None = None
    bias_norm_raw: Number | None = None
    bias_norm_mcse: Number | None = None
    variance: Number | None = None
    mse: Number | None = None
    mse_mcse: Number | None = None
    relative_mse: Number | None = None
    cosine: Number | None = None
    truth_norm: Number | None = None
    truth_near_zero: Annotated[bool, Strict()] = False
    squared_errors: list[Number | None] | None = None
    efficiency_ratio: Number | None = None
    grad_evals: Number | None = None


class Quantiles(Model):
    q05: Number | None = None
    q50: Number | None = None
    q95: Number | None = None


class Chains(Model):
    """ArviZ diagnostics of the first replicate's inner chains (:class:`localentropy.diagnostics.ChainSummary`)."""

    n_chains: Count | None = None
    n_draws: Count | None = None
    min_ess_bulk: Number | None = None
    min_ess_tail: Number | None = None
    max_rhat: Number | None = None
    max_mcse_mean: Number | None = None
    ess_bulk_quantiles: Quantiles | None = None
    rhat_quantiles: Quantiles | None = None
    tail_prob: list[Number] | None = None


class EstimatorInfo(Model):
    """What the record's estimator ran: its kind, sampler and settings (the sampler as it describes itself, its
    steps, burn-in and chains, or a smoothing estimator's sigma and order): shown, never computed on."""

    kind: str | None = None
    sampler: str | None = None
    settings: dict[str, JsonValue] = Field(default_factory=dict)


class Timing(Model):
    seconds_per_replicate: Number | None = None
    seconds_total: Number | None = None


class Record(Model):
    """One record: an estimator at one key, its status ("ok", or "diverged" with the reason in ``error``) and, when
    it finished, its metrics, chain diagnostics and kernel Stein discrepancy (KSD)."""

    key: RecordKey
    status: str
    error: str | None = None
    metrics: Metrics | None = None
    chains: Chains | None = None
    ksd: Number | None = None
    estimator: EstimatorInfo | None = None
    timing: Timing | None = None

    @property
    def ok(self) -> bool:
        """Finished with metrics: a row of the report's tables."""
        return self.status == "ok" and self.metrics is not None

    def metric(self, name: str) -> float | None:
        """A metric by name (None when the record has no metrics or no such value)."""
        return getattr(self.metrics, name, None) if self.metrics is not None else None


class Comparison(Model):
    """One stable candidate against the lowest (:class:`localentropy.diagnostics.compare.Comparison`)."""

    name: str
    mean: Number | None = None
    difference: Number | None = None
    half_width: Number | None = None
    p_adjusted: Number | None = None
    distinguishable: Flag = False
    p_rank: Number | None = None
    agree: Flag = True


class Verdict(Model):
    """The verdict at one (point, gamma, T, budget): which estimators have the lowest MSE, paired over replicates
    (:class:`localentropy.diagnostics.compare.BestSet`, with where it was reached and on which metric)."""

    point: Integer
    gamma: Number
    temperature: Number
    budget: Integer
    metric: str = METRIC
    lowest: str | None = None
    best: list[str] = Field(default_factory=list)
    n: Integer = 0
    unit: str = UNIT
    level: Number = LEVEL
    method: str = ""
    detectable: Number | None = None
    comparisons: list[Comparison] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    divergence: dict[str, Integer] = Field(default_factory=dict)
    runaway_threshold: Number | None = None
    governs: str = ""
    diverged: list[str] = Field(default_factory=list)

    @property
    def group(self) -> tuple[int, float, float]:
        """The (point, gamma, T) of the verdict: the report's table it belongs to."""
        return (self.point, self.gamma, self.temperature)


class Meta(Model):
    """Where and how the run ran: its seed, package versions, device, threads, noise stream, platform and commit."""

    model_config = ConfigDict(extra="allow")  # what environment() records besides these is kept

    seed: Integer | None = None
    versions: dict[str, str | None] = Field(default_factory=dict)
    device: str | None = None
    torch_threads: Integer | None = None
    noise_stream: str | None = None
    platform: str | None = None
    git_commit: str | None = None


class Results(Model):
    """A comparison run: its resolved config, meta, every record, and the verdicts computed once from them.

    A file written before the verdicts were stored gets them when it is read (:func:`comparison_verdicts`)."""

    schema_: int = Field(SCHEMA, alias="schema")
    schema_version: Annotated[Integer, Field(ge=1)] = 1  # files without the field are revision 1
    name: str
    config: dict[str, Any] | None = None  # the resolved config (its model: RunConfig)
    meta: Meta | None = None
    records: Annotated[list[Record], Field(min_length=1)]
    verdicts: list[Verdict] = Field(default_factory=list)
    tuning: dict[str, Any] | None = None  # the search (localentropy.experiments.tuning.record)

    model_config = ConfigDict(populate_by_name=True)

    @model_validator(mode="after")
    def _verdicts_once(self) -> Results:
        if "verdicts" not in self.model_fields_set:
            from localentropy.experiments.comparison.verdicts import comparison_verdicts  # which imports this module

            self.verdicts = comparison_verdicts(self.records)
        return self

    def dump(self) -> dict[str, Any]:
        """results.json's content: every field under its name, ``tuning`` only when the run tuned."""
        return self.model_dump(by_alias=True, exclude={"tuning"} if self.tuning is None else None)


def problems_of(error: ValidationError, limit: int = MAX_PROBLEMS) -> list[str]:
    """pydantic's errors as the house's field-named problems: ``records[3].key.budget: got 0 (int), expected ...``."""
    out = []
    for e in error.errors()[:limit]:
        where = path_text(tuple(e["loc"]))
        if e["type"] == "missing":
            out.append(f"{where}: missing (required)")
        else:
            expected = e["msg"].removeprefix("Input should be ").removeprefix("Value should be ")
            out.append(f"{where}: {got(e.get('input'), expected)}")
    return out


def _undefined(name: str) -> None:
    """NaN and Infinity are not JSON (this package writes null); another writer's are read as undefined (null)."""
    return None


def load_run(run_dir: Path | str) -> Results:
    """The :class:`Results` of a run directory's ``results.json`` (or of the file itself); ValueError naming the
    file, and every field that is wrong, when it cannot be read as one."""
    path = Path(run_dir)
    if path.is_dir() or path.name != "results.json":
        path = path / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): not a results.json") from None
    try:
        data = json.loads(text, parse_constant=_undefined)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # an integer of > 4300 digits, or nested too deeply
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValueError(f"{path} is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    if data.get("schema") not in SCHEMAS:
        raise ValueError(f"{path} has schema {shown(data.get('schema'))}; this version reads schema {SCHEMAS}")
    records = data.get("records")
    if not isinstance(records, list) or not records:
        raise ValueError(f"{path} has no 'records' list (or it is empty)")
    if all(isinstance(r, dict) and "label" in r and "rows" in r for r in records):
        raise ValueError(
            f"{path} is the results of a `localentropy train` run, whose report.md that command writes "
            "(run it again: a complete run is skipped, an incomplete one resumes)"
        )
    try:
        return Results.model_validate({"name": path.parent.name, **data})
    except ValidationError as exc:
        problems = "; ".join(problems_of(exc))
        raise ValueError(f"{path} is not a results.json this version can read: {problems}") from None
