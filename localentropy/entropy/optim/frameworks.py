"""What the optimizers check about the training framework that calls them (Lightning, accelerate).

Neither framework is imported here: a check looks only at modules the program has already imported, so the
optimizers cost nothing and need nothing when no framework is in use.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

_LIGHTNING_CLOSURE_MODULES = (
    "lightning.pytorch.loops.optimization.closure",
    "pytorch_lightning.loops.optimization.closure",
)


def is_lightning_automatic_closure(closure: Any) -> bool:
    """Whether ``closure`` is Lightning's automatic-optimisation closure (``training_step`` + backward),
    directly or wrapped by Lightning's precision plugin (a ``functools.partial`` holding it)."""
    candidates = [closure, *getattr(closure, "args", ()), *getattr(closure, "keywords", {}).values()]
    for name in _LIGHTNING_CLOSURE_MODULES:
        module = sys.modules.get(name)
        if module is not None and any(isinstance(c, module.AbstractClosure) for c in candidates):
            return True
    return False


def accelerate_accumulation_steps() -> int:
    """accelerate's ``gradient_accumulation_steps`` when an ``Accelerator`` exists in this process, else 1."""
    module = sys.modules.get("accelerate.state")
    if module is None:
        return 1
    shared = module.GradientState._shared_state
    return int(shared.get("plugin_kwargs", {}).get("num_steps", 1)) if shared else 1


def check_framework_use(optimizer: Any, closure: Any) -> None:
    """Refuse accelerate's gradient accumulation; warn (once per optimizer) under Lightning's automatic
    optimisation, where every inner closure call re-runs ``training_step`` on the same batch."""
    name = type(optimizer).__name__
    steps = accelerate_accumulation_steps()
    if steps > 1:
        raise RuntimeError(
            f"{name} cannot run under accelerate's gradient accumulation (gradient_accumulation_steps={steps}): "
            "accelerate skips optimizer.step, and with it the closure and its minibatches, on all but one "
            "iteration in every accumulation window. Use gradient_accumulation_steps=1 and accumulate inside "
            "each inner step with SplitBatchClosure(..., micro_batches=m) (docs/optimizers.md)"
        )
    if is_lightning_automatic_closure(closure) and not optimizer._warned_lightning_automatic:
        optimizer._warned_lightning_automatic = True
        warnings.warn(
            f"{name} under Lightning's automatic optimisation: every one of its closure calls re-runs "
            "training_step on the same batch, so the inner loop sees one minibatch per step instead of a fresh "
            "one per call (and with accumulate_grad_batches > 1 the accumulated batches' gradients are "
            "discarded). For fresh minibatches use manual optimisation with SplitBatchClosure "
            "(docs/optimizers.md, 'PyTorch Lightning')",
            UserWarning,
            stacklevel=4,
        )
