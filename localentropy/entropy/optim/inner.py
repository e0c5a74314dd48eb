r"""Each trainable parameter group's share of the Entropy-SGD inner loop, as an object chosen once per group.

An outer step of :class:`~localentropy.entropy.optim.local_entropy.EntropyOptimizer` runs, for every group with
trainable parameters x (the anchor) and chain x', L inner steps of

    grad U(x') = grad f(x') + weight_decay x' + gamma (x' - x),    x' <- sampler step,    mu <- average of x',

and then hands the base optimizer the direction scale (x - mu). :class:`GroupLoop` is that work for one group:

* ``begin(averaging, keep)``: mu starts at 0 (uniform averaging) or at x'; the sampler restarts (momenta zeroed in
  place) unless ``keep`` (a warm start keeps them);
* ``update(grads, generator, gamma=..., weight_decay=..., averaging=...)``: one inner step with the group's
  gradients at x';
* ``finish(inner_steps, averaging, scale)``: the direction scale (x - mu) written into the gradients.

Two implementations, picked once when the group's loop is built, as ``torch.optim`` picks its single-tensor,
multi-tensor or fused path (:meth:`GroupLoops.loop`, by the rule of :func:`chunked`):

* :class:`SerialLoop`: ``torch._foreach_*`` over the group's tensors, noise from the optimizer's generator (noise
  stream ``"serial-v0"``, Rademacher noise, CUDA, and groups below ``SERIAL_BELOW`` entries);
* :class:`ChunkedLoop`: the group cut into fixed chunks, each with its own generator, updated on all cores
  (noise stream ``"chunked-v1"``, Gaussian noise on a CPU; :mod:`localentropy.entropy.optim.chunks`).

A loop fits its group while the sampler object, the parameter tensors and their storage, dtype and shape stay the
same; :class:`GroupLoops` rebuilds it otherwise (``module.double()`` and ``.to()`` swap a parameter's data in place,
a parameter may stop receiving gradients). The chunk generators outlive a rebuild: they belong to the group's noise
stream and go into ``state_dict``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, NamedTuple

import torch
from torch import Tensor

from localentropy.entropy.optim.chunks import (
    SERIAL_BELOW,
    Slice,
    chunk_generators,
    chunk_plan,
    inner_update,
    run_chunks,
    run_pipelined,
    slice_views,
)
from localentropy.samplers import Sampler, SamplerContractError

Layout = list[tuple[int, torch.dtype, torch.Size]]


class Direction(NamedTuple):
    """What the last inner update needs to write the direction too: L, the scale (None: x - mu), and whether it
    may also put the parameters back at x (not with a warm start, which keeps x'_L)."""

    inner_steps: int
    scale: float | None
    restore: bool


def layout(*lists: list[Tensor] | None) -> Layout:
    """Where each tensor's data lives, its dtype and shape: what a loop's views and buffers were made for."""
    return [(t.data_ptr(), t.dtype, t.shape) for tensors in lists if tensors is not None for t in tensors]


class GroupLoop(ABC):
    """One group's inner loop: its parameters (the chain x' during the loop), the anchor x, the running average mu,
    and, for the authors' coupling after the momentum buffer, the ``force`` buffers (``after_momentum``)."""

    def __init__(self, sampler: Sampler, params: list[Tensor], anchor: list[Tensor], after_momentum: bool) -> None:
        self.sampler = sampler
        self.params = params
        self.anchor = anchor
        self.average = [torch.empty_like(p) for p in params]
        self.force = [torch.empty_like(p) for p in params] if after_momentum else None
        self.layout = layout(params, anchor)
        self.restored = False  # whether the last update put the parameters back at x (the optimizer then does not)
        self.average_from_anchor = False  # the next update starts mu from the anchor (begin made no copy)

    def fits(self, sampler: Sampler, params: list[Tensor], anchor: list[Tensor]) -> bool:
        """Whether this loop was built for this sampler object and exactly these tensors, in the same storage."""
        return (
            sampler is self.sampler
            and len(params) == len(self.params)
            and all(a is b for a, b in zip(params, self.params, strict=True))
            and layout(params, anchor) == self.layout
        )

    def begin(self, averaging: str | float, keep: bool) -> None:
        """Start an outer step: mu at 0 (``"uniform"``) or at x'; the sampler restarted unless ``keep`` (a warm
        start). Without ``keep`` the chain starts at x: the parameters equal the anchor, so weighted averaging
        starts mu at the anchor in the first update (``average_start``) instead of a copy of x here."""
        self.average_from_anchor = averaging != "uniform" and not keep
        if averaging == "uniform":
            torch._foreach_zero_(self.average)
        elif keep:
            torch._foreach_copy_(self.average, self.params)
        if not keep:
            self.reset()

    def average_start(self) -> list[Tensor] | None:
        """For an update: the tensors mu starts from in it (the anchor, once, after ``begin``), else None."""
        start = self.anchor if self.average_from_anchor else None
        self.average_from_anchor = False
        return start

    @abstractmethod
    def reset(self) -> None:
        """The sampler's state as ``init`` makes it, reusing its buffers (momenta zeroed in place)."""

    @abstractmethod
    def update(
        self,
        grads: list[Tensor],
        generator: torch.Generator,
        *,
        gamma: float,
        weight_decay: float,
        averaging: str | float,
        direction: Direction | None = None,
    ) -> None:
        """One inner step given the gradients of f at x' (overwritten with grad U); ``generator`` is the
        optimizer's (the serial loop draws from it, the chunked loop from its own chunk generators). ``direction``
        (on the last inner step) lets a loop write the direction as it goes; :meth:`finish` then writes what is
        left."""

    def average_finite(self, flag: Tensor) -> None:
        """Fold "mu is not finite" (its norm overflowed or is NaN) into the on-device ``flag``."""
        norms = torch._foreach_norm(self.average)
        torch.logical_or(flag, ~torch.isfinite(torch.stack(norms)).all(), out=flag)

    def finish(self, *, inner_steps: int, averaging: str | float, scale: float | None) -> None:
        """Write scale (x - mu) into the parameters' gradients (``scale=None``: x - mu)."""
        if averaging == "uniform":
            torch._foreach_mul_(self.average, 1.0 / inner_steps)
        grads = [p.grad for p in self.params]
        for grad, anchor, average in zip(grads, self.anchor, self.average, strict=True):
            torch.sub(anchor, average, out=grad)  # one pass, the numbers of a copy then a subtraction
        if scale is not None:
            torch._foreach_mul_(grads, scale)


class SerialLoop(GroupLoop):
    """The inner loop on the group's tensors as they are: one sampler state, noise from the optimizer's generator."""

    def __init__(self, sampler: Sampler, params: list[Tensor], anchor: list[Tensor], after_momentum: bool) -> None:
        super().__init__(sampler, params, anchor, after_momentum)
        self.state = sampler.init(params)

    def reset(self) -> None:
        self.state = self.sampler.reset(self.state)

    def update(
        self,
        grads: list[Tensor],
        generator: torch.Generator,
        *,
        gamma: float,
        weight_decay: float,
        averaging: str | float,
        direction: Direction | None = None,
        noise: list[Tensor] | None = None,
    ) -> None:
        """See :meth:`GroupLoop.update`; ``noise`` (shaped like the parameters) is used instead of a draw; the
        direction is written by :meth:`finish`."""
        self.state = inner_update(
            self.sampler,
            self.state,
            self.params,
            grads,
            self.anchor,
            self.average,
            self.force,
            generator=generator,
            noise=noise,
            average_start=self.average_start(),
            gamma=gamma,
            weight_decay=weight_decay,
            averaging=averaging,
        )


class ChunkedLoop(GroupLoop):
    """The inner loop cut into the chunks of ``plan``, chunk k drawing its Gaussian noise from ``generators[k]``.

    An ``elementwise`` sampler (:class:`~localentropy.samplers.Sampler`) gets one state per chunk; the pool's workers
    draw each chunk's noise into a buffer one chunk long and apply the whole inner update to that chunk, with no
    buffer of the group's size for the noise. Draws and update passes are separate tasks, so that one worker's
    memory-bound passes run while another draws (:func:`~localentropy.entropy.optim.chunks.run_pipelined`). Any
    other sampler gets the noise drawn chunk-parallel into one buffer of the group's size and steps on the whole
    group.
    In both cases the sampler is handed the noise (``noise=``) and must draw none itself; the first noisy update
    after a build checks that torch's global generator was left alone and raises
    :class:`~localentropy.samplers.SamplerContractError` if not.
    """

    def __init__(
        self,
        sampler: Sampler,
        params: list[Tensor],
        anchor: list[Tensor],
        after_momentum: bool,
        generators: list[torch.Generator],
        plan: list[list[Slice]],
    ) -> None:
        super().__init__(sampler, params, anchor, after_momentum)
        self.plan, self.generators = plan, generators
        self.sizes = [sum(stop - start for _, start, stop in chunk) for chunk in plan]
        self.elementwise = sampler.elementwise and all(p.is_contiguous() for p in params)
        self.param_views = [slice_views(params, s) for s in plan]
        self.anchor_views = [slice_views(anchor, s) for s in plan]
        self.average_views = [slice_views(self.average, s) for s in plan]
        self.force_views = None if self.force is None else [slice_views(self.force, s) for s in plan]
        self.checked = False  # whether an update has shown that the sampler draws no noise of its own
        # the elementwise path folds the last per-outer-step passes into the chunk workers, while a chunk is in
        # cache: the direction, mu's norm and putting x back, into the last update
        self.written: list[Tensor] | None = None  # the last update wrote the direction; mu's norm per chunk slice
        if self.elementwise:
            self.states: list[Any] = [sampler.init(views) for views in self.param_views]
            self.slots: dict[int, Tensor] = {}  # the noise buffers by slot (run_pipelined), one chunk long each
        else:
            flat = torch.empty(sum(self.sizes), dtype=params[0].dtype)
            self.noise = [n.view(p.shape) for n, p in zip(flat.split([p.numel() for p in params]), params, strict=True)]
            self.chunk_noise = flat.split(self.sizes)
            self.states = [sampler.init(params)]

    def reset(self) -> None:
        self.states = [self.sampler.reset(state) for state in self.states]

    def begin(self, averaging: str | float, keep: bool) -> None:
        self.written, self.restored = None, False
        super().begin(averaging, keep)

    def average_finite(self, flag: Tensor) -> None:
        if self.written is None:
            super().average_finite(flag)
        else:  # the norms of mu's chunk slices, taken by the last update
            torch.logical_or(flag, ~torch.isfinite(torch.stack(self.written)).all(), out=flag)

    def finish(self, *, inner_steps: int, averaging: str | float, scale: float | None) -> None:
        if self.written is None:
            super().finish(inner_steps=inner_steps, averaging=averaging, scale=scale)

    def draw(self, k: int, slot: int = 0) -> list[Tensor]:
        """Chunk k's noise, one ``normal_`` with its generator, shaped like chunk k's parameter views; on the
        elementwise path it goes into noise buffer number ``slot``, which ``run_pipelined`` gives to one draw at a
        time and frees once the chunk's update is done."""
        if not self.elementwise:
            self.chunk_noise[k].normal_(generator=self.generators[k])
            return slice_views(self.noise, self.plan[k])
        buffer = self.slots.get(slot)
        if buffer is None:
            buffer = self.slots[slot] = torch.empty(max(self.sizes), dtype=self.params[0].dtype)
        flat = buffer[: self.sizes[k]]
        flat.normal_(generator=self.generators[k])
        views, offset = [], 0
        for view in self.param_views[k]:
            views.append(flat[offset : offset + view.numel()].view(view.shape))
            offset += view.numel()
        return views

    def update(
        self,
        grads: list[Tensor],
        generator: torch.Generator,
        *,
        gamma: float,
        weight_decay: float,
        averaging: str | float,
        direction: Direction | None = None,
    ) -> None:
        options = {"gamma": gamma, "weight_decay": weight_decay, "averaging": averaging}
        noisy = self.sampler.temperature > 0
        watch = noisy and not self.checked
        before = torch.random.get_rng_state() if watch else None
        if self.elementwise:
            self._update_chunks(grads, noisy, options, direction)
        else:
            if noisy:
                run_chunks(self.draw, len(self.plan))
            self.states[0] = inner_update(
                self.sampler,
                self.states[0],
                self.params,
                grads,
                self.anchor,
                self.average,
                self.force,
                generator=None,
                noise=self.noise if noisy else None,
                average_start=self.average_start(),
                **options,
            )
        if watch:
            if not torch.equal(before, torch.random.get_rng_state()):
                raise SamplerContractError(
                    f"{type(self.sampler).__name__}.step drew from torch's global generator on the chunked path, "
                    "where the caller supplies the noise (noise=...): its step must use the noise it is given and "
                    "draw none itself when noise= is passed (the sampler contract, docs/samplers.md, 'Writing your "
                    "own sampler'); or build the optimizer with noise_stream='serial-v0'"
                )
            self.checked = True

    def _update_chunks(
        self, grads: list[Tensor], noisy: bool, options: dict[str, Any], direction: Direction | None
    ) -> None:
        force_views, start = self.force_views, self.average_start()

        def work(k: int, noise: list[Tensor] | None = None) -> list[Tensor]:
            grad, anchor, average = slice_views(grads, self.plan[k]), self.anchor_views[k], self.average_views[k]
            self.states[k] = inner_update(
                self.sampler,
                self.states[k],
                self.param_views[k],
                grad,
                anchor,
                average,
                None if force_views is None else force_views[k],
                generator=None,
                noise=noise,
                average_start=None if start is None else anchor,
                **options,
            )
            if direction is None:
                return []
            # the last step: the direction scale (x - mu) into the gradients and mu's norm, while in cache
            if options["averaging"] == "uniform":
                torch._foreach_mul_(average, 1.0 / direction.inner_steps)
            norms = list(torch._foreach_norm(average))
            for g, a, m in zip(grad, anchor, average, strict=True):
                torch.sub(a, m, out=g)
            if direction.scale is not None:
                torch._foreach_mul_(grad, direction.scale)
            if direction.restore:
                torch._foreach_copy_(self.param_views[k], anchor)
            return norms

        # with noise, the workers run out of phase: some run a chunk's update passes while the others draw
        norms = run_pipelined(self.draw, work, len(self.plan)) if noisy else run_chunks(work, len(self.plan))
        if direction is not None:
            self.written = [n for chunk in norms for n in chunk]
            self.restored = direction.restore


def chunked(noise_stream: str, sampler: Sampler, params: list[Tensor]) -> bool:
    """Whether a group runs chunk by chunk: stream ``"chunked-v1"``, Gaussian noise, on a CPU, with at least
    ``SERIAL_BELOW`` entries. Otherwise it draws from the optimizer's generator as the serial stream does: CUDA's
    Philox draw is parallel already, below ``SERIAL_BELOW`` entries threads do not pay, and Rademacher bits cost a
    tenth of a Gaussian draw, so chunking them does not pay either (docs/performance.md)."""
    return (
        noise_stream == "chunked-v1"
        and sampler.noise == "gaussian"
        and params[0].device.type == "cpu"
        and sum(p.numel() for p in params) >= SERIAL_BELOW
    )


class GroupLoops:
    """The optimizer's group loops by trainable-group index, the chunk generators of its noise stream
    (``version``), and the warm chains made in the last step that go into the state after the base step."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.loops: dict[int, GroupLoop] = {}
        self.generators: dict[int, list[torch.Generator]] = {}
        self.new_chains: list[tuple[Tensor, Tensor]] = []

    def loop(
        self,
        index: int,
        sampler: Sampler,
        params: list[Tensor],
        anchor: list[Tensor],
        *,
        after_momentum: bool,
        parent: torch.Generator,
    ) -> GroupLoop:
        """Group ``index``'s loop at ``params``: the one kept from the last step if it still fits, else a new one.

        A new chunked loop takes the group's chunk generators; the first one, or one whose number of chunks
        changed, gets new generators from one draw of ``parent`` (the optimizer's generator).
        """
        kept = self.loops.get(index)
        if kept is not None and kept.fits(sampler, params, anchor):
            return kept
        built: GroupLoop
        if chunked(self.version, sampler, params):
            plan = chunk_plan([p.numel() for p in params])
            generators = self.generators.get(index)
            if generators is None or len(generators) != len(plan):
                generators = chunk_generators(parent, len(plan))
                self.generators[index] = generators
            built = ChunkedLoop(sampler, params, anchor, after_momentum, generators, plan)
        else:
            built = SerialLoop(sampler, params, anchor, after_momentum)
        self.loops[index] = built
        return built

    def forget(self) -> None:
        """Drop the loops (after an interrupted step: no half-advanced momenta); the chunk generators are kept."""
        self.loops.clear()
        self.new_chains.clear()

    def chunk_generators(self) -> list[torch.Generator]:
        """Every chunk generator, by group index then chunk."""
        return [g for index in sorted(self.generators) for g in self.generators[index]]

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "chunk_generators": {index: [g.get_state() for g in gens] for index, gens in self.generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the chunk generators (a state without them, from an older version, leaves none); the loops are
        rebuilt at the next step, so the sampler restarts there (momenta are not in ``state_dict``)."""
        self.forget()
        self.generators = {}
        if state is None:
            return
        if state["version"] != self.version:
            raise ValueError(
                f"this state was saved with noise_stream={state['version']!r}, the optimizer uses "
                f"{self.version!r}: build it with noise_stream={state['version']!r} to resume exactly"
            )
        for index, states in state["chunk_generators"].items():
            generators = []
            for generator_state in states:
                generator = torch.Generator()
                generator.set_state(generator_state)
                generators.append(generator)
            self.generators[int(index)] = generators
