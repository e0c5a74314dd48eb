"""``localentropy train``: train one model with several optimizers on the same data, init and minibatch order.

Per optimizer and epoch it logs train / validation / test loss and error, the optimizer steps, the
forward-backward passes (``grad_evals``, inner steps included), ``effective_epochs`` (examples
forward-backwarded / training-set size) and the wall-clock training ``seconds``; then it measures flatness at
the final weights. A checkpoint after every epoch (model, optimizer, RNG state, minibatch position) lets an
interrupted run resume bit-identically on CPU. Output layout and fields: docs/training.md.
"""

from __future__ import annotations

import contextlib
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
from localentropy.entropy.optim.distributed import CommunicationCounter, DriftCheck, total_communication
from localentropy.experiments.core.config import ConfigError
from localentropy.experiments.core.files import slug
from localentropy.experiments.core.progress import Progress
from localentropy.experiments.core.rundir import (
    RunDirectory,
    atomic_write_bytes,
    atomic_write_json,
    environment,
    finite_or_none,
)
from localentropy.experiments.core.seeds import stable_seed
from localentropy.experiments.training.batches import BatchStream, evaluate
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
from localentropy.experiments.training.parallel import Ranks
from localentropy.experiments.training.precision import Precision, resolve_device
from localentropy.experiments.training.replicas import (
    gather_replica_states,
    own_replica_state,
    put_reference,
    reference_in_place,
)
from localentropy.experiments.training.text import TextStream, evaluate_text, text_columns, text_final

# 2: results.json gains the resolved device and the precision (version 1 files are read as before)
SCHEMA = 2
CHECKPOINT_FORMAT = 1
AfterEpoch = Callable[[str, int], None]


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

    def __init__(
        self,
        config: TrainConfig,
        spec: OptimizerConfig,
        splits: DataSplits,
        run_dir: RunDirectory,
        progress: TextIO,
        after_epoch: AfterEpoch | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.config, self.spec, self.splits, self.progress = config, spec, splits, progress
        self.ranks = ranks = ranks if ranks is not None else Ranks()
        self.after_epoch = after_epoch
        self.checkpoint = run_dir.path / "checkpoints" / f"{slug(spec.label)}.pt"
        torch.manual_seed(stable_seed(config.seed, "model init"))  # the same initial weights for every optimizer
        self.model = build_model(config.model.name, splits.input_shape, splits.num_classes, **config.model.options)
        self.device = splits_device(splits)
        self.model.to(self.device)  # before the optimizer is built: its state and generator follow the parameters
        self.precision = Precision(config.precision, self.device)
        torch.manual_seed(stable_seed(config.seed, "training", spec.label))  # dropout and optimizer noise
        data_seed, clip = stable_seed(config.seed, "data"), config.clip_grad_norm
        self.text = isinstance(splits.train, TokenStream)
        self.traffic = CommunicationCounter()  # DDP's gradient all-reduces and buffer broadcasts
        # Parle: one replica per rank, each stepping on its own share with its own noise; it communicates itself
        self.replicas = spec.kind == "parle"
        forward = self.model if self.replicas else ranks.wrap(self.model, self.traffic)  # the model in one process
        self.stream: BatchStream | TextStream = (
            TextStream(
                self.model,
                splits.train,
                config.batch_size,
                config.bptt,
                data_seed,
                clip,  # type: ignore[arg-type]
                precision=self.precision,
            )
            if self.text
            else BatchStream(
                forward,
                splits.train,
                config.batch_size,
                data_seed,
                clip,  # type: ignore[arg-type]
                (ranks.rank, ranks.world_size),
                averaged=not self.replicas,
                precision=self.precision,
            )
        )
        spe = self.stream.batches_per_pass
        self.passes = spec_passes(spec)
        if config.epoch_unit == "effective":  # an epoch reads the data once, whatever the passes per step
            self.steps_per_epoch = max(1, math.ceil(spe / self.passes))
        else:
            self.steps_per_epoch = spe
        self.total_steps, self.epochs = plan_steps(config, spe, self.passes, self.steps_per_epoch)
        self.optimizer = build_optimizer(
            spec, self.model.parameters(), total_steps=self.total_steps, batches_per_epoch=spe
        )
        assert passes_per_step(self.optimizer) == self.passes
        # Parle's replicas differ by design: no drift check
        self.drift = DriftCheck(self.model.parameters(), 0 if self.replicas else ranks.drift_every)
        self.steps, self.epoch, self.seconds = 0, 0, 0.0
        self.communicated = {"bytes_communicated": 0, "collective_calls": 0}  # before a resume
        self.rows: list[dict[str, Any]] = []
        self._finite_weights = True  # of the weights evaluated by the last row()

    def _evaluate(self, data: ArrayData | TokenStream | None) -> tuple[float | None, float | None]:
        if self.text:
            return evaluate_text(self.model, data)  # type: ignore[arg-type]
        return evaluate(self.model, data, self.config.eval_batch_size)  # type: ignore[arg-type]

    def row(self, lr: float | None) -> dict[str, Any]:
        with reference_in_place(self.model, self.optimizer) if self.replicas else contextlib.nullcontext():
            train_loss, train_error = self._evaluate(self.splits.train)
            val_loss, val_error = self._evaluate(self.splits.validation)
            test_loss, test_error = self._evaluate(self.splits.test)
            finite = _finite_model(self.model)
        row = {
            "epoch": self.epoch,
            "lr": lr,
            "steps": self.steps,
            "grad_evals": self.stream.calls,
            "examples": self.stream.examples,
            "effective_epochs": self.stream.examples / len(self.splits.train),
            "seconds": self.seconds,
            "train_loss": train_loss,
            "train_error": train_error,
            "val_loss": val_loss,
            "val_error": val_error,
            "test_loss": test_loss,
            "test_error": test_error,
        }
        if self.ranks.distributed:
            row["bytes_communicated"] = self.communication()["bytes_communicated"]
        row = {**row, **text_columns(row)} if self.text else row
        self._finite_weights = finite
        if self.replicas:  # rank 0's row (its seconds) on every rank: all take the same decision on divergence
            row, self._finite_weights = self.ranks.share((row, finite))
        return row

    def communication(self) -> dict[str, int]:
        """This rank's payload bytes and collective calls so far (DDP's, the optimizer's, the drift check's)."""
        now = total_communication(self.traffic, self.optimizer, self.drift)
        return {key: value + self.communicated[key] for key, value in now.items()}

    def save(self) -> None:
        replicas = None
        if self.replicas and self.ranks.distributed:
            replicas = gather_replica_states(self.model, self.optimizer, self.ranks)
        if not self.ranks.writer:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "label": self.spec.label,
            "epoch": self.epoch,
            "steps": self.steps,
            "seconds": self.seconds,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "stream": self.stream.state_dict(),
            "rows": self.rows,
            "scaler": self.precision.state_dict(),
            "communication": self.communication(),
        }
        if replicas is not None:
            state["replicas"] = replicas
        atomic_write_bytes(self.checkpoint, _weights_only_bytes(state))

    def restore(self) -> bool:
        state = self.ranks.share(load_checkpoint(self.checkpoint) if self.ranks.writer else None)
        if state is None or state.get("label") != self.spec.label:
            return False
        own = own_replica_state(state, self.ranks, self.checkpoint) if self.replicas else state
        self.model.load_state_dict(own["model"])
        self.optimizer.load_state_dict(own["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.precision.load_state_dict(state.get("scaler"))
        self.epoch, self.steps, self.seconds = int(state["epoch"]), int(state["steps"]), float(state["seconds"])
        self.rows = list(state["rows"])
        # the counts saved, less what the restored optimizer counts itself already (Parle keeps its own)
        saved = state.get("communication", self.communicated)
        now = total_communication(self.traffic, self.optimizer, self.drift)
        self.communicated = {key: int(saved[key]) - now[key] for key in now}
        torch.set_rng_state(state["torch_rng"])  # last: building the optimizer drew from the global generator
        return True

    def _step(self) -> Tensor:
        if self.spec.kind in ("sgd", "adam"):
            loss = self.stream()
            if not self._finite(loss):
                raise DivergenceError(f"a non-finite training loss ({float(loss)})")
            self.precision.step(self.optimizer)
        else:
            loss = self.precision.step(self.optimizer, self.stream)
        self.drift.step()
        return loss

    def _finite(self, loss: Tensor) -> bool:
        if not self.ranks.distributed:
            return bool(torch.isfinite(loss))
        # data-parallel: the all-reduced gradients, the same on every rank, so that all ranks stop together
        return all(bool(torch.isfinite(p.grad).all()) for p in self.model.parameters() if p.grad is not None)

    def train(self) -> dict[str, Any]:
        """Train (or finish training) and return the record without flatness."""
        resumed = self.restore()
        if not resumed:
            self.rows = [self.row(None)]
            self.save()
        schedule = self.config.schedule_for(self.spec)
        with Progress(self.progress, self.epochs, desc=self.spec.label, unit="epoch", done=self.epoch) as bar:
            status, message = self._epochs(schedule, bar)
        if self.replicas:  # training is over: the flatness measures read the reference
            put_reference(self.model, self.optimizer)
        return self.record(status, message)

    def _epochs(self, schedule: ScheduleConfig, bar: Progress) -> tuple[str, str | None]:
        status, message = "ok", None
        while self.epoch < self.epochs:
            lr = learning_rate(schedule, self.spec.lr, self.epoch, self.epochs)
            set_learning_rate(self.optimizer, lr)
            self.model.train()
            if self.ranks.distributed:  # each rank its own dropout masks, reproducible on a resume
                seed = stable_seed(self.config.seed, "training", self.spec.label, self.ranks.rank, self.epoch)
                torch.manual_seed(seed)
            end = min((self.epoch + 1) * self.steps_per_epoch, self.total_steps)
            start = time.perf_counter()
            try:
                while self.steps < end:
                    self._step()
                    self.steps += 1
                    self.ranks.fault_point(self.steps)
            except DivergenceError as exc:
                if self.replicas and self.ranks.world_size > 1:  # the other replicas wait for it at the all-reduce
                    raise RuntimeError(
                        f"{self.spec.label}: the Parle replica of rank {self.ranks.rank} diverged at "
                        f"optimizer step {self.steps + 1} (epoch {self.epoch + 1}, lr {lr:g}): {exc}; "
                        "the other replicas cannot go on without it"
                    ) from exc
                status = "diverged"
                message = (
                    f"{self.spec.label}: diverged at optimizer step {self.steps + 1} (epoch {self.epoch + 1}, "
                    f"lr {lr:g}{self._sampler_text()}): {exc}{self._cause(str(exc), lr)}"
                )
                break
            finally:
                self.seconds += time.perf_counter() - start
            self.epoch += 1
            row = self.row(lr)
            losses = [row["train_loss"], row["test_loss"]] + ([row["val_loss"]] if self.splits.validation else [])
            if any(loss is None for loss in losses) or not self._finite_weights:
                status = "diverged"
                first = (self.epoch - 1) * self.steps_per_epoch + 1
                message = (
                    f"{self.spec.label}: diverged in epoch {self.epoch} (optimizer steps {first} to "
                    f"{self.steps}, lr {lr:g}{self._sampler_text()}): the weights or the evaluation loss became "
                    f"non-finite{self._cause('', lr)}"
                )
                break
            self.rows.append(row)
            self.save()
            bar.advance()
            bar.line(
                f"  {self.spec.label}: epoch {self.epoch}/{self.epochs} test error {row['test_error']:.4f} "
                f"effective epochs {row['effective_epochs']:.2f} ({self.seconds:.1f}s)"
            )
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
        from localentropy.experiments.training.report import FINAL_ROW_KEYS  # lazy: it imports matplotlib

        last = self.rows[-1]
        counter = getattr(self.optimizer, "grad_evals", None)
        return {
            "label": self.spec.label,
            "kind": self.spec.kind,
            "status": status,
            "message": message,
            "epochs_planned": self.epochs,
            "epochs_run": self.epoch,
            "steps": self.steps,
            "steps_planned": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "passes_per_step": self.passes,
            "optimizer_grad_evals": counter,
            "rows": self.rows,
            "world_size": self.ranks.world_size,
            **self.communication(),
            "final": None
            if status != "ok"
            else {k: last[k] for k in FINAL_ROW_KEYS} | (text_final(last, self.splits.info) if self.text else {}),
            "flatness": None,
        }


def _finite_model(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if torch.is_floating_point(t))


def load_splits(config: TrainConfig, source: str | None = None) -> DataSplits:
    d = config.data
    try:
        return load_data(
            d.source,
            path=d.path,
            seed=config.seed,
            validation_fraction=d.validation_fraction,
            test_fraction=d.test_fraction,
            train_limit=d.train_limit,
            test_limit=d.test_limit,
            options=d.options,
        )
    except ValueError as exc:  # a missing directory, a bad file: the user's input
        raise ConfigError([f"data: {exc}"], source) from None


def splits_to(splits: DataSplits, device: torch.device) -> DataSplits:
    """The splits with every tensor on ``device`` (the data of these sources fits a device whole)."""
    if device.type == "cpu":
        return splits
    for name in ("train", "validation", "test"):
        part = getattr(splits, name)
        if isinstance(part, ArrayData):
            setattr(splits, name, ArrayData(part.x.to(device), part.y.to(device)))
        elif isinstance(part, TokenStream):
            setattr(splits, name, TokenStream(part.tokens.to(device)))
    return splits


def splits_device(splits: DataSplits) -> torch.device:
    train = splits.train
    return train.tokens.device if isinstance(train, TokenStream) else train.x.device


def default_out(config: TrainConfig) -> Path:
    return Path("runs") / config.name


def run_training(
    config: TrainConfig | str | Path,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: TextIO | None = None,
    after_epoch: AfterEpoch | None = None,
    ranks: Ranks | None = None,
) -> tuple[Path, str]:
    """Run a training config into a run directory; returns (directory, "fresh" | "resume" | "skip").

    With ``ranks`` (data-parallel, parallel.py) every rank runs this; only rank 0 reads and writes the directory.
    """
    from localentropy.experiments.training.flatness import measure_flatness
    from localentropy.experiments.training.report import write_train_outputs

    ranks = ranks if ranks is not None else Ranks()
    source = None if isinstance(config, TrainConfig) else str(config)
    config = config if isinstance(config, TrainConfig) else load_train_config(config)
    device = resolve_device(config.device)  # a device this machine lacks is refused before anything is written
    out_dir = RunDirectory(out if out is not None else default_out(config))
    if not ranks.distributed:
        out_dir.check_free()
    resolved = config.as_dict()
    # the data first: a bad data path is refused before the run directory is created (not when it would be skipped)
    splits = None if out_dir.complete and not force else splits_to(load_splits(config, source), device)
    state = ranks.prepare(out_dir, resolved, force)
    threads = torch.get_num_threads()
    try:
        if state == "skip":
            return out_dir.path, state
        splits = splits if splits is not None else splits_to(load_splits(config, source), device)
        progress = progress if progress is not None else sys.stderr
        torch.set_num_threads(ranks.threads(config.threads))
        records = []
        for spec in config.optimizers:
            record = out_dir.load_record(slug(spec.label)) if ranks.writer else None
            if record is not None and (
                record.get("label") != spec.label or record.get("status") not in ("ok", "diverged")
            ):
                record = None  # not this optimizer's finished record (a foreign or hand-edited file): redo it
            record = ranks.share(record)
            if record is None:
                print(f"{spec.label} ({spec.kind})", file=progress, flush=True)
                run = OptimizerRun(
                    config, spec, splits, out_dir, progress, after_epoch if ranks.writer else None, ranks
                )
                record = run.train()
                if record["status"] == "ok" and not run.text:  # the flatness measures read labelled examples
                    # on every rank (the same numbers): no rank waits at the next collective for rank 0 alone
                    record["flatness"] = measure_flatness(run.model, splits, config)
                record = finite_or_none(record)
                if ranks.writer:
                    out_dir.save_record(slug(spec.label), record)
            records.append(record)
        ranks.barrier()  # every rank finished: only now may the run be marked complete
        if not ranks.writer:
            return out_dir.path, state
        torch.manual_seed(stable_seed(config.seed, "model init"))
        model = build_model(config.model.name, splits.input_shape, splits.num_classes, **config.model.options)
        results = {
            "schema": SCHEMA,
            "name": config.name,
            "config": resolved,
            "meta": environment(device.type),
            "device": str(device),
            "precision": config.precision,
            "world_size": ranks.world_size,
            "data": splits.info,
            "model": {"name": config.model.name, "parameters": count_parameters(model)},
            "records": records,
        }
        atomic_write_json(out_dir.path / "results.json", results)
        write_train_outputs(out_dir.path, results)
        out_dir.mark_complete()
    finally:
        torch.set_num_threads(threads)
        out_dir.release()
    return out_dir.path, state
