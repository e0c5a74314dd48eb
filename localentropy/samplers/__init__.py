"""Inner-loop samplers behind one contract (see :mod:`localentropy.samplers.base`)."""

from localentropy.samplers.baoab import BAOAB, BAOABState
from localentropy.samplers.base import (
    NOISE_KINDS,
    Position,
    Sampler,
    SamplerContractError,
    as_tensor_list,
    draw_noise,
    generator_on,
    noise_buffers,
)
from localentropy.samplers.cyclical import Cyclical, CyclicalSchedule
from localentropy.samplers.divergence import SamplerDivergenceError, SampleResult
from localentropy.samplers.mala import MALA, MALAState
from localentropy.samplers.momentum_sgld import MomentumSGLD, MomentumSGLDState
from localentropy.samplers.psgld import PSGLD, PSGLDState
from localentropy.samplers.registry import (
    available_samplers,
    make_sampler,
    register_sampler,
    sampler_class,
    sampler_hyperparameters,
)
from localentropy.samplers.run import sample
from localentropy.samplers.sghmc import SGHMC, SGHMCState
from localentropy.samplers.sgld import SGLD, SGLDState
from localentropy.samplers.sgnht import SGNHT, SGNHTState

for _cls in (SGLD, SGHMC, PSGLD, MomentumSGLD, SGNHT, BAOAB, MALA, Cyclical):
    register_sampler(_cls.name, _cls)

__all__ = [
    "BAOAB",
    "MALA",
    "NOISE_KINDS",
    "PSGLD",
    "SGHMC",
    "SGLD",
    "SGNHT",
    "BAOABState",
    "Cyclical",
    "CyclicalSchedule",
    "MALAState",
    "MomentumSGLD",
    "MomentumSGLDState",
    "PSGLDState",
    "Position",
    "SGHMCState",
    "SGLDState",
    "SGNHTState",
    "SampleResult",
    "Sampler",
    "SamplerContractError",
    "SamplerDivergenceError",
    "as_tensor_list",
    "available_samplers",
    "draw_noise",
    "generator_on",
    "make_sampler",
    "noise_buffers",
    "register_sampler",
    "sample",
    "sampler_class",
    "sampler_hyperparameters",
]
