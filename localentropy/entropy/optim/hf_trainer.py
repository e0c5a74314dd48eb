"""A Hugging Face ``transformers.Trainer`` for the optimizers that call their closure several times per step.

The Trainer runs ``training_step`` (forward and backward on one batch) and then calls ``optimizer.step()``
without a closure. Entropy-SGD needs ``inner_steps`` forward-backward passes on fresh minibatches inside one
step, so :class:`EntropyTrainer` takes the whole step in ``training_step``: the Trainer's batch
(``per_device_train_batch_size`` = ``inner_steps`` x minibatch size) is split into ``inner_steps`` minibatches,
closure call k runs ``compute_loss`` and backward on the k-th (:class:`~localentropy.entropy.SplitBatchClosure`),
and the Trainer's own closure-less ``optimizer.step()`` that follows is a no-op.

Why split the batch rather than draw further batches from the loader: the Trainer's bookkeeping (optimizer steps
per epoch, the batches it skips when it resumes from a checkpoint, the scheduler's horizon, the examples and
floating-point operations it counts) stays that of one loader batch per optimizer step, so an epoch is one pass
over the data and a resumed run reads exactly the batches the uninterrupted one reads. Under the Trainer's
gradient accumulation (``gradient_accumulation_steps=k``) the step waits for the k-th batch of the window and
closure call j takes the j-th minibatch of each of the k batches (``SplitBatchClosure.over_batches``).

Needs ``pip install "localentropy[hf]"`` (transformers and accelerate); nothing here is imported by the package.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from transformers import Trainer

from localentropy.entropy.optim.base import DirectionOptimizer
from localentropy.entropy.training import SplitBatchClosure


def closure_calls_per_step(optimizer: DirectionOptimizer) -> int:
    """How many closure calls (minibatches) one step of ``optimizer`` makes: ``inner_steps`` (Entropy-SGD,
    Entropy-Adam, Parle) or ``n_samples`` (LPF-SGD)."""
    for name in ("inner_steps", "n_samples"):
        calls = getattr(optimizer, name, None)
        if isinstance(calls, int):
            return calls
    raise TypeError(f"{type(optimizer).__name__} declares neither inner_steps nor n_samples")


class _StepTakenInTrainingStep(Optimizer):
    """``optimizer`` as the Trainer sees it: ``training_step`` takes the step with a closure, and the
    closure-less ``step()`` the Trainer calls next is a no-op (an error when no step was taken before it).

    Like accelerate's ``AcceleratedOptimizer``, it skips ``Optimizer.__init__``: the groups, the state and the
    state dict are the wrapped optimizer's own, so schedulers and checkpoints see the real thing.
    """

    def __init__(self, optimizer: DirectionOptimizer) -> None:
        self.optimizer = optimizer
        self._step_taken = False

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = groups

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, state: Any) -> None:
        self.optimizer.state = state

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, defaults: dict[str, Any]) -> None:
        self.optimizer.defaults = defaults

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        if closure is not None:
            loss = self.optimizer.step(closure)
            self._step_taken = True
            return loss
        if not self._step_taken:
            raise RuntimeError(
                f"EntropyTrainer: optimizer.step() was called without a closure before training_step took the "
                f"step; {type(self.optimizer).__name__} takes its step inside EntropyTrainer.training_step"
            )
        self._step_taken = False
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"


class EntropyTrainer(Trainer):
    """``transformers.Trainer`` whose training step is one step of Entropy-SGD (or any optimizer of this library),
    each closure call on its own minibatch of the Trainer's batch.

    Pass the optimizer as ``optimizers=(EntropySGD(model.parameters(), ...), scheduler_or_None)`` (with None the
    Trainer builds its ``lr_scheduler_type`` schedule on it) and set ``per_device_train_batch_size`` to
    ``inner_steps`` x the minibatch size (``dataloader_drop_last=True`` keeps every minibatch full).
    Gradient accumulation: with ``gradient_accumulation_steps=k`` the step is taken at the last batch of each
    window of k, closure call j reading the j-th minibatch of every batch of the window (one backward each, the
    k slices weighted by their sizes); ``micro_batches=m`` also cuts each of those slices in m. ``max_grad_norm``
    (the Trainer's clipping, 1.0 by default; 0 turns it off) clips the gradient of every closure call, before
    the inner loop uses it. The loss logged is the loss at x (the first minibatch's, what ``step`` returns); the logs
    add ``grad_evals`` (closure calls, i.e. forward-backward passes, so far) and ``outer_steps``, both kept in
    the optimizer's state dict and so in every checkpoint.
    """

    def __init__(self, *args: Any, micro_batches: int = 1, **kwargs: Any) -> None:
        if not (isinstance(micro_batches, int) and not isinstance(micro_batches, bool) and micro_batches >= 1):
            raise ValueError(f"micro_batches must be an integer >= 1, got {micro_batches!r}")
        super().__init__(*args, **kwargs)
        if self.args.fp16:
            raise ValueError(
                "EntropyTrainer: fp16=True is not supported yet (the Trainer's gradient scaler and clipping unscale "
                "once per step; these optimizers unscale each closure call's gradient); use bf16=True or full precision"
            )
        self.micro_batches = micro_batches
        self._closure_optimizer: _StepTakenInTrainingStep | None = None
        self._window: list[Any] = []  # the batches of the current gradient-accumulation window

    def create_optimizer(self, *args: Any, **kwargs: Any) -> Optimizer:
        self._window = []  # called as train() starts: no batch is left over from an interrupted run
        optimizer = super().create_optimizer(*args, **kwargs)
        if isinstance(optimizer, _StepTakenInTrainingStep):
            return optimizer
        if not isinstance(optimizer, DirectionOptimizer):
            raise TypeError(
                f"EntropyTrainer needs an optimizer of localentropy (EntropySGD, EntropyAdam, LPFSGD, Parle), got "
                f"{type(optimizer).__name__}: pass optimizers=(EntropySGD(model.parameters(), ...), None)"
            )
        calls = closure_calls_per_step(optimizer)
        if self.args.per_device_train_batch_size < calls:
            raise ValueError(
                f"EntropyTrainer: per_device_train_batch_size={self.args.per_device_train_batch_size} cannot be split "
                f"into the {calls} minibatches one step of {type(optimizer).__name__} uses; set it to {calls} x the "
                "minibatch size"
            )
        self._closure_optimizer = _StepTakenInTrainingStep(optimizer)
        self.optimizer = self._closure_optimizer
        return self.optimizer

    @property
    def entropy_optimizer(self) -> DirectionOptimizer:
        """The optimizer of this library under the Trainer's wrappers (its counters, its state)."""
        if self._closure_optimizer is None:
            raise RuntimeError("EntropyTrainer: the optimizer is created when train() starts")
        return self._closure_optimizer.optimizer

    def _minibatch_loss(self, model: nn.Module, minibatch: Any) -> Tensor:
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, minibatch)
        return loss.mean() if self.args.n_gpu > 1 else loss  # DataParallel returns one loss per GPU

    def _clipped(self, closure: SplitBatchClosure, model: nn.Module) -> Callable[[], Tensor]:
        def call() -> Tensor:
            loss = closure()
            if self.args.max_grad_norm > 0:
                self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
            return loss

        return call

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None, **kwargs: Any
    ) -> Tensor:
        """One optimizer step on ``inputs`` (on the batches of the accumulation window, at its last one), one
        minibatch per closure call; returns the loss at x (zero for the batches before the window's last, so
        that the Trainer's sum over a window is the loss at x).

        ``num_items_in_batch`` (the Trainer's token count for normalising across accumulated batches) is not used:
        each slice's loss is the model's own mean, weighted by the slice's share of the closure call's examples.
        """
        model.train()
        self._window.append(self._prepare_inputs(inputs))
        if not self.accelerator.sync_gradients:  # the Trainer steps at the window's last batch
            return torch.zeros((), device=self.args.device)
        batches, self._window = self._window, []
        closure = SplitBatchClosure.over_batches(
            batches,
            closure_calls_per_step(self.entropy_optimizer),
            partial(self._minibatch_loss, model),
            backward=self.accelerator.backward,
            micro_batches=self.micro_batches,
        )
        self.optimizer.step(self._clipped(closure, model))
        return closure.losses[0].to(self.args.device)

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._closure_optimizer is not None:
            optimizer = self._closure_optimizer.optimizer
            logs = {**logs, "grad_evals": optimizer.grad_evals, "outer_steps": optimizer.outer_steps}
        super().log(logs, *args, **kwargs)


__all__ = ["EntropyTrainer", "closure_calls_per_step"]
