"""``localentropy train``: train one model with several optimizers on the same data, init and minibatch order.

Per optimizer and epoch it logs train / validation / test loss and error, the optimizer steps, the
forward-backward passes (``grad_evals``, inner steps included), ``effective_epochs`` (examples
forward-backwarded / training-set size) and the wall-clock training ``seconds``; then it measures flatness at
the final weights. A checkpoint after every epoch (model, optimizer, RNG state, minibatch position) lets an
interrupted run resume bit-identically on CPU. Output layout and fields: docs/training.md.
"""

from __future__ import annotations

import io
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor, nn

from localentropy.data import ArrayData, DataSplits, load_data
from localentropy.data.text import TokenStream
from localentropy.entropy.optim import DivergenceError
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.files import slug
from localentropy.experiments.core.progress import Progress
from localentropy.experiments.core.rundir import (
    RunDirectory,
    atomic_write_bytes,
    atomic_write_json,
    environment,
    finite_or_none,
    stable_seed,
)
from localentropy.experiments.training.config import TrainConfig, load_train_config
from localentropy.experiments.training.models import build_model, count_parameters
from localentropy.experiments.training.optim import (
    OptimizerConfig,
    ScheduleConfig,
    build_optimizer,
    learning_rate,
    passes_per_step,
    set_learning_rate,
    spec_passes,
)
from localentropy.experiments.training.text import TextStream, clip_gradients, evaluate_text, text_columns, text_final

SCHEMA = 1
CHECKPOINT_FORMAT = 1
AfterEpoch = Callable[[str, int], None]


class BatchStream:
    """The training minibatches in a seeded order, resumable from (data epoch, position), and counted.

    ``closure()`` zeroes the gradients, runs the model forward and backward on the next minibatch and returns
    the detached loss; ``closure(reuse=True)`` does so on the previous minibatch again (SAM's second pass).
    Pass ``e`` over the data uses the permutation seeded by (seed, e): the same for every optimizer. ``calls``
    counts forward-backward passes, ``examples`` the examples they read.
    """

    def __init__(self, model: nn.Module, data: ArrayData, batch_size: int, seed: int,
                 clip_grad_norm: float | None = None) -> None:  # fmt: skip
        self.model, self.data, self.batch_size, self.seed = model, data, batch_size, seed
        self.clip_grad_norm = clip_grad_norm
        self.data_epoch = 0
        self.position = 0
        self.calls = 0
        self.examples = 0
        self._order: Tensor | None = None
        self._batch: tuple[Tensor, Tensor] | None = None

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def _permutation(self) -> Tensor:
        if self._order is None:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, "minibatch order", self.data_epoch))
            self._order = torch.randperm(len(self.data), generator=generator)
        return self._order

    def _next(self) -> tuple[Tensor, Tensor]:
        if self.position >= self.batches_per_pass:
            self.data_epoch, self.position, self._order = self.data_epoch + 1, 0, None
        index = self._permutation()[self.position * self.batch_size : (self.position + 1) * self.batch_size]
        self.position += 1
        return self.data.x[index], self.data.y[index]

    def __call__(self, reuse: bool = False) -> Tensor:
        if not reuse or self._batch is None:
            self._batch = self._next()
        inputs, targets = self._batch
        self.model.zero_grad(set_to_none=False)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(self.model(inputs), targets)
            loss.backward()
        clip_gradients(self.model, self.clip_grad_norm)
        self.calls += 1
        self.examples += int(targets.shape[0])
        return loss.detach()

    def state_dict(self) -> dict[str, int]:
        return {"data_epoch": self.data_epoch, "position": self.position, "calls": self.calls,
                "examples": self.examples}  # fmt: skip

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.data_epoch, self.position = int(state["data_epoch"]), int(state["position"])
        self.calls, self.examples = int(state["calls"]), int(state["examples"])
        self._order, self._batch = None, None


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayData | None, batch_size: int) -> tuple[float | None, float | None]:
    """(mean cross-entropy, error rate) in eval mode; (None, None) without data or when not finite."""
    if data is None or len(data) == 0:
        return None, None
    was_training = model.training
    model.eval()
    total_loss, wrong = 0.0, 0
    try:
        for start in range(0, len(data), batch_size):
            x, y = data.x[start : start + batch_size], data.y[start : start + batch_size]
            logits = model(x)
            total_loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            wrong += int((logits.argmax(1) != y).sum())
    finally:
        model.train(was_training)
    loss = total_loss / len(data)
    return (loss if math.isfinite(loss) else None), wrong / len(data)


def plan_steps(
    config: TrainConfig, steps_per_epoch: int, passes: int, epoch_steps: int | None = None
) -> tuple[int, int]:
    """(optimizer steps, epochs) of one optimizer: the epochs budget, or as many steps as the effective epochs buy.

    ``steps_per_epoch`` optimizer steps read the data once per pass of the closure; an epoch (evaluation,
    checkpoint, schedule) is ``epoch_steps`` optimizer steps (default ``steps_per_epoch``).
    """
    epoch_steps = epoch_steps or steps_per_epoch
    if config.epochs is not None:
        return config.epochs * epoch_steps, config.epochs
    assert config.effective_epochs is not None
    total = max(1, math.floor(config.effective_epochs * steps_per_epoch / passes + 1e-9))
    return total, math.ceil(total / epoch_steps)


def _weights_only_bytes(obj: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """A checkpoint, loaded with ``weights_only=True``; None if missing or torn (the epoch is redone)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True)
    except Exception:  # a torn or foreign file: start this optimizer over
        return None
    return state if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT else None


class OptimizerRun:
    """One optimizer's training, resumable from its last epoch checkpoint."""

    def __init__(self, config: TrainConfig, spec: OptimizerConfig, splits: DataSplits, run_dir: RunDirectory,
                 progress: TextIO, after_epoch: AfterEpoch | None = None) -> None:  # fmt: skip
        self.config, self.spec, self.splits, self.progress = config, spec, splits, progress
        self.after_epoch = after_epoch
        self.checkpoint = run_dir.path / "checkpoints" / f"{slug(spec.label)}.pt"
        torch.manual_seed(stable_seed(config.seed, "model init"))  # the same initial weights for every optimizer
        self.model = build_model(config.model.name, splits.input_shape, splits.num_classes, **config.model.options)
        torch.manual_seed(stable_seed(config.seed, "training", spec.label))  # dropout and optimizer noise
        data_seed, clip = stable_seed(config.seed, "data"), config.clip_grad_norm
        self.text = isinstance(splits.train, TokenStream)
        self.stream: BatchStream | TextStream = (
            TextStream(self.model, splits.train, config.batch_size, config.bptt, data_seed, clip)  # type: ignore[arg-type]
            if self.text else BatchStream(self.model, splits.train, config.batch_size, data_seed, clip)  # type: ignore[arg-type]
        )  # fmt: skip
        spe = self.stream.batches_per_pass
        self.passes = spec_passes(spec)
        if config.epoch_unit == "effective":  # an epoch reads the data once, whatever the passes per step
            self.steps_per_epoch = max(1, math.ceil(spe / self.passes))
        else:
            self.steps_per_epoch = spe
        self.total_steps, self.epochs = plan_steps(config, spe, self.passes, self.steps_per_epoch)
        self.optimizer = build_optimizer(spec, self.model.parameters(), total_steps=self.total_steps)
        assert passes_per_step(self.optimizer) == self.passes
        self.steps, self.epoch, self.seconds = 0, 0, 0.0
        self.rows: list[dict[str, Any]] = []

    def _evaluate(self, data: ArrayData | TokenStream | None) -> tuple[float | None, float | None]:
        if self.text:
            return evaluate_text(self.model, data)  # type: ignore[arg-type]
        return evaluate(self.model, data, self.config.eval_batch_size)  # type: ignore[arg-type]

    def row(self, lr: float | None) -> dict[str, Any]:
        train_loss, train_error = self._evaluate(self.splits.train)
        val_loss, val_error = self._evaluate(self.splits.validation)
        test_loss, test_error = self._evaluate(self.splits.test)
        row = {
            "epoch": self.epoch, "lr": lr, "steps": self.steps, "grad_evals": self.stream.calls,
            "examples": self.stream.examples, "effective_epochs": self.stream.examples / len(self.splits.train),
            "seconds": self.seconds, "train_loss": train_loss, "train_error": train_error, "val_loss": val_loss,
            "val_error": val_error, "test_loss": test_loss, "test_error": test_error,
        }  # fmt: skip
        return {**row, **text_columns(row)} if self.text else row

    def save(self) -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "label": self.spec.label, "epoch": self.epoch, "steps": self.steps,
            "seconds": self.seconds, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(), "stream": self.stream.state_dict(), "rows": self.rows,
        }  # fmt: skip
        atomic_write_bytes(self.checkpoint, _weights_only_bytes(state))

    def restore(self) -> bool:
        state = load_checkpoint(self.checkpoint)
        if state is None or state.get("label") != self.spec.label:
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.epoch, self.steps, self.seconds = int(state["epoch"]), int(state["steps"]), float(state["seconds"])
        self.rows = list(state["rows"])
        torch.set_rng_state(state["torch_rng"])  # last: building the optimizer drew from the global generator
        return True

    def _step(self) -> Tensor:
        if self.spec.kind in ("sgd", "adam"):
            loss = self.stream()
            if not bool(torch.isfinite(loss)):
                raise DivergenceError(f"a non-finite training loss ({float(loss)})")
            self.optimizer.step()
            return loss
        return self.optimizer.step(self.stream)

    def train(self) -> dict[str, Any]:
        """Train (or finish training) and return the record without flatness."""
        resumed = self.restore()
        if not resumed:
            self.rows = [self.row(None)]
            self.save()
        schedule = self.config.schedule_for(self.spec)
        with Progress(self.progress, self.epochs, desc=self.spec.label, unit="epoch", done=self.epoch) as bar:
            status, message = self._epochs(schedule, bar)
        return self.record(status, message)

    def _epochs(self, schedule: ScheduleConfig, bar: Progress) -> tuple[str, str | None]:
        status, message = "ok", None
        while self.epoch < self.epochs:
            lr = learning_rate(schedule, self.spec.lr, self.epoch, self.epochs)
            set_learning_rate(self.optimizer, lr)
            self.model.train()
            end = min((self.epoch + 1) * self.steps_per_epoch, self.total_steps)
            start = time.perf_counter()
            try:
                while self.steps < end:
                    self._step()
                    self.steps += 1
            except DivergenceError as exc:
                status = "diverged"
                message = (f"{self.spec.label}: diverged at optimizer step {self.steps + 1} (epoch {self.epoch + 1}, "
                           f"lr {lr:g}{self._sampler_text()}): {exc}{self._cause(str(exc), lr)}")  # fmt: skip
                break
            finally:
                self.seconds += time.perf_counter() - start
            self.epoch += 1
            row = self.row(lr)
            losses = [row["train_loss"], row["test_loss"]] + ([row["val_loss"]] if self.splits.validation else [])
            if any(loss is None for loss in losses) or not _finite_model(self.model):
                status = "diverged"
                first = (self.epoch - 1) * self.steps_per_epoch + 1
                message = (f"{self.spec.label}: diverged in epoch {self.epoch} (optimizer steps {first} to "
                           f"{self.steps}, lr {lr:g}{self._sampler_text()}): the weights or the evaluation loss became "
                           f"non-finite{self._cause('', lr)}")  # fmt: skip
                break
            self.rows.append(row)
            self.save()
            bar.advance()
            bar.line(f"  {self.spec.label}: epoch {self.epoch}/{self.epochs} test error {row['test_error']:.4f} "
                     f"effective epochs {row['effective_epochs']:.2f} ({self.seconds:.1f}s)")  # fmt: skip
            if self.after_epoch is not None:
                self.after_epoch(self.spec.label, self.epoch)
        return status, message

    def _sampler_text(self) -> str:
        if self.spec.kind not in ("entropy-sgd", "entropy-adam"):
            return ""
        return f", sampler {self.spec.sampler}" if self.spec.preset is None else f", the {self.spec.preset!r} preset"

    def _cause(self, error: str, lr: float) -> str:
        """The likely cause, unless the optimizer's own message already gives advice."""
        if "try " in error.lower():
            return ""
        advice = {
            "sgd": "lr {lr:g} is too large for the curvature of the loss (gradient descent needs lr < 2 / the largest "
            "Hessian eigenvalue): try a smaller lr",
            "adam": "lr {lr:g} is too large for this model and data: try a smaller lr",
            "sam": "lr {lr:g} (or rho) is too large for the curvature of the loss: try a smaller lr or rho",
            "lpf-sgd": "lr {lr:g} or sigma is too large: try a smaller lr or sigma",
        }.get(
            self.spec.kind,
            "the sampler's step size or lr {lr:g} is too large for the curvature of the loss (the "
            "inner loop needs step_size < 2 / (curvature + gamma)): try a smaller step size or lr",
        )
        return ". Likely cause: " + advice.format(lr=lr)

    def record(self, status: str, message: str | None) -> dict[str, Any]:
        last = self.rows[-1]
        counter = getattr(self.optimizer, "grad_evals", None)
        return {
            "label": self.spec.label, "kind": self.spec.kind, "status": status, "message": message,
            "epochs_planned": self.epochs, "epochs_run": self.epoch, "steps": self.steps,
            "steps_planned": self.total_steps, "steps_per_epoch": self.steps_per_epoch,
            "passes_per_step": self.passes, "optimizer_grad_evals": counter, "rows": self.rows,
            "final": None if status != "ok" else {k: last[k] for k in (
                "test_error", "test_loss", "val_error", "val_loss", "train_error", "train_loss", "effective_epochs",
                "seconds", "grad_evals", "steps")} | (text_final(last, self.splits.info) if self.text else {}),
            "flatness": None,
        }  # fmt: skip


def _finite_model(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if torch.is_floating_point(t))


def load_splits(config: TrainConfig, source: str | None = None) -> DataSplits:
    d = config.data
    try:
        return load_data(d.source, path=d.path, seed=config.seed, validation_fraction=d.validation_fraction,
                         test_fraction=d.test_fraction, train_limit=d.train_limit, test_limit=d.test_limit,
                         options=d.options)  # fmt: skip
    except ValueError as exc:  # a missing directory, a bad file: the user's input
        raise ConfigError([f"data: {exc}"], source) from None


def default_out(config: TrainConfig) -> Path:
    return Path("runs") / config.name


def run_training(
    config: TrainConfig | str | Path, out: str | Path | None = None, *, force: bool = False,
    progress: TextIO | None = None, after_epoch: AfterEpoch | None = None,
) -> tuple[Path, str]:  # fmt: skip
    """Run a training config into a run directory; returns (directory, "fresh" | "resume" | "skip")."""
    from localentropy.experiments.training.flatness import measure_flatness
    from localentropy.experiments.training.report import write_train_outputs

    source = None if isinstance(config, TrainConfig) else str(config)
    config = config if isinstance(config, TrainConfig) else load_train_config(config)
    out_dir = RunDirectory(out if out is not None else default_out(config))
    out_dir.check_free()
    resolved = config.as_dict()
    # the data first: a bad data path is refused before the run directory is created (not when it would be skipped)
    splits = None if out_dir.complete and not force else load_splits(config, source)
    state = out_dir.prepare(resolved, force=force)
    threads = torch.get_num_threads()
    try:
        if state == "skip":
            return out_dir.path, state
        splits = splits if splits is not None else load_splits(config, source)
        progress = progress if progress is not None else sys.stderr
        torch.set_num_threads(config.threads)
        records = []
        for spec in config.optimizers:
            record = out_dir.load_record(slug(spec.label))
            if record is not None and (
                record.get("label") != spec.label or record.get("status") not in ("ok", "diverged")
            ):
                record = None  # not this optimizer's finished record (a foreign or hand-edited file): redo it
            if record is None:
                print(f"{spec.label} ({spec.kind})", file=progress, flush=True)
                run = OptimizerRun(config, spec, splits, out_dir, progress, after_epoch)
                record = run.train()
                if record["status"] == "ok" and not run.text:  # the flatness measures read labelled examples
                    record["flatness"] = measure_flatness(run.model, splits, config)
                record = finite_or_none(record)
                out_dir.save_record(slug(spec.label), record)
            records.append(record)
        torch.manual_seed(stable_seed(config.seed, "model init"))
        model = build_model(config.model.name, splits.input_shape, splits.num_classes, **config.model.options)
        results = {
            "schema": SCHEMA, "name": config.name, "config": resolved, "meta": environment("cpu"),
            "data": splits.info, "model": {"name": config.model.name, "parameters": count_parameters(model)},
            "records": records,
        }  # fmt: skip
        atomic_write_json(out_dir.path / "results.json", results)
        write_train_outputs(out_dir.path, results)
        out_dir.mark_complete()
    finally:
        torch.set_num_threads(threads)
        out_dir.release()
    return out_dir.path, state
