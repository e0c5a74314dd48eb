"""Inner-chain diagnostics through ArviZ (arviz-stats): ESS, R-hat and MCSE, and the draws as a DataTree.

ESS and R-hat are never hand-written here: every number comes from ``arviz_stats``. Tail ESS uses the 5 %
and 95 % quantiles (ArviZ's xarray default is 11 % / 89 %: ours is stated in the output).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import arviz_base
import arviz_stats
import numpy as np
import xarray as xr
from torch import Tensor

TAIL_PROB = (0.05, 0.95)


@dataclass
class ChainSummary:
    n_chains: int
    n_draws: int
    min_ess_bulk: float
    min_ess_tail: float
    max_rhat: float
    max_mcse_mean: float
    ess_bulk_quantiles: dict[str, float]
    rhat_quantiles: dict[str, float]
    tail_prob: tuple[float, float] = TAIL_PROB

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _draws_array(draws: Tensor | np.ndarray) -> np.ndarray:
    array = draws.detach().cpu().double().numpy() if isinstance(draws, Tensor) else np.asarray(draws, float)
    if array.ndim < 2:
        raise ValueError(f"draws must be shaped (n_chains, n_draws, ...), got shape {array.shape}")
    if array.shape[1] < 4:
        raise ValueError(f"ESS and R-hat need at least 4 draws per chain, got {array.shape[1]}")
    return array.reshape(array.shape[0], array.shape[1], -1)


def per_coordinate(draws: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Bulk and tail ESS, rank-normalised R-hat and MCSE of the mean, one value per coordinate."""
    array = _draws_array(draws)
    return {
        "ess_bulk": np.asarray(arviz_stats.ess(array, method="bulk")),
        "ess_tail": np.asarray(arviz_stats.ess(array, method="tail", prob=TAIL_PROB)),
        "rhat": np.asarray(arviz_stats.rhat(array)),
        "mcse_mean": np.asarray(arviz_stats.mcse(array, method="mean")),
    }


def _quantiles(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"q05": float("nan"), "q50": float("nan"), "q95": float("nan")}
    q05, q50, q95 = np.quantile(finite, [0.05, 0.5, 0.95])
    return {"q05": float(q05), "q50": float(q50), "q95": float(q95)}


def chain_summary(draws: Tensor | np.ndarray) -> ChainSummary:
    """The per-coordinate diagnostics summarised: min ESS, max R-hat (R-hat needs two chains or more)."""
    array = _draws_array(draws)
    values = per_coordinate(array)
    return ChainSummary(
        n_chains=array.shape[0],
        n_draws=array.shape[1],
        min_ess_bulk=float(np.nanmin(values["ess_bulk"])),
        min_ess_tail=float(np.nanmin(values["ess_tail"])),
        max_rhat=float(np.nanmax(values["rhat"])) if array.shape[0] > 1 else float("nan"),
        max_mcse_mean=float(np.nanmax(values["mcse_mean"])),
        ess_bulk_quantiles=_quantiles(values["ess_bulk"]),
        rhat_quantiles=_quantiles(values["rhat"]),
    )


def to_datatree(
    draws: Tensor | np.ndarray | dict[str, Tensor | np.ndarray],
    *,
    var_name: str = "x",
    attrs: dict[str, Any] | None = None,
) -> xr.DataTree:
    """Draws (n_chains, n_draws, ...) as an ArviZ DataTree (group ``posterior``) that any ArviZ function accepts.

    A dict maps variable names to such arrays. Extra dimensions are named ``<var>_dim_0``, ``<var>_dim_1``...
    """
    items = draws if isinstance(draws, dict) else {var_name: draws}
    data, dims = {}, {}
    for name, value in items.items():
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        if array.ndim < 2:
            raise ValueError(f"draws for {name!r} must be shaped (n_chains, n_draws, ...), got {array.shape}")
        data[name] = array
        dims[name] = [f"{name}_dim_{i}" for i in range(array.ndim - 2)]
    tree = arviz_base.from_dict({"posterior": data}, dims=dims)
    if attrs:
        tree.attrs.update(attrs)
    return tree
