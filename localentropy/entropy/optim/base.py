"""Optimizers that build a descent direction from several closure calls and hand it to a torch optimizer.

Entropy-SGD (the local-entropy gradient from an inner sampling loop) and LPF-SGD (the gradient averaged over
random weight perturbations) both compute a direction with many closure calls and then take an ordinary
optimizer step along it. :class:`DirectionOptimizer` holds what they share: the wrapped base optimizer,
which uses the same ``param_groups`` dicts and the same per-parameter ``state`` (so LR schedulers and
``state_dict`` see one optimizer), the noise generator (saved in ``state_dict`` so that a resumed run
takes the identical next step; made on the parameters' device at first use, so an optimizer built before
``model.to(device)`` works), and the counters of outer steps and gradient evaluations.

torch's conventions hold for the parameters a step touches: a parameter with ``requires_grad=False`` or that
the closure's backward does not reach (its ``grad`` stays None or untouched: the loss does not use it) is
skipped, neither moved nor given optimizer state. Before every closure call the gradients of the trainable
parameters are set to None (as ``zero_grad()`` does), so a closure (or a framework's) that does not zero them
cannot leak one inner call's gradient into the next.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Iterator
from numbers import Real
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from localentropy.entropy.optim.distributed import CommunicationCounter, process_group_active, sync_noise_generators
from localentropy.entropy.optim.frameworks import check_framework_use
from localentropy.entropy.optim.scaling import GradientScaling, StepSkippedError

Closure = Callable[[], Any]


def new_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (one place, so tests can watch which device is asked for)."""
    return torch.Generator(device=device).manual_seed(seed)


def _seed_from(generator: torch.Generator) -> int:
    """A seed drawn from ``generator``: the deterministic successor of its stream on another device."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64, generator=generator, device=generator.device))


def _seed_from_state(state: Tensor) -> int:
    """A seed that is a fixed function of a saved generator state (for a state of another device type)."""
    digest = hashlib.sha256(state.numpy().tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


class DirectionOptimizer(Optimizer):
    """Base class: subclasses implement ``_direction(closure)``, which leaves the direction in ``p.grad``
    and returns ``(loss, closure_calls, stepped_params)``."""

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        base_optimizer: type[Optimizer],
        base_options: dict[str, Any],
        generator: torch.Generator | None,
    ) -> None:
        super().__init__(params, defaults)
        if not (isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer)):
            raise TypeError(f"base_optimizer must be a torch.optim.Optimizer class, got {base_optimizer!r}")
        self.base = base_optimizer(self.param_groups, **base_options)
        self._link()
        # The base optimizer's options (momentum, betas, fused, ...) are this optimizer's defaults too: schedulers
        # that cycle momentum look for them in ``defaults``, and add_param_group fills new groups from it.
        for key, value in self.base.defaults.items():
            self.defaults.setdefault(key, value)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self._generator = generator
        # Drawn now from torch's global RNG, so ``torch.manual_seed`` before construction fixes the noise; the
        # generator itself is made at first use, on the device the parameters are on by then.
        self._seed = int(torch.randint(0, 2**62, (), dtype=torch.int64)) if generator is None else None
        # Under torch.distributed every rank takes rank 0's noise (distributed.py), synchronised at the first step.
        self._noise_synced = False
        self._communication = CommunicationCounter()
        # scratch tensors by (purpose, first parameter): see _buffers
        self._scratch: dict[tuple[str, int], list[Tensor]] = {}
        # the unscaling of the step under way when torch.amp.GradScaler.step hands itself over (scaling.py)
        self._scaling: GradientScaling | None = None
        # whether the warning about Lightning's automatic optimisation was given (frameworks.py)
        self._warned_lightning_automatic = False

    def _link(self) -> None:
        # One set of group dicts and one state for both optimizers: schedulers, state_dict and the base step
        # all see the same numbers.
        self.base.param_groups = self.param_groups
        self.base.state = self.state

    def _params(self) -> Iterator[Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    def _group_params(self, group: dict[str, Any]) -> list[Tensor]:
        return [p for p in group["params"] if p.requires_grad]

    def _device(self) -> torch.device:
        trainable = [p for p in self._params() if p.requires_grad]
        return (trainable or list(self._params()))[0].device

    @property
    def generator(self) -> torch.Generator:
        """The noise generator, on the parameters' device (moved there, by a seed drawn from it, if they moved)."""
        device = self._device()
        generator = self._generator
        if generator is None:
            assert self._seed is not None
            generator = new_generator(device, self._seed)
        elif generator.device != device:
            generator = new_generator(device, _seed_from(generator))
        self._generator = generator
        return generator

    @generator.setter
    def generator(self, generator: torch.Generator) -> None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self._generator = generator

    def _counter(self, key: str) -> int:
        # The largest count over the parameters: a parameter skipped so far (frozen, unused) has none.
        counts = (state.get(key, 0) for p in self._params() if (state := self.state.get(p)) is not None)
        return int(max(counts, default=0))

    @property
    def outer_steps(self) -> int:
        """Optimizer steps taken so far (each one many closure calls)."""
        return self._counter("outer_step")

    @property
    def grad_evals(self) -> int:
        """Closure calls (forward + backward passes) made so far."""
        return self._counter("grad_evals")

    def _count(self, stepped: list[Tensor], closure_calls: int) -> None:
        # Only in the state of the parameters the base optimizer stepped: Adam initialises a parameter's state
        # when it is empty, so a frozen parameter must not get counters before its first real step.
        outer_step, grad_evals = self.outer_steps + 1, self.grad_evals + closure_calls
        for p in stepped:
            self.state[p]["outer_step"] = outer_step
            self.state[p]["grad_evals"] = grad_evals

    def _buffers(self, params: list[Tensor], key: str) -> list[Tensor]:
        """Scratch tensors like ``params`` (shape, dtype, device), allocated once (not in state_dict)."""
        store = self._scratch
        buffers = store.get((key, id(params[0])))
        if buffers is None or [(b.shape, b.dtype, b.device) for b in buffers] != [
            (p.shape, p.dtype, p.device) for p in params
        ]:
            buffers = [torch.empty_like(p) for p in params]
            store[(key, id(params[0]))] = buffers
        return buffers

    @staticmethod
    def _grads(params: list[Tensor]) -> list[Tensor]:
        for p in params:
            if p.grad is None:  # a parameter this closure call did not reach
                p.grad = torch.zeros_like(p)
        return [p.grad for p in params]

    def _trainable(self) -> list[tuple[dict[str, Any], list[Tensor]]]:
        """(group, trainable parameters) for the groups that have any; a clear error when none has."""
        groups = [(g, ps) for g in self.param_groups if (ps := self._group_params(g))]
        if not groups:
            raise ValueError(
                f"{type(self).__name__}.step: no parameter requires grad (all are frozen): there is nothing to "
                "optimise; unfreeze some parameters or skip the step"
            )
        return groups

    def _call_closure(self, closure: Closure, params: list[Tensor], track: bool = False) -> tuple[Any, list[bool]]:
        """One closure call on fresh gradients; with ``track``, which of ``params`` the call gave a gradient.

        The gradients are set to None first, as ``zero_grad()`` does, so a closure that does not zero them, or a
        framework's that skips it while accumulating, cannot leak one call's gradient into the next, and a closure
        that does zero them costs no pass over memory (zeroing in place cost one per call: ~0.04 G on mnistfc). A
        parameter counts as reached when the call gave it a gradient.
        """
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss = closure()
        if self._scaling is not None:
            self._scaling.unscale(params)
        if not (loss is None or isinstance(loss, Tensor | Real)):
            raise TypeError(
                f"{type(self).__name__}: the closure must return the loss (a tensor or a number), got "
                f"{type(loss).__name__}; if it returns (loss, outputs), return only the loss"
            )
        if not track:
            return loss, []
        return loss, [p.grad is not None for p in params]

    def _no_gradient_error(self) -> RuntimeError:
        return RuntimeError(
            f"{type(self).__name__}: after the closure call no trainable parameter has a gradient; the closure must "
            "run backward (loss.backward(), or manual_backward / accelerator.backward in a framework); the "
            "parameters were restored to their values before the step"
        )

    def _noise_generators(self) -> list[torch.Generator]:
        """Every generator the noise comes from (subclasses add theirs), in an order the same on every rank."""
        return [self.generator]

    #: Whether every rank of a process group draws rank 0's noise (data-parallel replicas of one model). An optimizer
    #: whose ranks are distinct replicas with their own noise (Parle) declares False.
    shares_noise_across_ranks: bool = True

    def _sync_noise(self) -> None:
        if self.shares_noise_across_ranks and not self._noise_synced and process_group_active():
            sync_noise_generators(self._noise_generators(), self._communication)
        self._noise_synced = True

    def communication(self) -> dict[str, int]:
        """Payload bytes and calls of the collectives this optimizer made itself (the noise synchronisation)."""
        return self._communication.communication()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        generator = self.generator
        state["generator_state"] = generator.get_state()
        state["generator_device"] = generator.device.type
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        saved_device = state_dict.pop("generator_device", None)
        super().load_state_dict(state_dict)
        self._link()
        self._noise_synced = False  # a checkpoint read on each rank: rank 0's state wins again at the next step
        if generator_state is not None:
            self._load_generator(torch.as_tensor(generator_state).detach().to("cpu", torch.uint8), saved_device)

    def _load_generator(self, state: Tensor, saved_device: str | None) -> None:
        # A checkpoint loaded with map_location="cuda" (or moved by accelerate) has its generator state on the
        # GPU; set_state wants it on the CPU, hence the move above.
        device = self._device()
        if saved_device is None:  # a state_dict written before the device was recorded
            saved_device = "cpu" if state.numel() == torch.Generator().get_state().numel() else "cuda"
        if saved_device == device.type:
            generator = torch.Generator(device=device)
            generator.set_state(state)
        else:  # CPU and CUDA generators are different algorithms: no state carries over
            warnings.warn(
                f"{type(self).__name__}.load_state_dict: the noise generator was saved on {saved_device} and the "
                f"parameters are on {device.type}; the noise goes on from a seed derived from the saved state "
                "(deterministic, but not the stream the other device would have drawn)",
                stacklevel=3,
            )
            generator = new_generator(device, _seed_from_state(state))
        self._generator = generator

    def _require_closure(self, closure: Closure | None) -> Closure:
        if closure is None or not callable(closure):
            raise RuntimeError(
                f"{type(self).__name__}.step needs a closure that zeroes the gradients, runs forward and backward "
                "on a fresh minibatch and returns the loss (see localentropy.entropy.make_closure)"
            )
        return closure

    #: ``torch.amp.GradScaler.step(optimizer, closure)`` hands itself over (``grad_scaler=``) instead of unscaling the
    #: gradients once: the gradients of every closure call are unscaled and checked here (scaling.py).
    _step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure: Closure | None = None, grad_scaler: torch.amp.GradScaler | None = None) -> Any:  # type: ignore[override]
        """One step; with ``grad_scaler`` (given by ``GradScaler.step``), the closure's scaled gradients are unscaled
        after every call, and an inf or NaN among them skips the step (the scaler lowers its scale at ``update()``)."""
        closure = self._require_closure(closure)
        check_framework_use(self, closure)
        self._sync_noise()
        enabled = grad_scaler is not None and grad_scaler.is_enabled()
        self._scaling = GradientScaling(grad_scaler, self._device()) if enabled else None
        try:
            loss, closure_calls, stepped = self._direction(closure)
        except StepSkippedError as skipped:
            return skipped.loss
        finally:
            if self._scaling is not None:
                self._scaling.record(self)
            self._scaling = None
        self.base.step()
        closure_calls += self._after_base_step(closure)
        # Count only after the base step: optimizers such as Adam initialise a parameter's state lazily when
        # it is empty, so the counters must not be there before the first base step.
        self._count(stepped, closure_calls)
        return loss

    def _after_base_step(self, closure: Closure) -> int:
        """A hook run after the base optimizer stepped (the parameters at the new x); returns the closure calls it
        made, counted with the step's."""
        return 0

    def _check_step(self, nonfinite: Tensor, loss: Any) -> bool:
        """The step's one host synchronisation: raises :class:`StepSkippedError` (with ``loss``) when a scaler found an
        inf or NaN gradient, else returns whether a loss, gradient or iterate was not finite (``nonfinite``)."""
        if self._scaling is None:
            return bool(nonfinite)
        found = self._agree_on_overflow(self._scaling.found_inf)
        overflow, diverged = torch.stack([found.reshape(()) > 0, nonfinite]).tolist()
        if overflow:
            raise StepSkippedError(loss)
        return diverged

    def _agree_on_overflow(self, found_inf: Tensor) -> Tensor:
        """A hook: ``found_inf`` as all the optimizer's processes see it (Parle's replicas skip together)."""
        return found_inf

    def _direction(self, closure: Closure) -> tuple[Any, int, list[Tensor]]:
        """Leave the direction in ``p.grad`` (None for the skipped parameters); return the loss to report, the
        number of closure calls and the parameters that have a direction. The parameters must be x on return,
        whether it completes or raises."""
        raise NotImplementedError


def check_finite_loss(flag: Tensor, loss: Any) -> None:
    """Fold "this loss is not finite" into an on-device flag without a host synchronisation."""
    if isinstance(loss, Tensor):
        torch.logical_or(flag, ~torch.isfinite(loss.detach()).all(), out=flag)
    elif loss is not None and not torch.isfinite(torch.tensor(float(loss))):
        flag.fill_(True)


class DivergenceError(FloatingPointError):
    """A loss, gradient or iterate became NaN or infinite; the parameters are left at the last finite point."""
