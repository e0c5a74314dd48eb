"""Language-model training on token streams: truncated backpropagation through time and stateful evaluation.

Training (:class:`TextStream`): the training tokens are cut into ``batch_size`` contiguous rows, one text stream
per batch row, read ``bptt`` tokens at a time. Each call of the closure runs the model on the next segment of
every row from the hidden state the previous call left, backpropagates through that segment only (the state is
detached at each segment boundary: truncation) and keeps the new state for the next call. Under Entropy-SGD
the closure is called once per inner step, so the state is carried across inner and outer steps alike: the
state a segment starts from was computed by the weights of the previous call, which inside the inner loop are
the perturbed weights x' (and, across an outer step, the last x' of the previous step), not the outer weights
x. The state is a summary of the text read so far, not a parameter: x' perturbs the weights that read the
text, and the state follows the chain of weights that actually read it, as it would under SGD. Each pass over
the data starts the rows at a seeded offset in [0, bptt) (the seed and the pass number: the same for every
optimizer) with a zero state. ``examples`` counts tokens predicted, so effective epochs are tokens over the
training tokens.

Evaluation (:func:`evaluate_text`): the block is cut into ``EVAL_ROWS`` contiguous rows and each is read from a
zero state to its end, carrying the state through segments of ``EVAL_SEGMENT`` tokens; the first tokens of each
row have less context, which costs a few bits per row (about 1e-3 bits per token on a 20,000-token block).
"""

from __future__ import annotations

import contextlib
import math
import sys
from typing import Any

import torch
from torch import Tensor, nn

from localentropy.data.text import TokenStream
from localentropy.experiments.core.seeds import stable_seed
from localentropy.experiments.training.precision import Precision

EVAL_ROWS = 16
EVAL_SEGMENT = 1000
LN2 = math.log(2.0)
# the largest loss (nats) whose exponential is a float: beyond it the perplexity is not representable (results
# files hold no infinity), so it is recorded as null
MAX_LOG_PERPLEXITY = math.log(sys.float_info.max)


def clip_gradients(model: nn.Module, max_norm: float | None) -> None:
    """Clip the gradient of all parameters to ``max_norm`` in L2 norm (inside the closure: every inner step too)."""
    if max_norm is not None:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)


class TextStream:
    """The closure of a language model: the next ``bptt`` tokens of each of ``batch_size`` text rows, resumable."""

    def __init__(
        self,
        model: nn.Module,
        data: TokenStream,
        batch_size: int,
        bptt: int,
        seed: int,
        clip_grad_norm: float | None = None,
        precision: Precision | None = None,
    ) -> None:
        self.model, self.data, self.batch_size, self.bptt, self.seed = model, data, batch_size, bptt, seed
        self.precision = precision  # autocast and, for float16, the loss scaling (precision.py); None: float32
        self.clip_grad_norm = clip_grad_norm
        self.row_length = (len(data) - bptt) // batch_size  # room for an offset below bptt
        if self.row_length < 1:
            raise ValueError(
                f"the training text ({len(data)} tokens) is too short for batch_size {batch_size} rows and bptt {bptt}"
            )
        self.data_epoch = 0
        self.position = 0
        self.calls = 0
        self.examples = 0
        self.hidden: tuple[Tensor, Tensor] | None = None
        self._rows: tuple[Tensor, Tensor] | None = None
        self._segment: tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None] | None = None

    @property
    def batches_per_pass(self) -> int:
        return math.ceil(self.row_length / self.bptt)

    def _pass_rows(self) -> tuple[Tensor, Tensor]:
        if self._rows is None:
            generator = torch.Generator().manual_seed(stable_seed(self.seed, "text offset", self.data_epoch))
            offset = int(torch.randint(self.bptt, (1,), generator=generator))
            n = self.batch_size * self.row_length
            tokens = self.data.tokens
            self._rows = (
                tokens[offset : offset + n].view(self.batch_size, self.row_length),
                tokens[offset + 1 : offset + n + 1].view(self.batch_size, self.row_length),
            )
        return self._rows

    def _next(self) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        if self.position >= self.batches_per_pass:  # a new pass: new offset, zero state
            self.data_epoch, self.position, self._rows, self.hidden = self.data_epoch + 1, 0, None, None
        x, y = self._pass_rows()
        start = self.position * self.bptt
        self.position += 1
        return x[:, start : start + self.bptt], y[:, start : start + self.bptt], self.hidden

    def __call__(self, reuse: bool = False) -> Tensor:
        if not reuse or self._segment is None:
            self._segment = self._next()
        inputs, targets, state = self._segment
        self.model.zero_grad(set_to_none=False)
        with torch.enable_grad():
            with contextlib.nullcontext() if self.precision is None else self.precision.autocast():
                logits, new_state = self.model(inputs, state)
                loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            if self.precision is None:
                loss.backward()
            else:
                self.precision.backward(loss)
        clip_gradients(self.model, self.clip_grad_norm)
        self.hidden = (new_state[0].detach(), new_state[1].detach())  # truncation: no gradient into the past
        self.calls += 1
        self.examples += int(targets.numel())
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {
            "data_epoch": self.data_epoch,
            "position": self.position,
            "calls": self.calls,
            "examples": self.examples,
            "hidden": None if self.hidden is None else list(self.hidden),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_epoch, self.position = int(state["data_epoch"]), int(state["position"])
        self.calls, self.examples = int(state["calls"]), int(state["examples"])
        hidden = state.get("hidden")
        self.hidden = None if hidden is None else (hidden[0], hidden[1])
        self._rows, self._segment = None, None


@torch.no_grad()
def evaluate_text(model: nn.Module, data: TokenStream | None) -> tuple[float | None, float | None]:
    """(mean cross-entropy in nats per token, next-token error rate) in eval mode, the state carried per row."""
    if data is None or len(data) == 0:
        return None, None
    rows = max(1, min(EVAL_ROWS, len(data) // 100))
    length = len(data) // rows
    x = data.tokens[: rows * length].view(rows, length)
    y = data.tokens[1 : rows * length + 1].view(rows, length)
    was_training = model.training
    model.eval()
    total, wrong, state = 0.0, 0, None
    try:
        for start in range(0, length, EVAL_SEGMENT):
            logits, state = model(x[:, start : start + EVAL_SEGMENT], state)
            target = y[:, start : start + EVAL_SEGMENT].reshape(-1)
            flat = logits.reshape(-1, logits.shape[-1])
            total += float(nn.functional.cross_entropy(flat, target, reduction="sum"))
            wrong += int((flat.argmax(1) != target).sum())
    finally:
        model.train(was_training)
    loss = total / (rows * length)
    return (loss if math.isfinite(loss) else None), wrong / (rows * length)


def bits(loss: float | None) -> float | None:
    """Nats per token to bits per token."""
    return None if loss is None else loss / LN2


def text_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Bits per token of each split, from a row's losses (nats)."""
    return {f"{split}_bits_per_char": bits(row.get(f"{split}_loss")) for split in ("train", "val", "test")}


def text_final(last: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The final text metrics: test and validation bits per token, test perplexity, the source's entropy rate and
    the held-out bits of the count model of the source's order fitted on the training block (Markov sources)."""
    loss = last.get("test_loss")
    return {
        "bits_per_char": bits(loss),
        "val_bits_per_char": bits(last.get("val_loss")),
        "perplexity": None if loss is None or loss > MAX_LOG_PERPLEXITY else math.exp(loss),
        "entropy_rate": info.get("entropy_rate_bits"),
        "count_model_bits": info.get("count_model_bits"),
    }
