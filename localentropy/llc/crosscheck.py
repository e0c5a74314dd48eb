r"""The model-level LLC against devinterp's (``pip install 'localentropy[llc]'``), with matched settings.

The network is a small tanh MLP (4 -> hidden -> 1) and the data its own outputs plus Gaussian noise (a teacher that
is the student at w*, so w* sits near a minimum of L_n). devinterp's entry point
``devinterp.slt.llc.llc(model, dataset, observables, *, lr, n_beta, loss_fn=...)`` reads a Hugging Face Dataset
with an ``input_ids`` column and a per-token loss ``loss_fn(model, input_ids) -> (batch, seq - 1)``: each row's
input_ids here is (example index, 0), so that one "token" carries one example and ``loss_fn`` returns its
squared error, shape (batch, 1). Both sides run the same SGLD (step_size = lr / 2, :func:`devinterp_settings`),
the same n_beta, localization, batch size, chains and steps, with no burn-in (devinterp's ``compute_llc``
averages every step, burn-in included, so matching means burn_in = 0 on our side).

Where the two differ even when matched (docs/diagnostics.md): devinterp takes L_n(w*) as the mean loss of
``num_init_loss_batches`` (32) minibatches, we take the whole data set; its loader replays the first epoch's
shuffle (``itertools.cycle``) and gives every chain the same batches, ours reshuffles each epoch; it computes
the loss in float32.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from localentropy.llc.estimate import LLCResult
from localentropy.llc.model import devinterp_settings, estimate_llc_model

__all__ = ["CrossCheck", "devinterp_crosscheck"]


@dataclass(frozen=True)
class CrossCheck:
    ours: LLCResult
    theirs_per_chain: np.ndarray  # devinterp's llc_per_chain
    theirs_init_loss: float

    @property
    def theirs(self) -> float:
        return float(self.theirs_per_chain.mean())

    @property
    def difference(self) -> float:
        return self.ours.mean - self.theirs

    @property
    def difference_se(self) -> float:
        """Standard error of the difference, the chain being the unit of replication on each side."""
        a, b = self.ours.per_chain, self.theirs_per_chain
        return math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)


def devinterp_crosscheck(
    *,
    n: int = 1024,
    hidden: int = 5,
    chains: int = 8,
    steps: int = 400,
    lr: float = 1e-3,
    localization: float = 100.0,
    batch_size: int = 32,
    seed: int = 0,
) -> CrossCheck:
    """Our :func:`estimate_llc_model` and devinterp's ``llc`` on the same network and data (module docstring)."""
    try:
        from datasets import Dataset
        from devinterp.slt.llc import llc
    except ImportError as error:
        raise ImportError("the devinterp cross-check needs devinterp: pip install 'localentropy[llc]'") from error
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    x = torch.randn(n, 4)
    with torch.no_grad():
        y = model(x) + 0.3 * torch.randn(n, 1)
    n_beta = n / math.log(n)
    settings = devinterp_settings(lr=lr, n_beta=n_beta, localization=localization)

    def per_example(m: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        idx = ids[:, 0]
        return ((m(x[idx]) - y[idx]) ** 2).sum(-1, keepdim=True)

    dataset = Dataset.from_dict({"input_ids": [[i, 0] for i in range(n)]}).with_format("torch")
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # devinterp's notes on temp output and on progress bars
        out = llc(
            model,
            dataset,
            {},
            lr=lr,
            n_beta=n_beta,
            loss_fn=per_example,
            localization=localization,
            num_chains=chains,
            num_draws=steps,
            batch_size=batch_size,
            num_burnin_steps=0,
            init_seed=seed,
            output_path=f"{folder}/samples.zarr",
        )
        theirs = np.asarray(out.llc_per_chain.values, dtype=np.float64)
        init_loss = float(out.init_loss)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    ours = estimate_llc_model(
        model,
        lambda p, t: ((p - t) ** 2).sum(-1).mean(),
        loader,
        chains=chains,
        steps=steps,
        burn_in=0,
        generator=torch.Generator().manual_seed(seed + 1),
        **settings,
    )
    return CrossCheck(ours, theirs, init_loss)
