"""The sampler contract that every inner-loop sampler follows, built-in or user-written.

A sampler targets the density proportional to exp(-U(x) / T) for a potential U and a temperature T >= 0.
It is a small object in the optax / blackjax style:

* constructed from keyword hyperparameters, validated once, there;
* ``init(position)`` returns a state, a plain ``NamedTuple`` whose ``position`` field is the current point;
* ``step(state, grad, generator=None, *, noise=None)`` advances the state given ``grad``, the gradient of U
  at ``state.position``, and returns the new state;
* ``reset(state)`` returns the state that ``init(state.position)`` would, reusing the state's buffers (momenta
  zeroed in place): the Entropy-SGD optimizers restart their sampler this way every outer step.

Built-in samplers update ``state.position`` (and their other buffers) **in place** and return a state that
shares those tensors: ``init`` does not copy, so a network's parameters can be the position. Clone first
if you need the starting point kept. Every subclass's ``step`` runs under ``torch.no_grad()``.

A position is either one tensor whose leading dimension indexes independent chains, shape
``(n_chains, ...)``, or a list of tensors (a network's parameters). Both go through the same code path
(a list of tensors updated with ``torch._foreach_*``), so given the same noise they agree exactly.

``noise`` selects the distribution of the injected noise: ``"gaussian"`` (N(0, 1)) or ``"rademacher"``
(+-1 with equal probability: same mean and variance, enough for Langevin schemes of weak order one).

**Where the noise comes from.** ``step`` draws its noise from the caller's ``generator`` into the state's noise
buffers, made by :func:`noise_buffers` in ``init`` and allocated at their first draw. When the caller passes
``noise=`` (tensors shaped like the position, mean 0 and variance 1), ``step`` uses exactly that noise and draws
nothing: no call on ``generator``, none on torch's global generator. The Entropy-SGD optimizers rely on this: on
their chunked path (noise stream "chunked-v1", Gaussian noise, large groups on a CPU) each chunk of the parameters
has its own generator, the optimizer draws every chunk's noise itself and passes it with ``noise=``, and
``generator`` is None. A sampler that draws anyway there is refused with :class:`SamplerContractError`. At T = 0
no noise is drawn and each sampler is its matching optimiser.

**What ``init`` may allocate.** Its own buffers (momenta, preconditioners, thermostats), shaped like the position.
Noise buffers come from :func:`noise_buffers`, which allocates nothing until the first draw, so a state whose
``step`` is always given ``noise=`` (every chunk's state on the chunked path) never holds them.

**Opting in to the chunked path: ``elementwise = True``.** A sampler declares it when each coordinate's update
reads only that coordinate's position, gradient, noise and buffers (no sum over coordinates, no accept/reject of
the whole chain). The optimizers then cut the position into chunks, call ``init`` once per chunk (the position a
list of views of the parameters, some of them flat slices of a tensor) and step the chunks on several threads at
once, so ``step`` must not touch shared mutable state other than its own chunk's. A sampler that does not declare
it still gets its noise with ``noise=`` on that path, drawn in parallel, and steps on the whole group.

Rademacher noise is drawn as packed random bits: one ``random_`` call fills ceil(n / 64) int64 words with 64
random bits each, and a 256 x 8 table maps each byte to eight +-1 values (one ``index_select``): about a tenth
of the cost of ``normal_`` on a CPU (docs/performance.md). Parameter j of the concatenated buffers gets bit j
of the stream, so the draw is the same however the buffers are laid out. :func:`noise_buffers` keeps the
words, the byte indices and the table with the buffers, so ``step`` allocates nothing after its first draw; a
plain list of buffers (a user-written sampler's) gets the same numbers through temporary scratch.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import torch
from torch import Tensor

from localentropy._checks import check_choice, check_nonnegative

Position = Tensor | list[Tensor]
NOISE_KINDS = ("gaussian", "rademacher")


def as_tensor_list(value: Position, field: str = "position") -> list[Tensor]:
    """View a position-like value (one tensor or a list/tuple of tensors) as a list of tensors."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(t, Tensor) for t in value):
        return list(value)
    raise TypeError(f"{field} must be a tensor or a non-empty list of tensors, got {type(value).__name__}")


def check_like(value: Position, reference: list[Tensor], field: str) -> list[Tensor]:
    """``value`` as a tensor list with the same number of tensors and shapes as ``reference``."""
    tensors = as_tensor_list(value, field)
    if len(tensors) != len(reference) or any(t.shape != r.shape for t, r in zip(tensors, reference, strict=False)):
        got = [tuple(t.shape) for t in tensors]
        want = [tuple(r.shape) for r in reference]
        raise ValueError(f"{field} must match the position's shapes {want}, got {got}")
    return tensors


def generator_on(device: torch.device | str, parent: torch.Generator) -> torch.Generator:
    """A generator for noise drawn on ``device``: ``parent`` itself when it lives on that device type, else a new
    generator there seeded from one draw of ``parent`` (deterministic: the same parent state gives the same stream).

    Samplers draw on their tensors' device from the caller's generator, and torch refuses a CPU generator for CUDA
    tensors (and a CUDA one for a CPU ``randperm``, e.g. a shuffling DataLoader): a caller that holds one seeded CPU
    generator hands the samplers ``generator_on(model_device, generator)``.
    """
    device = torch.device(device)
    if parent.device.type == device.type:
        return parent
    seed = int(torch.randint(0, 2**62, (), dtype=torch.int64, generator=parent, device=parent.device))
    return torch.Generator(device=device).manual_seed(seed)


def draw_noise(buffers: list[Tensor], kind: str, generator: torch.Generator | None) -> list[Tensor]:
    """Fill ``buffers`` in place with i.i.d. noise of mean 0 and variance 1 and return them.

    Gaussian: ``normal_`` on each buffer in turn. Rademacher: packed random bits (see the module docstring),
    through the scratch of a :class:`NoiseBuffers` (from :func:`noise_buffers`) when ``buffers`` is one, else
    through temporary scratch with the same numbers.
    """
    scratch = None
    if isinstance(buffers, NoiseBuffers):
        scratch = buffers.rademacher
        buffers = buffers.tensors  # a plain list: torch._foreach_* parse a list subclass ~2 us slower
    if kind == "gaussian":
        for buffer in buffers:
            buffer.normal_(generator=generator)
        return buffers
    if scratch is None:
        scratch = RademacherScratch(buffers)
    scratch.fill(generator)
    return buffers


BITS_PER_WORD = 64


class RademacherScratch:
    """What drawing Rademacher noise into a fixed set of buffers needs, allocated once.

    ``flat`` holds the noise of every buffer, concatenated and padded to a multiple of 64 entries; when the
    buffers are views of it (as :func:`noise_buffers` makes them) ``fill`` writes them directly, otherwise it
    copies the values out. ``words`` (int64) receive the random bits, ``index`` (int32) their bytes, and
    ``table`` (256 x 8, the buffers' dtype) maps byte b to (+-1 for bit k of b, k = 0..7).
    """

    def __init__(self, buffers: list[Tensor], flat: Tensor | None = None) -> None:
        first = buffers[0]
        n = sum(b.numel() for b in buffers)
        n_words = max(1, -(-n // BITS_PER_WORD))
        if flat is None:
            flat = torch.empty(n_words * BITS_PER_WORD, dtype=first.dtype, device=first.device)
        self.buffers = buffers
        self.flat = flat
        self.views = self._views_of_flat(buffers, flat)
        self.words = torch.empty(n_words, dtype=torch.int64, device=first.device)
        self.index = torch.empty(n_words * 8, dtype=torch.int32, device=first.device)
        bits = torch.arange(8, device=first.device)
        table = (torch.arange(256, device=first.device).unsqueeze(1) >> bits) & 1
        self.table = (2 * table - 1).to(first.dtype)

    @staticmethod
    def _views_of_flat(buffers: list[Tensor], flat: Tensor) -> bool:
        """Whether ``buffers`` are consecutive views of ``flat`` from its start."""
        offset = 0
        for b in buffers:
            if b.numel() == 0 and b.dtype == flat.dtype:  # nothing to write (and no meaningful address)
                continue
            if (
                b.dtype != flat.dtype
                or b.device != flat.device
                or not b.is_contiguous()
                or b.untyped_storage().data_ptr() != flat.untyped_storage().data_ptr()
                or b.data_ptr() != flat.data_ptr() + offset * flat.element_size()
            ):
                return False
            offset += b.numel()
        return True

    def fill(self, generator: torch.Generator | None) -> None:
        # 64 random bits per word: the full int64 range (random_() alone leaves the sign bit 0)
        self.words.random_(-(2**63), None, generator=generator)
        self.index.copy_(self.words.view(torch.uint8))
        torch.index_select(self.table, 0, self.index, out=self.flat.view(-1, 8))
        if not self.views:
            offset = 0
            for b in self.buffers:
                b.copy_(self.flat[offset : offset + b.numel()].view(b.shape))
                offset += b.numel()


class NoiseBuffers(list):
    """A sampler state's noise buffers: a list of tensors shaped like the position (views of one flat tensor when
    they share a dtype and device), allocated at the first use (a draw, indexing, iteration), never before.

    ``rademacher`` is the scratch that Rademacher noise needs (None for Gaussian noise), and ``tensors`` the same
    tensors as a plain list (what :func:`draw_noise` returns, for the ``torch._foreach_*`` calls: they parse a list
    subclass ~2 us slower). A state whose ``step`` is always given ``noise=`` never allocates them.
    """

    def __init__(self, positions: list[Tensor], kind: str) -> None:
        super().__init__()
        self._shapes_of = positions
        self.kind = kind
        self._tensors: list[Tensor] | None = None
        self._rademacher: RademacherScratch | None = None

    @property
    def allocated(self) -> bool:
        return self._tensors is not None

    @property
    def tensors(self) -> list[Tensor]:
        if self._tensors is None:
            self._allocate()
        return self._tensors  # type: ignore[return-value]

    @property
    def rademacher(self) -> RademacherScratch | None:
        if self._tensors is None:
            self._allocate()
        return self._rademacher

    def _allocate(self) -> None:
        positions, kind = self._shapes_of, self.kind
        first = positions[0]
        uniform = all(p.dtype == first.dtype and p.device == first.device for p in positions)
        if kind != "rademacher" or not uniform:
            tensors = [torch.empty_like(p) for p in positions]
            scratch = RademacherScratch(tensors) if kind == "rademacher" else None
        else:
            n = sum(p.numel() for p in positions)
            words = max(1, -(-n // BITS_PER_WORD))
            flat = torch.empty(words * BITS_PER_WORD, dtype=first.dtype, device=first.device)
            tensors, offset = [], 0
            for p in positions:
                tensors.append(flat[offset : offset + p.numel()].view(p.shape))
                offset += p.numel()
            scratch = RademacherScratch(tensors, flat)
        self._tensors, self._rademacher = tensors, scratch
        self.extend(tensors)

    def __getitem__(self, index: Any) -> Any:
        return self.tensors[index]

    def __iter__(self) -> Any:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def noise_buffers(positions: list[Tensor], kind: str = "gaussian") -> NoiseBuffers:
    """Noise buffers shaped like ``positions``, with the scratch that noise of ``kind`` needs, allocated at their
    first use and kept from then on.

    With one dtype and device throughout, Rademacher buffers are consecutive views of one flat tensor (padded to a
    multiple of 64 entries), which the packed bits fill in one pass; otherwise they are separate tensors.
    """
    return NoiseBuffers(list(positions), kind)


class SamplerContractError(RuntimeError):
    """A sampler broke the contract of :mod:`localentropy.samplers.base` (e.g. drew noise when given ``noise=``)."""


class Sampler(ABC):
    """Base class of samplers. Subclasses store each constructor argument under the same attribute name.

    Capabilities are declared here, as class attributes a subclass overrides, and read by every caller (the
    estimators, the optimizers, the experiment runner, the benchmarks, the CLI) instead of probing the object:

    * ``gradients_per_step``: gradient evaluations per step, the caller's included (MALA: 2);
    * ``accepts_force``: ``step`` takes ``force=``, a term added outside the momentum buffer (MomentumSGLD);
    * ``needs_potential``: the constructor takes ``potential``, U itself, not only its gradient (MALA);
    * ``wraps_sampler``: the constructor takes another sampler (``sampler=``), e.g. Cyclical;
    * ``noises``: the noise kinds the ``noise`` hyperparameter accepts;
    * ``elementwise``: each coordinate's update reads only that coordinate's position, gradient, noise and buffers
      (no sum over coordinates, no accept/reject of the whole chain), so the sampler can be stepped on any split of
      the position into pieces with the same result: the Entropy-SGD optimizers use this to run it on all cores,
      one state per chunk, with the noise given (``noise=``; the module docstring states the rules).
    """

    name: ClassVar[str] = ""
    gradients_per_step: ClassVar[int] = 1
    accepts_force: ClassVar[bool] = False
    needs_potential: ClassVar[bool] = False
    wraps_sampler: ClassVar[bool] = False
    noises: ClassVar[tuple[str, ...]] = NOISE_KINDS
    elementwise: ClassVar[bool] = False
    temperature: float
    noise: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Samplers update positions in place and are never differentiated through: a network's parameters
        # (leaves that require grad) can be the position without the caller wrapping each step in no_grad.
        if "step" in cls.__dict__ and not getattr(cls.step, "_no_grad_wrapped", False):
            step = torch.no_grad()(cls.__dict__["step"])
            step._no_grad_wrapped = True  # type: ignore[attr-defined]
            cls.step = step  # type: ignore[method-assign]

    def _check_common(self, temperature: float, noise: str) -> None:
        self.temperature = check_nonnegative("temperature", temperature)
        self.noise = check_choice("noise", noise, self.noises)

    @abstractmethod
    def init(self, position: Position) -> Any:
        """A fresh state at ``position`` (not copied)."""

    def reset(self, state: Any) -> Any:
        """The state ``init(state.position)`` would return, reusing ``state``'s buffers where the sampler can.

        Built-in samplers zero their momenta in place and allocate nothing; this default calls ``init``.
        """
        return self.init(state.position)

    @abstractmethod
    def step(
        self,
        state: Any,
        grad: Position,
        generator: torch.Generator | None = None,
        *,
        noise: Position | None = None,
    ) -> Any:
        """Advance ``state`` one step given the gradient of U at ``state.position``."""

    @property
    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's keyword arguments as this sampler holds them."""
        names = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in names if name != "self"}

    def replace(self, **changes: Any) -> Self:
        """A new sampler of the same kind with some hyperparameters changed (validated again)."""
        return type(self)(**{**self.hyperparameters, **changes})

    def _noise(
        self,
        buffers: list[Tensor],
        positions: list[Tensor],
        noise: Position | None,
        generator: torch.Generator | None,
    ) -> list[Tensor]:
        if noise is not None:
            return check_like(noise, positions, "noise")
        return draw_noise(buffers, self.noise, generator)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.hyperparameters == other.hyperparameters  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.hyperparameters.items()))))


def new_buffers(positions: list[Tensor]) -> list[Tensor]:
    return [torch.empty_like(p) for p in positions]


def zero_buffers(positions: list[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(p) for p in positions]
