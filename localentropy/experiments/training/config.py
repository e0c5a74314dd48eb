"""Training configs for ``localentropy train``: pydantic models of the TOML tables, validated whole.

Every field: ``localentropy docs configuration``; the JSON Schema: ``localentropy configs schema --json``. A bad
config raises :class:`ConfigError` listing every problem at once, each with its field path, the value found and
what is expected (the same rules as ``localentropy run``'s configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator

from localentropy.data.sources import FILE_SOURCES, FIXED_TEST, SOURCES
from localentropy.data.text import OPTIONS as TEXT_OPTIONS
from localentropy.data.text import TEXT_SOURCES, check_text_options
from localentropy.entropy.presets import OPTIMIZER_PRESETS
from localentropy.experiments.core.config import (
    Problem,
    Table,
    array,
    choice,
    fail,
    got,
    integer,
    nonempty_text,
    number,
    patterned_text,
    read_toml,
    run_name,
    table,
    validate_named,
)
from localentropy.experiments.core.files import slug
from localentropy.experiments.core.labels import default_labels, optimizer_label_base
from localentropy.experiments.training.models import (
    TEXT_MODELS,
    available_models,
    build_model,
    check_input_shape,
    model_options,
)
from localentropy.experiments.training.optim import OptimizerConfig, ScheduleConfig
from localentropy.experiments.training.precision import DEVICE_PATTERN, DEVICE_RULE, PRECISIONS

INPUT_SHAPES = {
    "digits": (1, 8, 8),
    "mnist5k": (1, 28, 28),
    "mnist1d": (40,),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "text": (),
    "markov-text": (),
}
EPOCH_UNITS = ("optimizer", "effective")
MEASURES = ("top_eigenvalue", "trace", "density", "sharpness", "local_entropy", "llc")
# the LLC (localentropy.llc.measure) costs chains x steps minibatch gradients: measured when a config names it
DEFAULT_MEASURES = MEASURES[:-1]
PRESETS = OPTIMIZER_PRESETS


def _problem_at(text: str, prefix: str) -> Problem:
    """A problem written as ``prefix.a.b: text`` (by a checker outside the models) as a path inside ``prefix``."""
    path, _, reason = text.partition(": ")
    return tuple(path.removeprefix(prefix).lstrip(".").split(".")) if path != prefix else (), reason


class DataConfig(Table):
    """``[data]``: the dataset."""

    source: choice(SOURCES) = Field(description="The dataset (digits, mnist5k and mnist1d need no files).")
    path: nonempty_text() | None = Field(
        None,
        description="A folder with the dataset's files (required for the sources read from files: "
        + ", ".join(map(repr, FILE_SOURCES))
        + ").",
    )
    validation_fraction: number(0.0, 0.9) = Field(
        0.1, description="The share of the training set held out for validation."
    )
    test_fraction: number(0.0, 0.9, low_open=True) = Field(
        0.2, description="The share held out for testing (not for the sources with their own test set)."
    )
    train_limit: integer(1) | None = Field(None, description="Use at most this many training examples.")
    test_limit: integer(1) | None = Field(None, description="Use at most this many test examples.")
    options: table() = Field(
        default_factory=dict,
        description="The text sources' options: "
        + "; ".join(f"{src}: {', '.join(f'{k} = {v!r}' for k, v in o.items())}" for src, o in TEXT_OPTIONS.items())
        + ".",
    )

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        source = data.get("source")
        problems: list[Problem] = []
        if source in FILE_SOURCES and "path" not in data:
            problems.append((("path",), "missing (required)"))
        elif source not in FILE_SOURCES and "path" in data:
            problems.append((("path",), got(data["path"], f"no path: the {source!r} source needs no files")))
        if source in FIXED_TEST and "test_fraction" in data:
            problems.append(
                (("test_fraction",), got(data["test_fraction"], f"no test_fraction: {source!r} has its own test set"))
            )
        return problems

    def check(self) -> list[Problem]:
        if self.source in TEXT_SOURCES:
            return [_problem_at(p, "data") for p in check_text_options(self.source, self.options)]
        if self.options:
            return [(("options",), got(self.options, f"no options: the {self.source!r} source takes none"))]
        return []


class ModelConfig(Table):
    """``[model]``: the network."""

    name: choice(tuple(available_models())) = Field(description="The network.")
    options: table() = Field(
        default_factory=dict,
        description="The model's options: "
        + "; ".join(
            f"{m}: {', '.join(f'{k} = {v!r}' for k, v in model_options(m).items()) or 'none'}"
            for m in available_models()
        )
        + ".",
    )

    def check(self) -> list[Problem]:
        allowed = model_options(self.name)
        return [
            (("options", key), f"unknown for model {self.name!r}; allowed: {', '.join(sorted(allowed)) or 'none'}")
            for key in sorted(set(self.options) - set(allowed))
        ]


class LocalEntropyMeasure(Table):
    """``[flatness.local_entropy]``: the sampler settings of the local-entropy gradient norm."""

    gamma: number(0.0, low_open=True) = Field(1.0, description="The scope gamma.")
    temperature: number(0.0, low_open=True) = Field(1e-8, description="The temperature.")
    step_size: number(0.0, low_open=True) = Field(0.01, description="The SGLD step size.")
    steps: integer(1) = Field(20, description="SGLD steps per chain.")
    chains: integer(1) = Field(2, description="Chains.")
    burn_in: integer(0) = Field(5, description="Steps discarded per chain (fewer than steps).")

    def check(self) -> list[Problem]:
        return [] if self.burn_in < self.steps else [(("burn_in",), got(self.burn_in, "fewer than steps"))]


class FlatnessConfig(Table):
    """``[flatness]``: the flatness measured at the final weights."""

    measures: Annotated[list[choice(MEASURES)], Field(json_schema_extra={"uniqueItems": True})] = Field(
        default_factory=lambda: list(DEFAULT_MEASURES),
        description="The flatness measures (by default all but llc, which is measured when named).",
    )
    examples: integer(1) = Field(1000, description="The training examples the measures use.")
    batch_size: integer(1) = Field(1000, description="The batch size of the measures' passes.")
    power_iterations: integer(1) = Field(100, description="top_eigenvalue: at most this many power iterations.")
    power_tol: number(0.0, low_open=True) = Field(
        1e-3, description="top_eigenvalue: the relative change that stops the power iteration."
    )
    hutchinson_samples: integer(2) = Field(30, description="trace: Rademacher probes of Hutchinson's estimator.")
    lanczos_steps: integer(1) = Field(30, description="density: Lanczos steps per run.")
    lanczos_runs: integer(1) = Field(2, description="density: independent Lanczos runs.")
    broadening: number(0.0, low_open=True) = Field(
        0.01, description="density: the Gaussian broadening of the eigenvalue density."
    )
    sharpness_epsilon: number(0.0, low_open=True) = Field(
        1e-3, description="sharpness: the box radius epsilon of epsilon-sharpness."
    )
    sharpness_iterations: integer(1) = Field(10, description="sharpness: L-BFGS-B iterations of the maximisation.")
    local_entropy: LocalEntropyMeasure = Field(
        default_factory=dict, description="local_entropy: the sampler settings (`[flatness.local_entropy]`)."
    )


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _same_files(
    labels: list[tuple[int, str]], files: dict[str, str], prefix: tuple[str, ...], note: str = ""
) -> list[Problem]:
    """Labels name checkpoint and record files: two may not share a file name (``files``: the names taken;
    ``prefix``: where the optimizers are, from the table checking them)."""
    problems: list[Problem] = []
    for i, label in labels:
        if slug(label) in files:
            other = files[slug(label)]
            problems.append(
                (
                    (*prefix, i, "label" + note),
                    got(
                        label,
                        "a label not used by another optimizer"
                        if other == label
                        else f"a label whose file name ({slug(label)}) differs from that of {other!r}",
                    ),
                )
            )
        files[slug(label)] = label
    return problems


class TrainConfig(Table):
    """A training config: optimizers trained from the same initial weights on one dataset and network."""

    # the name is the default run directory's name: the rule of `localentropy run` (a sweep names its runs by it)
    name: run_name() = Field(
        "train",
        description="The run's name; the run directory defaults to runs/<name> (default: the config file's stem).",
    )
    seed: integer(0, 2**62) = Field(
        0, description="The data split, initial weights, batch order and noise derive from it."
    )
    data: DataConfig = Field(description="The dataset: `[data]` below.")
    model: ModelConfig = Field(description="The network: `[model]` below.")
    optimizers: Annotated[list[OptimizerConfig], array("a non-empty array of [[optimizers]] tables")] = Field(
        description="The optimizers compared, each trained from the same initial weights: `[[optimizers]]` below."
    )
    batch_size: integer(1) = Field(64, description="The minibatch size.")
    epochs: integer(1, 100_000) | None = Field(
        None,
        description="The budget in optimizer epochs, for every optimizer (exactly one of epochs and effective_epochs).",
    )
    effective_epochs: number(0.0, 100_000, low_open=True) | None = Field(
        None,
        description="The budget in passes over the data (forward-backward passes / training set size), the "
        "same for every optimizer.",
    )
    eval_batch_size: integer(1) = Field(1000, description="The batch size of the evaluations.")
    threads: integer(1, 1024) = Field(1, description="Torch threads during the run.")
    device: patterned_text(DEVICE_PATTERN, DEVICE_RULE) = Field(
        "auto",
        description="Where the data, model, optimizer state and evaluations live: auto (CUDA if present, then MPS, "
        "else the CPU), cpu, cuda, cuda:N or mps; a device this machine lacks is refused when the run starts.",
    )
    precision: choice(PRECISIONS) = Field(
        "32-true",
        description="32-true, bf16-mixed (bfloat16 autocast in training) or 16-mixed (float16 autocast with a "
        "gradient scaler; inner steps with an overflow are skipped). Evaluations run in float32.",
    )
    schedule: ScheduleConfig = Field(
        default_factory=dict,
        description="The learning-rate schedule of every optimizer without its own: `[schedule]` below.",
    )
    flatness: FlatnessConfig = Field(
        default_factory=dict, description="The flatness measured at the final weights: `[flatness]` below."
    )
    bptt: integer(1, 100_000) = Field(
        32, description="Text models: tokens per truncated-backpropagation segment (state carried, detached)."
    )
    clip_grad_norm: number(0.0, low_open=True) | None = Field(
        None, description="Clip each closure call's gradient (every inner step too) to this L2 norm."
    )
    epoch_unit: choice(EPOCH_UNITS) = Field(
        "optimizer",
        description="One epoch (evaluation, checkpoint, schedule): an optimizer epoch, or one data pass (effective).",
    )

    @classmethod
    def precheck(cls, data: dict[str, Any]) -> list[Problem]:
        problems: list[Problem] = []
        if ("epochs" in data) == ("effective_epochs" in data):
            problems.append(
                (
                    (),
                    "epochs / effective_epochs: give exactly one budget (epochs: optimizer epochs for "
                    "every optimizer; effective_epochs: the same number of forward-backward passes for all)",
                )
            )
        if data.get("precision") == "16-mixed" and data.get("clip_grad_norm") is not None:
            problems.append(
                (
                    ("clip_grad_norm",),
                    "not with precision = '16-mixed': the closure would clip gradients still multiplied by the "
                    "scale (use 'bf16-mixed', or no clipping)",
                )
            )
        optimizers = data.get("optimizers") if isinstance(data.get("optimizers"), list) else []
        given = [(i, o["label"]) for i, o in enumerate(optimizers) if isinstance(o, dict) and _is_label(o.get("label"))]
        return problems + _same_files(given, {}, ("optimizers",))

    @field_validator("model")
    @classmethod
    def _model(cls, model: ModelConfig, info: ValidationInfo) -> ModelConfig:
        raw = (info.context or {}).get("raw", {}).get("data")
        source = (
            info.data["data"].source if "data" in info.data else raw.get("source") if isinstance(raw, dict) else None
        )
        if source not in SOURCES or set(model.options) - set(model_options(model.name)):
            return model
        shape = INPUT_SHAPES[source]
        need = check_input_shape(model.name, shape)
        if source in TEXT_SOURCES and model.name not in TEXT_MODELS:
            fail([(("name",), got(model.name, f"a model of token streams for {source!r} ({', '.join(TEXT_MODELS)})"))])
        if need is not None:
            fail(
                [
                    (
                        ("name",),
                        got(
                            model.name, f"a model for {source!r} inputs of shape {shape} ({model.name!r} needs {need})"
                        ),
                    )
                ]
            )
        try:
            build_model(model.name, shape, 10, **model.options)
        except (ValueError, TypeError, ArithmeticError) as exc:
            fail([(("options",), str(exc))])
        return model

    @field_validator("optimizers")
    @classmethod
    def _optimizers(cls, optimizers: list[OptimizerConfig]) -> list[OptimizerConfig]:
        """A missing label is built from what runs (and what sets it apart); the given ones are checked before."""
        files = {slug(o.label): o.label for o in optimizers if o.label}
        unlabelled = [(i, o) for i, o in enumerate(optimizers) if not o.label]
        names = default_labels(
            [optimizer_label_base(o.kind, o.sampler, o.preset) for _, o in unlabelled],
            [{"lr": o.lr, **o.options, **o.sampler_options} for _, o in unlabelled],
            set(files.values()),
        )
        for (_, optimizer), name in zip(unlabelled, names, strict=True):
            optimizer.label = name
        problems = _same_files(
            [(i, name) for (i, _), name in zip(unlabelled, names, strict=True)], files, (), " (default)"
        )
        if problems:
            fail(problems)
        return optimizers

    def check(self) -> list[Problem]:
        text = self.data.source in TEXT_SOURCES
        problems: list[Problem] = []
        if text and self.flatness.measures:
            if "measures" in self.flatness.model_fields_set:
                problems.append(
                    (
                        ("flatness", "measures"),
                        got(self.flatness.measures, "[] for a text source (the measures read labelled examples)"),
                    )
                )
            self.flatness.measures = []
        if "bptt" in self.model_fields_set and not text:
            problems.append(
                (("bptt",), got(self.bptt, "no bptt: it is for text sources (truncated backpropagation through time)"))
            )
        return problems

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def schedule_for(self, spec: OptimizerConfig) -> ScheduleConfig:
        return spec.schedule if spec.schedule is not None else self.schedule


def parse_train_config(data: dict[str, Any], *, name: str = "train", source: str | None = None) -> TrainConfig:
    """Validate a training config given as a dict (as read from TOML); raise ConfigError listing every problem."""
    return validate_named(TrainConfig, data, name, source)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config; its name defaults to the file's stem."""
    path = Path(path)
    return parse_train_config(read_toml(path), name=path.stem, source=str(path))
