"""What Entropy-SGD's inner loop does to a model's batch-norm running statistics.

In train mode every closure call updates each batch-norm layer's running mean and variance (and
``num_batches_tracked``) with the batch statistics at the weights it is called at. Entropy-SGD calls the closure L
times per outer step at the perturbed weights x' of its chain, and the model is then evaluated at x with statistics
gathered at x'. The policies (``EntropySGD(..., batchnorm=..., modules=model)``):

* ``"inner"``: updated at every inner step, L updates per outer step at x' (the authors' code; nothing to do);
* ``"frozen"``: the inner loop leaves them as they were (saved before the loop, put back after it; the forward
  passes still normalise with their own batch statistics, as train mode does);
* ``"refresh"``: as ``"frozen"``, then one more closure call at the new x after the outer step updates them once
  there (its gradients are discarded; counted in ``grad_evals``: one gradient evaluation per outer step).

Only layers that track running statistics are touched; a model without batch norm is unaffected by any policy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from localentropy._checks import check_choice

BATCHNORM_POLICIES = ("inner", "frozen", "refresh")


class RunningStats:
    """The batch-norm layers of ``modules`` under ``policy``: their statistics saved and put back around the loop."""

    def __init__(self, policy: str, modules: nn.Module | None) -> None:
        self.policy = check_choice("batchnorm", policy, BATCHNORM_POLICIES)
        if modules is not None and not isinstance(modules, nn.Module):
            raise TypeError(f"modules must be the model (a torch.nn.Module) or None, got {type(modules).__name__}")
        if self.policy != "inner" and modules is None:
            raise ValueError(
                f"batchnorm={policy!r} needs the model to find its batch-norm layers: pass modules=model "
                f"(allowed policies: {', '.join(BATCHNORM_POLICIES)}; 'inner' needs none)"
            )
        layers = [] if modules is None else [m for m in modules.modules() if isinstance(m, _BatchNorm)]
        self.layers = [m for m in layers if m.track_running_stats and m.running_mean is not None]
        self.saved: list[list[Tensor]] = []

    @property
    def active(self) -> bool:
        return self.policy != "inner" and bool(self.layers)

    def _buffers(self) -> list[Tensor]:
        return [b for m in self.layers for b in (m.running_mean, m.running_var, m.num_batches_tracked)]

    @torch.no_grad()
    def save(self) -> None:
        """Keep the statistics as they are before the inner loop (buffers allocated once)."""
        if not self.active:
            return
        buffers = self._buffers()
        if [(s.shape, s.dtype, s.device) for s in self.saved] != [(b.shape, b.dtype, b.device) for b in buffers]:
            self.saved = [b.clone() for b in buffers]
        else:
            torch._foreach_copy_(self.saved, buffers)

    @torch.no_grad()
    def restore(self) -> None:
        """Put the saved statistics back (after the inner loop, however it ended)."""
        if self.active and self.saved:
            for b, s in zip(self._buffers(), self.saved, strict=True):
                b.copy_(s)

    @property
    def refreshes(self) -> bool:
        """Whether one closure call at the new x follows the outer step."""
        return self.policy == "refresh" and bool(self.layers)
