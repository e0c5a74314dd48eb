"""fp16 mixed precision for optimizers that call their closure several times per step (``torch.amp.GradScaler``).

torch's recipe scales the loss so that small fp16 gradients do not flush to zero, unscales the gradients once before
the optimizer's step, skips the step when any of them is inf or NaN, and lowers the scale in ``update()``. An
optimizer that runs forward and backward several times inside ``step`` sees each backward's gradients scaled, and one
unscaling before the step cannot reach them. ``torch.amp.GradScaler.step(optimizer, closure)`` leaves the work to an
optimizer that declares ``_step_supports_amp_scaling`` and takes a ``grad_scaler`` keyword:
:class:`~localentropy.entropy.optim.base.DirectionOptimizer` does, and :class:`GradientScaling` is that work:

* after every closure call the gradients are divided by the scale and checked, one fused kernel
  (``torch._amp_foreach_non_finite_check_and_unscale_``, what ``GradScaler.unscale_`` runs), so the sampler, the
  average and the direction see true gradients;
* an inf or NaN in any of them skips the outer step (:class:`StepSkippedError`): the parameters are put back
  exactly, the base optimizer, the counters and the warm chains do not move;
* what was found is recorded in the scaler's state for this optimizer, as ``GradScaler`` records it for optimizers
  it unscales itself, so ``scaler.update()`` lowers the scale after a skipped step and raises it after
  ``growth_interval`` clean ones. bf16 needs no scaler.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class StepSkippedError(Exception):
    """The scaler found an inf or NaN gradient in the step: nothing moved; ``loss`` is the step's first loss."""

    def __init__(self, loss: Any) -> None:
        super().__init__("a gradient was inf or NaN at the current loss scale: the step was skipped")
        self.loss = loss


class GradientScaling:
    """Unscaling and inf/NaN checking of the gradients of one step, for ``scaler`` (enabled) on ``device``."""

    def __init__(self, scaler: torch.amp.GradScaler, device: torch.device) -> None:
        self.scaler = scaler
        self.device = device
        # the scale as the closure multiplies the loss by it (a power of two unless set otherwise: exact inverse)
        self.inv_scale = torch.full((), 1.0 / scaler.get_scale(), dtype=torch.float32, device=device)
        self.found_inf = torch.zeros(1, dtype=torch.float32, device=device)

    def unscale(self, params: list[Tensor]) -> None:
        """Divide the gradients of ``params`` by the scale in place and fold "one is not finite" into ``found_inf``."""
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in params:
            if p.grad is not None:
                if p.grad.device != self.device:
                    raise ValueError(
                        f"mixed precision with a GradScaler needs every parameter on one device; found {self.device} "
                        f"and {p.grad.device}"
                    )
                by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
        for grads in by_dtype.values():
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, self.inv_scale)

    def record(self, optimizer: torch.optim.Optimizer) -> None:
        """Leave ``found_inf`` where ``scaler.update()`` reads it: the scaler's state for ``optimizer``, per device
        (what ``GradScaler`` records when it unscales an optimizer's gradients itself)."""
        self.scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"] = {self.device: self.found_inf}
