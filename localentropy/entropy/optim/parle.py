r"""Parle: replicas that each run Entropy-SGD and are pulled elastically toward their mean, one all-reduce per step.

Reference: P. Chaudhari, C. Baldassi, R. Zecchina, S. Soatto, A. Talwalkar, A. Oberman, "Parle: parallelizing
stochastic gradient descent", 2017 (arXiv:1707.00424).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from localentropy._checks import check_choice, check_int, check_nonnegative, check_positive
from localentropy.entropy.optim.base import Closure, _seed_from
from localentropy.entropy.optim.entropy_sgd import EntropySGD
from localentropy.entropy.optim.inner import GroupLoop
from localentropy.entropy.optim.local_entropy import _UNSET
from localentropy.entropy.presets import parle_preset
from localentropy.samplers import Sampler

__all__ = ["REDUCTIONS", "RHO_SCALES", "Parle", "ReplicaSyncError", "replica_seed", "scoped"]

REDUCTIONS = ("weights", "averages_then_weights")
RHO_SCALES = ("none", "steps_replicas")


class ReplicaSyncError(RuntimeError):
    """An all-reduce between the replicas failed: a replica stopped, or did not arrive before the group's timeout."""


def replica_seed(base_seed: int, rank: int) -> int:
    """The noise seed of replica ``rank``: numpy's ``SeedSequence`` of (``base_seed``, ``rank``), in [0, 2**62).

    Distinct ranks get independent streams even when every process drew the same ``base_seed`` (the usual case:
    each process calls ``torch.manual_seed`` with the run's seed).
    """
    words = np.random.SeedSequence(entropy=int(base_seed), spawn_key=(int(rank),)).generate_state(1, dtype=np.uint64)
    return int(words[0]) >> 2


def process_group_position(process_group: Any = None) -> tuple[int, int]:
    """(rank, world size) in ``process_group`` (the default group when None); (0, 1) without torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise ValueError("process_group was given but torch.distributed is not initialised (init_process_group)")
        return 0, 1
    return dist.get_rank(process_group), dist.get_world_size(process_group)


class Parle(EntropySGD):
    r"""Parle (Chaudhari, Baldassi, Zecchina, Soatto, Talwalkar, Oberman 2017, arXiv:1707.00424).

    n replicas x^1..x^n, one per process of a torch.distributed group (or a single one without a group). Replica a
    owns this optimizer; one ``step(closure)`` with gamma_t, rho_t the scoped couplings (below):

    1. inner loop (the Entropy-SGD engine, any registered sampler, L = ``inner_steps`` closure calls on replica a's
       own minibatches): y^a starts at x^a and samples U(y) = f(y) + gamma_t / 2 ||y - x^a||^2; its iterates are
       averaged into mu^a <- (1 - alpha) mu^a + alpha y^a (``averaging`` = alpha);
    2. outer step (SGD, optional ``momentum``/``nesterov``, on this direction):
       x^a <- x^a - lr * [s_t (x^a - mu^a) + rho_t (x^a - x_ref)], s_t = gamma_t (``outer_scale="gamma"``) or 1;
    3. synchronisation: x_ref <- (1/n) sum_a x^a, an all-reduce (SUM, then / n) of the parameters.

    So the x_ref of a step's elastic term is the mean of the replicas as they are at that step (the first step
    all-reduces once more to set it). The replicas communicate once per outer step, i.e. once per L gradient
    evaluations, instead of once per gradient as data-parallel SGD. After ``step``, :meth:`reference` is the model
    Parle trains (the paper evaluates x_ref).

    **The n = 1 identity.** With one replica x_ref = x, so rho_t (x - x_ref) = 0 exactly and the step is
    x <- x - lr * s_t (x - mu): Parle at n = 1 is ``EntropySGD`` with the same lr, gamma, scoping, inner_steps,
    sampler, temperature, averaging, outer_scale and momentum, drawing from a generator seeded with
    :attr:`replica_seed` (and gamma_t capped at ``gamma_max``). Under ``reduction="averages_then_weights"`` the
    identity is different: x_ref = mu, and the step is x <- x - lr (s_t + rho_t)(x - mu).

    Scoping (per outer step t, as Entropy-SGD's): gamma_t = min(gamma (1 + scoping)^t, gamma_max) and
    rho_t = min(rho c (1 + scoping)^t, rho_max), c = L n under ``rho_scale="steps_replicas"`` and 1 otherwise.
    ``batches_per_epoch=nb`` sets scoping = 0.5 / nb, the factor (1 + 0.5 / nb) per outer step of the authors' code.

    Where the authors' code (``parle_mpi.py``) differs from the paper's equations, each an option; ``preset=
    "authors"`` takes all of them, ``"paper"`` (the default choices) none:

    * ``inner_noise``: the paper's inner loop is Langevin (the sampler's temperature); the code adds no noise
      (``inner_noise=False`` runs the sampler at temperature 0);
    * ``rho_scale``: the code multiplies rho by L x n (``"steps_replicas"``);
    * ``gamma_max``, ``rho_max``: the code caps the scoped gamma at 1 and rho (after the L x n factor) at 10;
    * ``reduction``: the code reduces twice per outer step: x_ref first becomes the mean of the replicas' inner
      averages mu^a (that x_ref is used in the elastic term), then the mean of the updated weights
      (``"averages_then_weights"``: two all-reduces per step);
    * ``outer_scale="unit"`` and ``averaging=0.25``: the code's step on (x^a - mu^a) has no gamma and its average
      puts weight 0.25 on the newest iterate.

    Each replica draws its own noise: the generator is seeded with ``replica_seed(base_seed, rank)``, where
    ``base_seed`` is drawn from ``generator`` when one is given and from torch's global RNG otherwise (both are
    recorded in :attr:`base_seed`, :attr:`replica_seed` and ``state_dict``). Each replica must read its own data
    shard: that is the caller's job (e.g. ``DistributedSampler(dataset, num_replicas=n, rank=rank)`` behind the
    closure). The parameters must have the same shapes, order and ``requires_grad`` on every rank.

    :meth:`communication` counts what this rank sent: ``collective_calls`` (all-reduces) and
    ``bytes_communicated``, the all-reduce payload (numel x element size of the reduced buffer) summed over calls;
    a ring all-reduce moves about 2 (n - 1) / n times that per rank. With n = 1 nothing is communicated.
    ``state_dict`` holds the reference (per parameter, ``"reference"``), the counters, the generator and these
    counts; loading it on the same rank of a group of the same size resumes bit-identically. A replica that stops
    (killed, or an exception on its side such as ``DivergenceError``) leaves the others' next all-reduce to fail
    (gloo: at once if the peer's connection closed, else after the group's timeout): they raise
    :class:`ReplicaSyncError` naming the outer step.
    """

    shares_noise_across_ranks = False  # each replica draws its own noise: no broadcast of rank 0's generator

    def __init__(
        self,
        params: Any,
        lr: float,
        *,
        gamma: float,
        rho: float,
        inner_steps: int = 25,
        sampler: Sampler | str | None = None,
        sampler_options: dict[str, Any] | None = None,
        scoping: float = 0.0,
        batches_per_epoch: int | None = None,
        gamma_max: float | None = _UNSET,
        rho_max: float | None = _UNSET,
        inner_noise: bool = _UNSET,
        rho_scale: str = _UNSET,
        reduction: str = _UNSET,
        averaging: str | float = _UNSET,
        outer_scale: str = _UNSET,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        coupling: str = _UNSET,
        preset: str | None = None,
        warm_start: bool = False,
        generator: torch.Generator | None = None,
        noise_stream: str = "chunked-v1",
        batchnorm: str = "inner",
        modules: torch.nn.Module | None = None,
        process_group: Any = None,
    ) -> None:
        convention = parle_preset("paper" if preset is None else preset)

        def pick(value: Any, preset_value: Any) -> Any:
            return preset_value if value is _UNSET else value

        inner_noise = pick(inner_noise, convention.inner_noise)
        if not isinstance(inner_noise, bool):
            raise ValueError(f"inner_noise must be true or false, got {inner_noise!r}")
        self.inner_noise = inner_noise
        self.rho_scale = check_choice("rho_scale", pick(rho_scale, convention.rho_scale), RHO_SCALES)
        self.reduction = check_choice("reduction", pick(reduction, convention.reduction), REDUCTIONS)
        self.gamma_max = _optional_cap("gamma_max", pick(gamma_max, convention.gamma_max))
        self.rho_max = _optional_cap("rho_max", pick(rho_max, convention.rho_max))
        if batches_per_epoch is not None:
            batches_per_epoch = check_int("batches_per_epoch", batches_per_epoch, 1)
            if scoping != 0:
                raise ValueError("give scoping or batches_per_epoch (scoping = 0.5 / batches_per_epoch), not both")
            scoping = 0.5 / batches_per_epoch
        elif preset is not None and convention.needs_batches_per_epoch:
            raise ValueError(
                f"preset={preset!r} scopes gamma and rho by (1 + 0.5 / nb) per outer step: pass batches_per_epoch=nb "
                "(minibatches per epoch of one replica's shard)"
            )
        self.batches_per_epoch = batches_per_epoch
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.process_group = process_group
        self.rank, self.world_size = process_group_position(process_group)
        super().__init__(
            params,
            lr,
            gamma=gamma,
            sampler=sampler,
            sampler_options=sampler_options,
            scoping=scoping,
            inner_steps=inner_steps,
            temperature=None if inner_noise else 0.0,
            averaging=pick(averaging, convention.averaging),
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            outer_scale=pick(outer_scale, convention.outer_scale),
            coupling=coupling,
            warm_start=warm_start,
            generator=None,
            noise_stream=noise_stream,
            batchnorm=batchnorm,
            modules=modules,
        )
        self.preset = preset
        rho = check_nonnegative("rho", rho)
        self.defaults["rho"] = rho
        for group in self.param_groups:
            group.setdefault("rho", rho)
        # the base optimizer drew self._seed from torch's global RNG (generator=None above); replace it by this
        # replica's seed so that ranks seeded alike still draw different noise
        self.base_seed = _seed_from(generator) if generator is not None else self._seed
        self.replica_seed = replica_seed(self.base_seed, self.rank)
        self._seed, self._generator = self.replica_seed, None
        self._bytes_communicated = 0
        self._collective_calls = 0

    def current_gammas(self) -> list[float]:
        """gamma_t of each parameter group for the next step, capped at ``gamma_max``."""
        return [scoped(g["gamma"], g["scoping"], self.outer_steps, self.gamma_max) for g in self.param_groups]

    def current_rhos(self) -> list[float]:
        """rho_t of each parameter group for the next step (scoped, scaled by L n if asked, capped at ``rho_max``)."""
        t = self.outer_steps
        factor = self.inner_steps * self.world_size if self.rho_scale == "steps_replicas" else 1
        return [scoped(g["rho"] * factor, g["scoping"], t, self.rho_max) for g in self.param_groups]

    def communication(self) -> dict[str, int]:
        """What this rank has sent so far: all-reduce payload bytes and the number of all-reduce calls."""
        return {"bytes_communicated": self._bytes_communicated, "collective_calls": self._collective_calls}

    def reference(self) -> list[Tensor | None]:
        """x_ref for each parameter, in ``param_groups`` order (None for one never stepped: frozen, or no step yet)."""
        return [self.state[p].get("reference") if p in self.state else None for p in self._params()]

    @torch.no_grad()
    def step(self, closure: Closure | None = None, grad_scaler: torch.amp.GradScaler | None = None) -> Any:  # type: ignore[override]
        loss = super().step(closure, grad_scaler)
        trainable = self._trainable_params()
        # the synchronisation of the step just taken (counted already): on failure, this replica has stepped
        self._set_reference(trainable, self._mean_over_replicas(trainable, self.outer_steps - 1, after_step=True))
        return loss

    def _agree_on_overflow(self, found_inf: Tensor) -> Tensor:
        """Every replica skips a step in which any of them found an inf or NaN gradient (their collectives stay in
        step): the largest ``found_inf`` over the replicas, one all-reduce (none at n = 1)."""
        if self.world_size == 1:
            return found_inf
        agreed = found_inf.clone()
        dist.all_reduce(agreed, op=dist.ReduceOp.MAX, group=self.process_group)
        self._bytes_communicated += agreed.numel() * agreed.element_size()
        self._collective_calls += 1
        return agreed

    def _trainable_params(self) -> list[Tensor]:
        return [p for _, params in self._trainable() for p in params]

    def _extend_direction(self, loops: list[GroupLoop]) -> None:
        """Add rho_t (x - x_ref) to the direction gamma_t (x - mu) that the inner loop left in the gradients, after
        updating x_ref from the replicas' inner averages (or weights; ``reduction``)."""
        trainable = self._trainable_params()
        if self.reduction == "averages_then_weights":
            # a parameter without an inner chain this step (unused by the loss) contributes its weights
            mu = {id(p): a for loop in loops for p, a in zip(loop.params, loop.average, strict=True)}
            averages_or_weights = [mu.get(id(p), p) for p in trainable]
            self._set_reference(trainable, self._mean_over_replicas(averages_or_weights, self.outer_steps))
        elif any("reference" not in self.state[p] for p in trainable):  # the first step: x_ref = mean of the x^a
            self._set_reference(trainable, self._mean_over_replicas(trainable, self.outer_steps))
        rhos = dict(zip(map(id, self.param_groups), self.current_rhos(), strict=True))
        stepped_ids = {id(p) for loop in loops for p in loop.params}
        for group, params in self._trainable():
            params = [p for p in params if id(p) in stepped_ids]
            if not params or rhos[id(group)] == 0:
                continue
            elastic = torch._foreach_sub(params, [self.state[p]["reference"] for p in params])
            torch._foreach_add_([p.grad for p in params], elastic, alpha=rhos[id(group)])

    def _set_reference(self, params: list[Tensor], values: list[Tensor]) -> None:
        for p, value in zip(params, values, strict=True):
            reference = self.state[p].get("reference")
            if reference is None or reference.shape != p.shape:
                self.state[p]["reference"] = value.clone()  # its own storage, not a view of the reduced buffer
            else:
                reference.copy_(value)

    def _mean_over_replicas(self, tensors: list[Tensor], step_index: int, after_step: bool = False) -> list[Tensor]:
        """The mean over the replicas of each tensor: one all-reduce per dtype of a flat buffer (none at n = 1).

        ``step_index`` and ``after_step`` (whether this replica's weights have moved already) go into the error."""
        if self.world_size == 1:
            return [t.detach() for t in tensors]
        means: list[Tensor] = list(tensors)
        by_dtype: dict[torch.dtype, list[int]] = {}
        for i, t in enumerate(tensors):
            by_dtype.setdefault(t.dtype, []).append(i)
        for indices in by_dtype.values():
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices])
            try:
                dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group)
            except RuntimeError as error:
                moved = "after" if after_step else "before"
                raise ReplicaSyncError(
                    f"Parle: the all-reduce of outer step {step_index} failed on rank {self.rank} of "
                    f"{self.world_size} ({moved} this replica's update): a replica stopped, or did not reach this "
                    f"step within the process group's timeout ({type(error).__name__}: {error})"
                ) from error
            flat.div_(self.world_size)
            self._bytes_communicated += flat.numel() * flat.element_size()
            self._collective_calls += 1
            pieces = flat.split([tensors[i].numel() for i in indices])
            for i, piece in zip(indices, pieces, strict=True):
                means[i] = piece.view_as(tensors[i])
        return means

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "parle": {
                "rank": self.rank,
                "world_size": self.world_size,
                "base_seed": self.base_seed,
                "replica_seed": self.replica_seed,
                "bytes_communicated": self._bytes_communicated,
                "collective_calls": self._collective_calls,
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop("parle", None)
        if saved is not None:
            if (saved["rank"], saved["world_size"]) != (self.rank, self.world_size):
                raise ValueError(
                    f"this Parle state was saved by rank {saved['rank']} of {saved['world_size']}, and this optimizer "
                    f"is rank {self.rank} of {self.world_size}: load each rank's own state into a group of the same "
                    "size (its noise, reference and rho scale belong to that replica)"
                )
            self.base_seed, self.replica_seed = saved["base_seed"], saved["replica_seed"]
            self._bytes_communicated = saved["bytes_communicated"]
            self._collective_calls = saved["collective_calls"]
        super().load_state_dict(state_dict)


def scoped(value: float, scoping: float, t: int, cap: float | None = None) -> float:
    """value (1 + scoping)^t, capped at ``cap``: gamma_t and rho_t after t outer steps (inf past float range)."""
    try:
        grown = value * (1.0 + scoping) ** t
    except OverflowError:  # a capped schedule stays at its cap however long the run
        grown = math.inf
    return _cap(grown, cap)


def _optional_cap(name: str, value: float | None) -> float | None:
    return None if value is None else check_positive(name, value)


def _cap(value: float, cap: float | None) -> float:
    return value if cap is None else min(value, cap)
