"""A comparison run's records and results as typed models: the runner builds them in memory, ``results.json`` is
their dump (:meth:`Results.dump`), and :func:`~localentropy.experiments.comparison.loading.load_run`
(``localentropy report DIR``) validates the file back into
them, so that a damaged or foreign file is refused with one message naming every field that is wrong.

Numbers are finite or null (JSON has no NaN; a non-finite value is written as null). A number field takes an
integer or a float but never ``true`` or a string, and refuses an integer beyond the float range (TOML and JSON
integers are unbounded; pydantic's float check refuses them instead of overflowing later in the report). Counts
(point, budget, replicates...) are integers of any size, never ``10.0`` or ``true``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationError,
    model_serializer,
)

from localentropy.diagnostics.compare import LEVEL
from localentropy.experiments.core.config import got, path_text

SCHEMA = 1  # the format: every reader of schema 1 reads the file
SCHEMA_VERSION = 2  # its revision: 2 added schema_version (a file without the field is revision 1)
SCHEMAS = (SCHEMA,)
MAX_PROBLEMS = 10
METRIC = "squared error per replicate (its mean is the MSE)"  # what the verdicts compare
UNIT = "replicate"
LLC_METRICS = ("nbeta", "localization", "llc_truth", "llc_mean", "llc_mean_mcse", "llc_ess_bulk", "llc_rhat")

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
    # an ``estimand = "llc"`` record's own figures (absent from a gradient record's dump): the measure's nbeta and
    # localization, the exact or theoretical value, the estimates' mean and mean MCSE, the first replicate's ESS and
    # R-hat of its trace of L
    nbeta: Number | None = None
    localization: Number | None = None
    llc_truth: Number | None = None
    llc_mean: Number | None = None
    llc_mean_mcse: Number | None = None
    llc_ess_bulk: Number | None = None
    llc_rhat: Number | None = None

    @model_serializer(mode="wrap")
    def _without_unmeasured_llc(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if not (k in LLC_METRICS and v is None)}


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

    A file written before the verdicts were stored has none here;
    :func:`~localentropy.experiments.comparison.loading.load_run` computes them when it reads one."""

    schema_: int = Field(SCHEMA, alias="schema")
    schema_version: Annotated[Integer, Field(ge=1)] = 1  # files without the field are revision 1
    name: str
    config: dict[str, Any] | None = None  # the resolved config (its model: RunConfig)
    meta: Meta | None = None
    records: Annotated[list[Record], Field(min_length=1)]
    verdicts: list[Verdict] = Field(default_factory=list)
    tuning: dict[str, Any] | None = None  # the search (localentropy.experiments.tuning.record)

    model_config = ConfigDict(populate_by_name=True)

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
