"""docs/configuration.md, generated from the config schema: every field of every config kind.

The fields, their types and their defaults come from the config dataclasses (``RunConfig`` and its tables,
``TrainConfig`` and its tables) and from what the parsers fill in for a minimal config; the allowed values from
the constants the parsers check against (registered samplers, models, data sources, kinds). Only the one-line
meanings are written here: a field without one stops the generator, so a new field cannot go undocumented.
``localentropy configs schema`` prints the document; a test fails when docs/configuration.md differs from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

from localentropy.data.text import OPTIONS as TEXT_OPTIONS
from localentropy.entropy.presets import ESTIMATOR_PRESETS, OPTIMIZER_PRESETS, PARLE_PRESETS
from localentropy.experiments.comparison import config as comparison
from localentropy.experiments.core.shipped import shipped_configs
from localentropy.experiments.sweeps.paths import SHORTHANDS
from localentropy.experiments.training import config as training
from localentropy.experiments.training import optim
from localentropy.experiments.training.models import available_models, model_options
from localentropy.experiments.tuning import space as tuning_space
from localentropy.samplers import available_samplers


def _one_of(values: Any) -> str:
    return ", ".join(f"`{v!r}`".replace("'", '"') for v in values)


# (meaning, allowed values) per dataclass field; a TOML key that differs from the field's name is in TOML_KEYS
MEANINGS: dict[str, tuple[str, str]] = {
    # comparison: RunConfig
    "RunConfig.name": ("the run's name; the run directory defaults to runs/<name>", "letters, digits, `_ . -`, "
                       "at most 64 characters"),
    "RunConfig.seed": ("every random number of the run derives from it", "[0, 2^63 - 1]"),
    "RunConfig.replicates": ("R, independent estimates per record", "[2, 100000]"),
    "RunConfig.chains": ("inner chains per local-entropy estimate", "[1, 100000]"),
    "RunConfig.gammas": ("the scope(s) gamma: a number or a list; every estimator runs at each", "each > 0"),
    "RunConfig.temperatures": ("the temperature(s) T of the Gibbs measure: a number or a list", "each > 0"),
    "RunConfig.problem": ("the test problem whose exact answer is known: `[problem]` below", "required"),
    "RunConfig.points": ("where the gradient is estimated: `[points]` below", ""),
    "RunConfig.estimators": ("the estimators compared: `[[estimators]]` below", "a non-empty array"),
    "RunConfig.keep_draws": ("save the first replicate's inner draws and plot their traces", "true, false"),
    "RunConfig.ksd": ("compute the kernel Stein discrepancy of the first replicate's draws", "true, false"),
    "RunConfig.threads": ("torch threads during the run (restored afterwards)", "[1, 1024]"),
    "RunConfig.first_replicate": ("the index of the first replicate (replicate seeds are hashed from the index): "
                                  "`reproduce --fresh-seeds` sets it to draw replicates never used before",
                                  "[0, 2^62]"),
    "RunConfig.tuning": ("search each estimator's hyperparameters alike before the run: `[tuning]` below", ""),
    "ProblemConfig.kind": ("quadratic: closed-form truth; double-well, sharp-wide: truth by quadrature; python: "
                           "your own Problem", _one_of(comparison.PROBLEM_KINDS)),
    "ProblemConfig.dim": ("the dimension (required for a quadratic)",
                          f"quadratic: [1, {comparison.MAX_QUADRATIC_DIM}]; double-well, sharp-wide: 1 or 2"),
    "ProblemConfig.condition": ("quadratic: ratio of the largest to the smallest eigenvalue magnitude (default 10; 1 "
                                "in 1-D)", ">= 1"),
    "ProblemConfig.n_negative": ("quadratic: how many eigenvalues are negative (saddle directions)", "[0, dim]"),
    "ProblemConfig.seed": ("quadratic: the seed of its random rotation", ">= 0"),
    "ProblemConfig.factory": ("python: `package.module:function` returning a Problem of dimension `dim`",
                              "required for python"),
    "ProblemConfig.options": ("keyword arguments of the problem's constructor (not for a quadratic)", "a table"),
    "PointsConfig.kind": ("random: x = scale * N(0, I); origin: x = 0; explicit: the listed `values`",
                          _one_of(comparison.POINT_KINDS)),
    "PointsConfig.count": ("random: how many points", "[1, 1000]"),
    "PointsConfig.scale": ("random: the scale of the points", ">= 0"),
    "PointsConfig.values": ("explicit: the points, each a list of `dim` numbers", "required for explicit"),
    "EstimatorConfig.label": ("the name in records, reports and file names (default: the sampler, else the kind)",
                              "unique, at most 64 characters"),
    "EstimatorConfig.kind": ("local-entropy: a sampler's chains estimate g(x) = gamma (x - <x'>); smoothing: the "
                             "gradient of the Gaussian-smoothed loss", _one_of(comparison.ESTIMATOR_KINDS)),
    "EstimatorConfig.budgets": ("one record per budget: the gradient evaluations of one estimate, over all chains",
                                "each in [1, 10^7]; local-entropy: at least 2 steps per chain after burn-in"),
    "EstimatorConfig.sampler": ("local-entropy: the inner sampler (required unless `preset`)",
                                _one_of(available_samplers())),
    "EstimatorConfig.hyperparameters": ("local-entropy: the sampler's arguments (`localentropy samplers` lists them); "
                                        "not temperature, which comes from `temperature`", "a table"),
    "EstimatorConfig.step_size_fraction": ("local-entropy, quadratic problems: the step size as a fraction of the "
                                           "stability limit 2 / (lambda_max(A) + gamma)", "(0, 1]; or "
                                           "hyperparameters.step_size"),
    "EstimatorConfig.burn_in_fraction": ("local-entropy: the share of each chain's steps discarded", "[0, 0.9]"),
    "EstimatorConfig.averaging": ("local-entropy: uniform mean of the kept iterates, or alpha: mu <- (1 - alpha) mu "
                                  "+ alpha x'", "`\"uniform\"` or (0, 1]"),
    "EstimatorConfig.preset": ("local-entropy: an inner loop as published (SGLD at the temperature its noise scale "
                               "stands for); not with sampler or averaging", _one_of(ESTIMATOR_PRESETS)),
    "EstimatorConfig.noise_scale": ("local-entropy with a preset: the noise scale eps (required then)", "> 0"),
    "EstimatorConfig.sigma": ("smoothing: the smoothing width; matched: sigma = sqrt(T / gamma)",
                              "`\"matched\"` or > 0"),
    "EstimatorConfig.order": ("smoothing: 1 averages gradients at x + sigma xi; 0 uses losses (Stein's identity)",
                              "0, 1"),
    # training: TrainConfig
    "TrainConfig.name": ("the run's name; the run directory defaults to runs/<name>", "letters, digits, `_ . -`, "
                         "at most 64 characters"),
    "TrainConfig.seed": ("data split, initial weights, batch order and noise derive from it", "[0, 2^62]"),
    "TrainConfig.data": ("the dataset: `[data]` below", "required"),
    "TrainConfig.model": ("the network: `[model]` below", "required"),
    "TrainConfig.optimizers": ("the optimizers compared, each trained from the same initial weights: "
                               "`[[optimizers]]` below", "a non-empty array"),
    "TrainConfig.batch_size": ("minibatch size", ">= 1"),
    "TrainConfig.epochs": ("the budget in optimizer epochs, for every optimizer", "[1, 100000]; exactly one of "
                           "epochs and effective_epochs"),
    "TrainConfig.effective_epochs": ("the budget in passes over the data (forward-backward passes / training set "
                                     "size), the same for every optimizer", "(0, 100000]"),
    "TrainConfig.eval_batch_size": ("batch size of the evaluations", ">= 1"),
    "TrainConfig.threads": ("torch threads during the run", "[1, 1024]"),
    "TrainConfig.schedule": ("the learning-rate schedule of every optimizer without its own: `[schedule]` below",
                             ""),
    "TrainConfig.flatness": ("the flatness measured at the final weights: `[flatness]` below", ""),
    "TrainConfig.bptt": ("text models: tokens per truncated-backpropagation segment (state carried, detached)", ">= 1"),
    "TrainConfig.clip_grad_norm": ("clip each closure call's gradient (every inner step too) to this L2 norm", "> 0"),
    "TrainConfig.epoch_unit": ("one epoch (evaluation, checkpoint, schedule): an optimizer epoch, or one data pass",
                               _one_of(training.EPOCH_UNITS)),
    "DataConfig.source": ("the dataset (digits, mnist5k and mnist1d need no files)", _one_of(training.SOURCES)),
    "DataConfig.path": ("a folder with the dataset's files (only for sources read from files)",
                        "required for " + _one_of(training.FILE_SOURCES)),
    "DataConfig.validation_fraction": ("share of the training set held out for validation", "[0, 0.9]"),
    "DataConfig.test_fraction": ("share held out for testing (not for sources with their own test set)",
                                 "(0, 0.9]"),
    "DataConfig.train_limit": ("use at most this many training examples", ">= 1"),
    "DataConfig.test_limit": ("use at most this many test examples", ">= 1"),
    "DataConfig.options": ("text sources' options: " + "; ".join(
        f"{src}: {', '.join(f'{k} = {v!r}' for k, v in o.items())}" for src, o in TEXT_OPTIONS.items()), "a table"),
    "ModelConfig.name": ("the network", _one_of(available_models())),
    "ModelConfig.options": ("the model's options: " + "; ".join(
        f"{m}: {', '.join(f'{k} = {v!r}' for k, v in model_options(m).items()) or 'none'}"
        for m in available_models()), "a table"),
    "OptimizerConfig.label": ("the name in records, reports and file names (default: the kind)", "unique, at most "
                              "64 characters"),
    "OptimizerConfig.kind": ("the optimizer", _one_of(optim.OPTIMIZER_KINDS)),
    "OptimizerConfig.lr": ("the (outer) learning rate", "> 0, required"),
    "OptimizerConfig.options": ("the optimizer's arguments: " + "; ".join(
        f"{k}: {', '.join(sorted(v))}" for k, v in optim.OPTIONS.items()) + " (Entropy-SGD and Parle need gamma)",
        "a table"),
    "OptimizerConfig.sampler": ("entropy-sgd, entropy-adam: the inner sampler (required unless `preset`); parle: "
                                "the replicas' inner sampler (default sgld)", _one_of(available_samplers())),
    "OptimizerConfig.sampler_options": ("entropy-sgd, entropy-adam, parle: the sampler's arguments", "a table"),
    "OptimizerConfig.preset": ("entropy-sgd, entropy-adam: an inner loop as published, not with sampler; parle: "
                               f"the outer loop of the paper or the authors' code ({_one_of(PARLE_PRESETS)})",
                               _one_of(OPTIMIZER_PRESETS)),
    "OptimizerConfig.schedule": ("this optimizer's own learning-rate schedule (a `[schedule]` table)", ""),
    "ScheduleConfig.kind": ("constant; step: x gamma every step_size epochs; multistep: x gamma at each milestone; "
                            "cosine: down to min_lr", _one_of(optim.SCHEDULE_KINDS)),
    "ScheduleConfig.step_size": ("step: epochs between decays", ">= 1"),
    "ScheduleConfig.gamma": ("step, multistep: the decay factor", "> 0"),
    "ScheduleConfig.milestones": ("multistep: the epochs at which lr is multiplied by gamma", "strictly "
                                  "increasing, >= 1"),
    "ScheduleConfig.min_lr": ("cosine: the final learning rate", ">= 0"),
    "FlatnessConfig.measures": ("the flatness measures", _one_of(training.MEASURES)),
    "FlatnessConfig.examples": ("training examples the measures use", ">= 1"),
    "FlatnessConfig.batch_size": ("batch size of the measures' passes", ">= 1"),
    "FlatnessConfig.power_iterations": ("top_eigenvalue: at most this many power iterations", ">= 1"),
    "FlatnessConfig.power_tol": ("top_eigenvalue: relative change that stops the power iteration", "> 0"),
    "FlatnessConfig.hutchinson_samples": ("trace: Rademacher probes of Hutchinson's estimator", ">= 2"),
    "FlatnessConfig.lanczos_steps": ("density: Lanczos steps per run", ">= 1"),
    "FlatnessConfig.lanczos_runs": ("density: independent Lanczos runs", ">= 1"),
    "FlatnessConfig.broadening": ("density: Gaussian broadening of the eigenvalue density", "> 0"),
    "FlatnessConfig.sharpness_epsilon": ("sharpness: the box radius epsilon of epsilon-sharpness", "> 0"),
    "FlatnessConfig.sharpness_iterations": ("sharpness: L-BFGS-B iterations of the maximisation", ">= 1"),
    "FlatnessConfig.local_entropy": ("local_entropy: the sampler settings of the local-entropy gradient norm "
                                     "(gamma, temperature, step_size > 0; steps, chains >= 1; burn_in < steps)",
                                     "keys: " + ", ".join(training.LOCAL_ENTROPY_DEFAULTS)),
}
MEANINGS |= {
    "TuningConfig.method": ("tpe: Optuna's TPE sampler, seeded, trials run one after another; sobol: a scrambled "
                            "Sobol design (scipy.stats.qmc); grid: evenly spaced levels in a seeded order",
                            _one_of(tuning_space.METHODS)),
    "TuningConfig.trials": ("trials per tuned method, the same for every one", "[1, 10000], >= max_extensions + 1"),
    "TuningConfig.seed": ("the seed of the search (the same for every method)", "[0, 2^62]"),
    "TuningConfig.pruner": ("successive-halving: Optuna's SuccessiveHalvingPruner stops trials that trail after "
                            "some of their replicates (comparison) or seeds (sweep)", _one_of(tuning_space.PRUNERS)),
    "TuningConfig.max_extensions": ("rounds after the first: a log range whose best value lies in its outer tenth "
                                    "is widened before the next; still there at the end: reported at edge",
                                    "[0, 10]"),
    "TuningConfig.extension_factor": ("how much an extension widens a range on its side", "> 1"),
    "TuningConfig.budget": ("comparison: the gradient evaluations of each estimate in a trial", ">= 2 steps per "
                            "chain"),
    "TuningConfig.replicates": ("comparison: estimates per trial; the objective is their mean squared error "
                                "against the truth", "[1, 10000]"),
    "TuningConfig.estimators": ("comparison: the labels of the estimators tuned", "local-entropy estimators"),
    "TuningConfig.seeds": ("sweep: training runs per trial (seeds seed_offset, seed_offset + 1, ...); the "
                           "objective is their mean final validation error", "[1, 100]"),
    "TuningConfig.seed_offset": ("the tuning data lie this far from the evaluation's: a sweep's tuning seeds start "
                                 "here; a comparison's replicates draw from config seed + seed_offset",
                                 "[1, 2^62 - 100]; a sweep's apart from its seeds"),
    "TuningConfig.optimizers": ("sweep: the labels of the optimizers tuned", "optimizers the sweep runs"),
    "TuningConfig.space": ("per label or sampler name, hyperparameter -> `{low, high, log}` or `{choices}`; a "
                           "method without one searches its default space (comparison.md)",
                           "the sampler's hyperparameters; `lr` in sweeps"),
}
TOML_KEYS = {"RunConfig.gammas": "gamma", "RunConfig.temperatures": "temperature"}
NOT_DEFAULTS = {  # defaults that depend on another field or on the file
    "RunConfig.name": "the file's stem", "TrainConfig.name": "the file's stem",
    "ProblemConfig.condition": "10 (1 in 1-D)",
    "ProblemConfig.dim": "required for a quadratic, else 1", "EstimatorConfig.label": "the sampler, else the kind",
    "EstimatorConfig.sampler": "required unless preset", "EstimatorConfig.hyperparameters": "{}",
    "OptimizerConfig.label": "the kind", "TrainConfig.epochs": "one of the two is required",
    "TuningConfig.budget": "the middle budget the tuned estimators share",
    "TuningConfig.estimators": "every local-entropy estimator", "TuningConfig.optimizers": "every optimizer run",
    "TuningConfig.space": "the default space", "RunConfig.tuning": "none (no tuning)",
    "TrainConfig.effective_epochs": "one of the two is required",
}  # fmt: skip

SWEEP_FIELDS = [
    ("name", "string", "the file's stem", "letters, digits, `_ . -`, at most 64 characters",
     "the sweep's name; the sweep directory defaults to runs/<name>"),
    ("base", "string or table", "required", "a training config: a path (relative to the sweep config's folder), a "
     "shipped config's name, or an inline table", "the training config every run starts from"),
    ("set", "table", "{}", "dotted paths into the base config", "overrides applied to every run"),
    ("grid", "table of lists", "{}", "dotted paths, `optimizer`, or a shorthand", "values to try; every "
     "combination is a run"),
    ("runs", "array of tables", "[]", "tables of dotted paths", "listed runs (each crossed with the grid)"),
    ("tuning", "table", "none (no tuning)", "`[tuning]` above, the sweep's fields", "search each optimizer's "
     "hyperparameters alike before the runs, which then train at the chosen values (sweeps.md)"),
]

# minimal configs: what the parsers fill in for every field left out is its default
_RUN_MINIMAL = {"problem": {"kind": "quadratic", "dim": 2}, "estimators": [
    {"sampler": "sgld", "budgets": [100], "hyperparameters": {"step_size": 0.01}},
    {"kind": "smoothing", "budgets": [4]}]}  # fmt: skip
_TRAIN_MINIMAL = {"epochs": 1, "data": {"source": "digits"}, "model": {"name": "mlp"},
                  "optimizers": [{"kind": "sgd", "lr": 0.1}]}  # fmt: skip


def _type_text(annotation: str) -> str:
    words = {"int": "integer", "float": "number", "str": "string", "bool": "true/false", "dict": "table",
             "list": "list"}  # fmt: skip
    parts = [p.strip() for p in annotation.split("|") if p.strip() != "None"]
    texts = []
    for part in parts:
        outer = re.match(r"\w+", part)
        name = outer.group(0) if outer else part
        if name == "list" and "Config" in part:
            texts.append("array of tables")
        elif name.endswith("Config"):
            texts.append("table")
        elif name == "list":
            inner = _type_text(part[5:-1]) if "[" in part else "value"
            texts.append(f"list of {inner}s" if not inner.startswith("list") else "list of lists")
        else:
            texts.append(words.get(name, name))
    return " or ".join(dict.fromkeys(texts))


def _default_text(value: Any) -> str:
    if dataclasses.is_dataclass(value) or (isinstance(value, list) and value and dataclasses.is_dataclass(value[0])):
        return "see below"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value).replace("'", '"')


def _table(cls: type, parsed: Any, required: set[str], fields_of: dict[str, Any] | None = None) -> list[str]:
    rows = ["| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        key = f"{cls.__name__}.{f.name}"
        if key not in MEANINGS:
            raise KeyError(f"{key}: no meaning in localentropy/experiments/schema.py MEANINGS (a new field?)")
        meaning, allowed = MEANINGS[key]
        source = (fields_of or {}).get(f.name, parsed)
        default = "required" if f.name in required else NOT_DEFAULTS.get(key) or _default_text(
            getattr(source, f.name))  # fmt: skip
        rows.append(f"| `{TOML_KEYS.get(key, f.name)}` | {_type_text(str(f.type))} | {default} | {allowed} | "
                    f"{meaning} |")  # fmt: skip
    return rows


def configuration_markdown() -> str:
    """The whole of docs/configuration.md."""
    run = comparison.parse_config(_RUN_MINIMAL, name="NAME")
    train = training.parse_train_config(_TRAIN_MINIMAL, name="NAME")
    local, smooth = run.estimators
    tuned = comparison.parse_config({**_RUN_MINIMAL, "tuning": {}}, name="NAME")
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `localentropy configs schema > docs/configuration.md` from the config classes; do not "
        "edit (tests/experiments/test_schema.py fails when this file is stale). -->",
        "",
        "Three kinds of TOML config, each run by one command: a **comparison** config (`localentropy run`), a "
        "**training** config (`localentropy train`) and a **sweep** config (`localentropy sweep`). A config is "
        "checked whole before anything runs; every mistake is reported at once with its field, the value found "
        "and what is allowed (exit status 2). Unknown fields are errors. `nan` and `inf` are refused where a "
        "number is expected, `true` where a number is expected and `10.0` where an integer is. A default of "
        "`none` means the field is unset unless given.",
        "",
        "Every command that takes a config also takes the name of a shipped config; `localentropy configs copy "
        "NAME` writes an editable copy. How a comparison runs and what it reports: [comparison.md](comparison.md); "
        "training: [training.md](training.md); sweeps: [sweeps.md](sweeps.md).",
        "",
        "## Comparison configs (`localentropy run`)",
        "",
        *_table(comparison.RunConfig, run, {"problem", "estimators"}),
        "",
        "### `[problem]`",
        "",
        *_table(comparison.ProblemConfig, run.problem, {"kind"}),
        "",
        "### `[points]`",
        "",
        *_table(comparison.PointsConfig, run.points, set()),
        "",
        "### `[[estimators]]`",
        "",
        *_table(comparison.EstimatorConfig, local, {"budgets"}, {"sigma": smooth, "order": smooth}),
        "",
        "### `[tuning]` (comparison and sweep configs)",
        "",
        *_table(tuning_space.TuningConfig, tuned.tuning, set()),
        "",
        "## Training configs (`localentropy train`)",
        "",
        *_table(training.TrainConfig, train, {"data", "model", "optimizers"}),
        "",
        "### `[data]`",
        "",
        *_table(training.DataConfig, train.data, {"source"}),
        "",
        "### `[model]`",
        "",
        *_table(training.ModelConfig, train.model, {"name"}),
        "",
        "### `[[optimizers]]`",
        "",
        *_table(optim.OptimizerConfig, train.optimizers[0], {"kind", "lr"}),
        "",
        "### `[schedule]` (top level, or an optimizer's own)",
        "",
        *_table(optim.ScheduleConfig, train.schedule, set()),
        "",
        "### `[flatness]`",
        "",
        *_table(training.FlatnessConfig, train.flatness, set()),
        "",
        "## Sweep configs (`localentropy sweep`)",
        "",
        "| field | type | default | allowed | meaning |",
        "|---|---|---|---|---|",
        *(f"| `{name}` | {kind} | {default} | {allowed} | {meaning} |"
          for name, kind, default, allowed, meaning in SWEEP_FIELDS),
        "",
        "A key is a dotted path into the base training config (`optimizers.entropy-sgd.options.gamma`, `*` for "
        "every optimizer), `optimizer` (the labels of the base's optimizers to run) or a shorthand: "
        + ", ".join(f"`{k}` = `optimizers.*.{'.'.join(map(str, v))}`" for k, v in SHORTHANDS.items()) + ".",
        "",
        "## The shipped configs (`localentropy configs`)",
        "",
        "| name | command | what it is |",
        "|---|---|---|",
        *(f"| `{c.name}` | `localentropy {c.kind} {c.name}` | {c.summary} |" for c in shipped_configs()),
        "",
    ]
    return "\n".join(lines)


def commands_markdown(parser: argparse.ArgumentParser, epilog: str) -> str:
    """The command table of docs/configuration.md from the command line's parser (usage and summary of each)."""
    lines = ["", "## Commands", "", "```", parser.format_usage().strip(), "```", "", "| command | what it does |",
             "|---|---|"]  # fmt: skip
    commands = parser._subparsers._group_actions[0]  # type: ignore[union-attr]
    helps = {a.dest: a.help for a in commands._choices_actions}  # type: ignore[attr-defined]
    for name, command in commands.choices.items():  # type: ignore[union-attr]
        actions = command._subparsers._group_actions[0] if command._subparsers else None
        action_helps = {a.dest: a.help for a in actions._choices_actions} if actions else {}  # type: ignore[attr-defined]
        for sub_name, sub in ([(name, command)] if actions is None else actions.choices.items()):  # type: ignore[union-attr]
            usage = " ".join(sub.format_usage().split()[1:])
            lines.append(f"| `{usage}` | {helps.get(name, '') if actions is None else action_helps[sub_name]} |")
    lines += ["", *(" ".join(paragraph.split()) + "\n" for paragraph in epilog.split("\n\n"))]
    return "\n".join(lines)
