"""The chunk generators of an Entropy-SGD optimizer's trainable groups: made once, saved and restored.

See :mod:`localentropy.entropy.optim.chunks` for the stream itself ("chunked-v1"). Group ``index`` (its position
among the groups with trainable parameters) gets its generators the first time a chunked group with that many
chunks is seen, from one draw of the optimizer's generator; they are advanced from then on and go into
``state_dict``, so a resumed run draws exactly the noise the uninterrupted one would have.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from localentropy.entropy.optim.chunks import ChunkedGroup, chunk_generators, chunk_plan
from localentropy.samplers import Sampler


class NoiseStreams:
    """The chunked groups and their generators; ``version`` is the optimizer's ``noise_stream``."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.generators: dict[int, list[torch.Generator]] = {}
        self.groups: dict[int, ChunkedGroup] = {}

    def group(
        self,
        index: int,
        sampler: Sampler,
        params: list[Tensor],
        buffers: tuple[list[Tensor], list[Tensor], list[Tensor] | None],
        parent: torch.Generator,
        keep: bool = False,
    ) -> ChunkedGroup:
        """Trainable group ``index``'s chunked state at ``params`` (anchor, average, force ``buffers``), made once
        and reset (momenta zeroed) unless ``keep`` (a warm start)."""
        cached = self.groups.get(index)
        if cached is not None and cached.matches(sampler, params, buffers):
            if not keep:
                cached.reset()
            return cached
        plan = chunk_plan([p.numel() for p in params])
        generators = self.generators.get(index)
        if generators is None or len(generators) != len(plan):
            generators = chunk_generators(parent, len(plan))
            self.generators[index] = generators
        group = ChunkedGroup(sampler, params, *buffers, generators, plan)
        self.groups[index] = group
        return group

    def forget_groups(self) -> None:
        """Drop the chunked states (after an interrupted step: no half-advanced momenta); generators are kept."""
        self.groups.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "chunk_generators": {index: [g.get_state() for g in gens] for index, gens in self.generators.items()},
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the generators (a state without streams, from an older version, leaves none)."""
        self.groups.clear()
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
