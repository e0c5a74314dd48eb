"""Training configs for ``localentropy train``: TOML files validated whole (every field: docs/training.md).

A bad config raises :class:`~localentropy.experiments.comparison.config.ConfigError` listing every problem at once, each
with its field path, the value found and what is expected (the same rules as ``localentropy run``'s configs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localentropy.data.sources import FILE_SOURCES, FIXED_TEST, SOURCES
from localentropy.data.text import TEXT_SOURCES, check_text_options
from localentropy.entropy.presets import OPTIMIZER_PRESETS, PARLE_PRESETS, optimizer_preset
from localentropy.experiments.core.config import ConfigError, FieldReader, key_text, read_toml
from localentropy.experiments.core.files import slug
from localentropy.experiments.core.labels import default_labels, lying_label, optimizer_label_base
from localentropy.experiments.training.models import (
    TEXT_MODELS,
    available_models,
    build_model,
    check_input_shape,
    model_options,
)
from localentropy.experiments.training.optim import (
    ENTROPY_KINDS,
    OPTIMIZER_KINDS,
    OPTIONS,
    SAMPLER_KINDS,
    SCHEDULE_KINDS,
    OptimizerConfig,
    ScheduleConfig,
    check_optimizer,
)
from localentropy.samplers import available_samplers

INPUT_SHAPES = {"digits": (1, 8, 8), "mnist5k": (1, 28, 28), "mnist1d": (40,), "mnist": (1, 28, 28),
                "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32), "text": (), "markov-text": ()}  # fmt: skip
EPOCH_UNITS = ("optimizer", "effective")
MEASURES = ("top_eigenvalue", "trace", "density", "sharpness", "local_entropy", "llc")
# the LLC (localentropy.llc.measure) costs chains x steps minibatch gradients: measured when a config names it
DEFAULT_MEASURES = MEASURES[:-1]
PRESETS = OPTIMIZER_PRESETS
LOCAL_ENTROPY_DEFAULTS = {"gamma": 1.0, "temperature": 1e-8, "step_size": 0.01, "steps": 20, "chains": 2,
                          "burn_in": 5}  # fmt: skip


@dataclass
class DataConfig:
    source: str
    path: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    train_limit: int | None = None
    test_limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # text sources: localentropy.data.text.OPTIONS


@dataclass
class ModelConfig:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FlatnessConfig:
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    examples: int = 1000
    batch_size: int = 1000
    power_iterations: int = 100
    power_tol: float = 1e-3
    hutchinson_samples: int = 30
    lanczos_steps: int = 30
    lanczos_runs: int = 2
    broadening: float = 0.01
    sharpness_epsilon: float = 1e-3
    sharpness_iterations: int = 10
    local_entropy: dict[str, Any] = field(default_factory=lambda: dict(LOCAL_ENTROPY_DEFAULTS))


@dataclass
class TrainConfig:
    name: str
    seed: int
    data: DataConfig
    model: ModelConfig
    optimizers: list[OptimizerConfig]
    batch_size: int = 64
    epochs: int | None = None
    effective_epochs: float | None = None
    eval_batch_size: int = 1000
    threads: int = 1
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    flatness: FlatnessConfig = field(default_factory=FlatnessConfig)
    bptt: int = 32  # text: tokens per truncated-backpropagation segment
    clip_grad_norm: float | None = None  # clip each closure's gradient to this L2 norm (every inner step too)
    epoch_unit: str = "optimizer"  # "effective": an epoch (evaluation, checkpoint, schedule) is one data pass

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def schedule_for(self, spec: OptimizerConfig) -> ScheduleConfig:
        return spec.schedule if spec.schedule is not None else self.schedule


def _data(r: FieldReader, raw: Any) -> DataConfig:
    t = r.table(raw, "data")
    r.unknown(t, {"source", "path", "validation_fraction", "test_fraction", "train_limit", "test_limit", "options"},
              "data")  # fmt: skip
    source = r.choice(r.get(t, "source", "data.source"), "data.source", SOURCES) or "digits"
    config = DataConfig(source=source)
    if source in FILE_SOURCES:
        config.path = r.string(r.get(t, "path", "data.path"), "data.path")
    elif "path" in t:
        r.problem("data.path", t["path"], f"no path: the {source!r} source needs no files")
    fraction = r.number(t.get("validation_fraction", 0.1), "data.validation_fraction", 0.0, 0.9)
    config.validation_fraction = fraction or 0.0
    if source in FIXED_TEST and "test_fraction" in t:
        r.problem("data.test_fraction", t["test_fraction"], f"no test_fraction: {source!r} has its own test set")
    config.test_fraction = r.number(t.get("test_fraction", 0.2), "data.test_fraction", 0.0, 0.9, low_open=True) or 0.2
    for key in ("train_limit", "test_limit"):
        if key in t:
            setattr(config, key, r.integer(t[key], f"data.{key}", 1))
    config.options = dict(r.table(t.get("options", {}), "data.options"))
    if source in TEXT_SOURCES:
        r.problems.extend(check_text_options(source, config.options))
    elif config.options:
        r.problem("data.options", config.options, f"no options: the {source!r} source takes none")
    return config


def _model(r: FieldReader, raw: Any, source: str) -> ModelConfig:
    t = r.table(raw, "model")
    r.unknown(t, {"name", "options"}, "model")
    name = r.choice(r.get(t, "name", "model.name"), "model.name", tuple(available_models()))
    options = dict(r.table(t.get("options", {}), "model.options"))
    config = ModelConfig(name=name or "mlp", options=options)
    if name is None:
        return config
    for key in sorted(set(options) - set(model_options(name))):
        r.problems.append(f"model.options.{key_text(key)}: unknown for model {name!r}; allowed: "
                          f"{', '.join(sorted(model_options(name))) or 'none'}")  # fmt: skip
    shape = INPUT_SHAPES[source]
    need = check_input_shape(name, shape)
    if source in TEXT_SOURCES and name not in TEXT_MODELS:
        r.problem("model.name", name, f"a model of token streams for {source!r} ({', '.join(TEXT_MODELS)})")
    elif need is not None:
        r.problem("model.name", name, f"a model for {source!r} inputs of shape {shape} ({name!r} needs {need})")
    elif set(options) <= set(model_options(name)):
        try:
            build_model(name, shape, 10, **options)
        except (ValueError, TypeError, ArithmeticError) as exc:
            r.problems.append(f"model.options: {exc}")
    return config


def _schedule(r: FieldReader, raw: Any, path: str) -> ScheduleConfig:
    t = r.table(raw, path)
    kind = r.choice(t.get("kind", "constant"), f"{path}.kind", SCHEDULE_KINDS) or "constant"
    allowed = {"kind"} | {"step": {"step_size", "gamma"}, "multistep": {"milestones", "gamma"},
                          "cosine": {"min_lr"}}.get(kind, set())  # fmt: skip
    r.unknown(t, allowed, path)
    config = ScheduleConfig(kind=kind)
    if kind == "step":
        config.step_size = r.integer(r.get(t, "step_size", f"{path}.step_size"), f"{path}.step_size", 1) or 1
    if kind in ("step", "multistep"):
        config.gamma = r.number(t.get("gamma", 0.1), f"{path}.gamma", 0.0, 1.0, low_open=True) or 0.1
    if kind == "multistep":
        raw_ms = r.get(t, "milestones", f"{path}.milestones")
        ms = raw_ms if isinstance(raw_ms, list) and raw_ms else None
        if ms is None:
            r.problem(f"{path}.milestones", raw_ms, "a non-empty list of increasing epoch numbers")
        checked = [r.integer(m, f"{path}.milestones[{i}]", 1) for i, m in enumerate(ms or [])]
        values = [m for m in checked if m is not None]
        if values != sorted(set(values)):
            r.problem(f"{path}.milestones", raw_ms, "strictly increasing epoch numbers")
        config.milestones = values
    if kind == "cosine":
        config.min_lr = r.number(t.get("min_lr", 0.0), f"{path}.min_lr", 0.0) or 0.0
    return config


def _optimizer(r: FieldReader, raw: Any, i: int, labels: dict[str, str]) -> OptimizerConfig | None:
    path = f"optimizers[{i}]"
    t = r.table(raw, path)
    kind = r.choice(r.get(t, "kind", f"{path}.kind"), f"{path}.kind", OPTIMIZER_KINDS)
    sampler_fields = {"sampler", "sampler_options", "preset"}
    r.unknown(t, {"label", "kind", "lr", "options", "schedule"} | (sampler_fields if kind in SAMPLER_KINDS or kind
                                                                   is None else set()), path)  # fmt: skip
    label = ""  # left out: a default built from what runs, given in parse_train_config
    if "label" in t:
        label = r.label(t["label"], f"{path}.label") or f"optimizer{i}"
        _unique_label(r, label, path, labels)
    lr = r.number(r.get(t, "lr", f"{path}.lr"), f"{path}.lr", 0.0, low_open=True)
    options = dict(r.table(t.get("options", {}), f"{path}.options"))
    spec = OptimizerConfig(label=label, kind=kind or "sgd", lr=lr or 0.1, options=options)
    if "schedule" in t:
        spec.schedule = _schedule(r, t["schedule"], f"{path}.schedule")
    if kind is None:
        return None
    for key in sorted(set(options) - OPTIONS[kind]):
        allowed = ", ".join(sorted(OPTIONS[kind]))
        r.problems.append(f"{path}.options.{key_text(key)}: unknown for {kind!r}; allowed: {allowed}")
    if kind in ENTROPY_KINDS:
        spec.preset = r.choice(t["preset"], f"{path}.preset", PRESETS) if "preset" in t else None
        if "preset" in t and "sampler" in t:
            r.problem(f"{path}.sampler", t["sampler"], "no sampler: a preset runs its own (remove one of the two)")
        elif "preset" not in t:
            spec.sampler = r.choice(r.get(t, "sampler", f"{path}.sampler"), f"{path}.sampler",
                                    tuple(available_samplers()))  # fmt: skip
        spec.sampler_options = dict(r.table(t.get("sampler_options", {}), f"{path}.sampler_options"))
        if "gamma" not in options:
            r.problems.append(f"{path}.options.gamma: missing (required: the scope of Entropy-SGD)")
    if kind == "parle":  # a Parle preset fixes the outer loop only: the sampler stays the config's (default SGLD)
        spec.preset = r.choice(t["preset"], f"{path}.preset", tuple(PARLE_PRESETS)) if "preset" in t else None
        if "sampler" in t:
            spec.sampler = r.choice(t["sampler"], f"{path}.sampler", tuple(available_samplers()))
        spec.sampler_options = dict(r.table(t.get("sampler_options", {}), f"{path}.sampler_options"))
        if "gamma" not in options:
            r.problems.append(f"{path}.options.gamma: missing (required: the scope of each replica's inner loop)")
    if spec.label:  # a label may not name an optimizer kind or sampler this optimizer does not run
        used = {spec.kind, spec.sampler} | ({optimizer_preset(spec.preset).sampler} if spec.preset and kind in
                                             ENTROPY_KINDS else set())  # fmt: skip
        wrapped = spec.sampler_options.get("sampler")
        if isinstance(wrapped, dict) and isinstance(wrapped.get("name"), str):
            used.add(wrapped["name"])
        runs = f"{spec.kind!r}" + (f" with sampler {spec.sampler!r}" if spec.sampler else "")
        reason = lying_label(spec.label, used, set(OPTIMIZER_KINDS) | set(available_samplers()), runs)
        if reason is not None:
            r.problems.append(f"{path}.label: {reason}")
    if lr is not None and not _has_problem(r, path):
        problem = check_optimizer(spec, path)  # the real optimizer, built: a config that validates runs
        if problem is not None:
            r.problems.append(problem)
    return spec


def _unique_label(r: FieldReader, label: str, path: str, labels: dict[str, str]) -> None:
    """Labels name checkpoint and record files: two may not share a file name."""
    if slug(label) in labels:
        other = labels[slug(label)]
        r.problem(f"{path}.label", label, "a label not used by another optimizer" if other == label else
                  f"a label whose file name ({slug(label)}) differs from that of {other!r}")  # fmt: skip
    labels[slug(label)] = label


def fill_default_labels(optimizers: list[OptimizerConfig], r: FieldReader) -> None:
    """Optimizers without a label get one built from what they run (and what sets them apart)."""
    unlabelled = [(i, o) for i, o in enumerate(optimizers) if not o.label]
    taken = {o.label for o in optimizers if o.label}
    names = default_labels([optimizer_label_base(o.kind, o.sampler, o.preset) for _, o in unlabelled],
                           [{"lr": o.lr, **o.options, **o.sampler_options} for _, o in unlabelled], taken)  # fmt: skip
    files = {slug(o.label): o.label for o in optimizers if o.label}
    for (i, optimizer), name in zip(unlabelled, names, strict=True):
        optimizer.label = name
        _unique_label(r, name, f"optimizers[{i}].label (default)", files)


def _has_problem(r: FieldReader, path: str) -> bool:
    return any(p.startswith(f"{path}.") or p.startswith(f"{path}:") for p in r.problems)


def _flatness(r: FieldReader, raw: Any) -> FlatnessConfig:
    t = r.table(raw, "flatness")
    defaults = FlatnessConfig()
    r.unknown(t, set(asdict(defaults)), "flatness")
    config = FlatnessConfig()
    measures = t.get("measures", list(DEFAULT_MEASURES))
    if not isinstance(measures, list):
        r.problem("flatness.measures", measures, f"a list of measures from {', '.join(MEASURES)}")
        measures = []
    config.measures = [m for i, m in enumerate(measures) if r.choice(m, f"flatness.measures[{i}]", MEASURES)]
    for key in ("examples", "batch_size", "power_iterations", "lanczos_steps", "lanczos_runs", "sharpness_iterations"):
        setattr(config, key, r.integer(t.get(key, getattr(defaults, key)), f"flatness.{key}", 1) or 1)
    config.hutchinson_samples = r.integer(t.get("hutchinson_samples", 30), "flatness.hutchinson_samples", 2) or 2
    for key in ("power_tol", "broadening", "sharpness_epsilon"):
        value = r.number(t.get(key, getattr(defaults, key)), f"flatness.{key}", 0.0, low_open=True)
        setattr(config, key, value if value is not None else getattr(defaults, key))
    le = r.table(t.get("local_entropy", {}), "flatness.local_entropy")
    r.unknown(le, set(LOCAL_ENTROPY_DEFAULTS), "flatness.local_entropy")
    settings: dict[str, Any] = {}
    for key, default in LOCAL_ENTROPY_DEFAULTS.items():
        where = f"flatness.local_entropy.{key}"
        if isinstance(default, int):
            settings[key] = r.integer(le.get(key, default), where, 0 if key == "burn_in" else 1)
        else:
            settings[key] = r.number(le.get(key, default), where, 0.0, low_open=True)
    if settings["burn_in"] is not None and settings["steps"] is not None and settings["burn_in"] >= settings["steps"]:
        r.problem("flatness.local_entropy.burn_in", settings["burn_in"], "fewer than steps")
    config.local_entropy = settings
    return config


def parse_train_config(data: dict[str, Any], *, name: str = "train", source: str | None = None) -> TrainConfig:
    """Validate a training config given as a dict (as read from TOML); raise ConfigError listing every problem."""
    r = FieldReader()
    if not isinstance(data, dict):
        raise ConfigError([f"the config must be a table of fields, got {type(data).__name__}"], source)
    top = {"name", "seed", "threads", "batch_size", "eval_batch_size", "epochs", "effective_epochs", "data",
           "model", "schedule", "flatness", "optimizers", "bptt", "clip_grad_norm", "epoch_unit"}  # fmt: skip
    r.unknown(data, top, "")
    # the name is the default run directory's name: the rule of `localentropy run` (a sweep names its runs by it)
    run_name = r.name(data.get("name", name), "name" if "name" in data else "name (the config file's stem)", "train")
    seed = r.integer(data.get("seed", 0), "seed", 0, 2**62) or 0
    threads = r.integer(data.get("threads", 1), "threads", 1, 1024) or 1
    batch_size = r.integer(data.get("batch_size", 64), "batch_size", 1) or 1
    eval_batch_size = r.integer(data.get("eval_batch_size", 1000), "eval_batch_size", 1) or 1
    epochs = effective = None
    if ("epochs" in data) == ("effective_epochs" in data):
        r.problems.append(
            "epochs / effective_epochs: give exactly one budget (epochs: optimizer epochs for every optimizer; "
            "effective_epochs: the same number of forward-backward passes for all)"
        )
    elif "epochs" in data:
        epochs = r.integer(data["epochs"], "epochs", 1, 100_000)
    else:
        effective = r.number(data["effective_epochs"], "effective_epochs", 0.0, 100_000, low_open=True)
    data_config = _data(r, r.get(data, "data", "data", {}))
    model = _model(r, r.get(data, "model", "model", {}), data_config.source)
    schedule = _schedule(r, data.get("schedule", {}), "schedule")
    flatness = _flatness(r, data.get("flatness", {}))
    text = data_config.source in TEXT_SOURCES
    if text and flatness.measures:
        if "measures" in (data.get("flatness") or {}):
            r.problem("flatness.measures", flatness.measures, "[] for a text source (the measures read labelled "
                      "examples)")  # fmt: skip
        flatness.measures = []
    bptt = r.integer(data.get("bptt", 32), "bptt", 1, 100_000) or 1
    if "bptt" in data and not text:
        r.problem("bptt", data["bptt"], "no bptt: it is for text sources (truncated backpropagation through time)")
    clip = r.number(data["clip_grad_norm"], "clip_grad_norm", 0.0, low_open=True) if "clip_grad_norm" in data else None
    epoch_unit = r.choice(data.get("epoch_unit", "optimizer"), "epoch_unit", EPOCH_UNITS) or "optimizer"
    raw_optimizers = r.get(data, "optimizers", "optimizers")
    if not isinstance(raw_optimizers, list) or not raw_optimizers:
        r.problem("optimizers", raw_optimizers, "a non-empty array of [[optimizers]] tables")
        raw_optimizers = []
    labels: dict[str, str] = {}
    optimizers = [o for i, raw in enumerate(raw_optimizers) if (o := _optimizer(r, raw, i, labels)) is not None]
    fill_default_labels(optimizers, r)
    if r.problems:
        raise ConfigError(r.problems, source)
    return TrainConfig(
        name=run_name, seed=seed, data=data_config, model=model, optimizers=optimizers, batch_size=batch_size,
        epochs=epochs, effective_epochs=effective, eval_batch_size=eval_batch_size, threads=threads,
        schedule=schedule, flatness=flatness, bptt=bptt, clip_grad_norm=clip, epoch_unit=epoch_unit,
    )  # fmt: skip


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a training config; its name defaults to the file's stem."""
    path = Path(path)
    data = read_toml(path)
    return parse_train_config(data, name=path.stem, source=str(path))
