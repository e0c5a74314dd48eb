"""The local learning coefficient (Lau et al. 2023) estimated with the package's samplers, with exact answers.

* :func:`estimate_llc` (a potential on [chains, d] tensors) and :func:`estimate_llc_model` (a torch model, a loss
  and a data loader, minibatch gradients; :func:`devinterp_settings` maps devinterp's SGLD parameters);
* :mod:`localentropy.llc.toys`: 2-D potentials whose finite-nbeta LLC comes from quadrature;
* :mod:`localentropy.llc.dln`: deep linear networks, Aoyagi's (2024) learning coefficient, and the exact finite-nbeta
  LLC of the scalar networks (:func:`scalar_network_exact`);
* :mod:`localentropy.llc.bias`: each sampler's bias against the exact values (benchmarks/llc_bias.py).
"""

from localentropy.llc.dln import AoyagiLLC, DeepLinearPotential, ScalarNetworkExact, aoyagi_llc, scalar_network_exact
from localentropy.llc.estimate import LLCResult, estimate_llc
from localentropy.llc.model import default_nbeta, devinterp_settings, estimate_llc_model
from localentropy.llc.toys import TOYS, Crossing, Quartic, Regular, exact_llc, exact_local_free_energy, toy

__all__ = [
    "TOYS",
    "AoyagiLLC",
    "Crossing",
    "DeepLinearPotential",
    "LLCResult",
    "Quartic",
    "Regular",
    "ScalarNetworkExact",
    "aoyagi_llc",
    "default_nbeta",
    "devinterp_settings",
    "estimate_llc",
    "estimate_llc_model",
    "exact_llc",
    "exact_local_free_energy",
    "scalar_network_exact",
    "toy",
]
