r"""How accurate is the Entropy-SGD direction when its inner loop is cut down?

Entropy-SGD pays L gradient evaluations per outer step for its direction

    d = gamma (x - mu),   mu = (1/L) sum_{k=1..L} x'_k   (uniform averaging),

where x'_1, ..., x'_L are the iterates of a sampler targeting rho(x' | x) ∝ exp(-[f(x') + gamma/2 ||x' - x||^2] / T).
The direction estimates the local-entropy gradient g(x) = gamma (x - <x'>). Three ways to pay less are measured
here along real optimisation trajectories, not at one fixed point:

* fewer inner steps L (the chain starts at x and has not mixed along the small-curvature directions: bias);
* warm-started chains (``EntropySGD(warm_start=True)``: each outer step's chain goes on from the previous step's
  last iterate, sampler momenta kept), which keeps the mixing done so far while the anchor x moves by lr * d;
* Rademacher instead of Gaussian injected noise (same mean and variance; cheaper to draw on a CPU).

The test problem is ``Quadratic.random(dim, condition)``: f(x) = 1/2 x^T A x - b^T x with eigenvalues of A
log-spaced over [1, condition], whose local-entropy gradient is known in closed form,

    g(x) = gamma (A + gamma I)^{-1} (A x - b)   (independent of T),

and the closure returns the exact gradient (no minibatch noise), so every error below is the inner loop's. For
every (sampler, noise, L, cold/warm) combination and replicate, one parameter vector x starts from the same
random point and takes ``outer_steps`` steps of ``EntropySGD`` (plain SGD outer step, lr, no momentum). Before
each step x is recorded; after it the direction d the SGD step used is read from x.grad and compared with
g(x_before):

    relative error = ||d - g(x_before)|| / ||g(x_before)||.

Per replicate the relative error is averaged over the outer steps after the first ``skip`` (so that warm chains
have had a few steps to go on from); the result reports its mean and standard deviation over replicates, the
gradient evaluations per outer step (= L), the final loss f(x) and the mean error at each outer step. Comparing
at equal gradient cost (e.g. L = 5 warm against L = 20 cold) is left to the reader. The noise of every
replicate comes from ``torch.Generator().manual_seed(seed + replicate)`` in every combination (common random
numbers), so differences between combinations are not blurred by different draws.

Step sizes follow the shipped config shootout.toml: ``step_size_fraction`` 0.5 of the SGLD stability limit
2 / (lambda_max(A) + gamma) (as runner ``_step_size`` turns a fraction into a step size), SGHMC with friction 0.2.
The outer lr is 0.02 (gamma = 1): the outer iteration x <- x - lr g(x) contracts by 1 - lr gamma lambda / (lambda +
gamma) per step along an eigenvector of A, so it is stable for any lr < 2 / gamma, and in 60 steps the loss falls
from about 690 to -296 along the exact direction (minimum -402). A larger lr reaches the minimiser within the
run: there ||g|| -> 0 while the sampling noise in d does not shrink (T > 0), and the relative error of the late
steps measures that noise floor rather than the inner loop's bias (with lr = 0.1, ||g|| falls from 8 to 0.06 and
warm chains, which sample the full Gibbs spread, score above 1). ``rel_error_by_step`` and ``grad_norm_by_step``
(||g(x)|| at each step, mean over replicates) show where a run is.

``python -m localentropy.experiments.overhead [--quick] [--out result.json]`` prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections.abc import Sequence
from typing import Any

import torch

from localentropy._threads import torch_threads
from localentropy.entropy.optim import EntropySGD
from localentropy.entropy.problems import Quadratic

# (name, options): "step_size_fraction" is turned into step_size = fraction * 2 / (lambda_max(A) + gamma), as in
# the shoot-out config; any other option goes to the sampler as it is.
DEFAULT_SAMPLERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("sgld", {"step_size_fraction": 0.5}),
    ("sghmc", {"step_size_fraction": 0.5, "friction": 0.2}),
)


def _sampler_options(options: dict[str, Any], problem: Quadratic, gamma: float) -> dict[str, Any]:
    """The sampler's hyperparameters, with a step-size fraction resolved against this problem's stability limit."""
    resolved = dict(options)
    fraction = resolved.pop("step_size_fraction", None)
    if fraction is not None:
        if "step_size" in resolved:
            raise ValueError("give a sampler either step_size or step_size_fraction, not both")
        resolved["step_size"] = float(fraction) * problem.max_stable_step(gamma)
    if "step_size" not in resolved:
        raise ValueError(f"sampler options {options!r} need step_size or step_size_fraction")
    return resolved


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value: JSON has no NaN)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """The mean over replicates at each outer step."""
    return [sum(step) / len(step) for step in zip(*curves, strict=True)]


def _run_one(
    problem: Quadratic,
    x0: torch.Tensor,
    *,
    sampler: str,
    sampler_options: dict[str, Any],
    inner_steps: int,
    warm_start: bool,
    gamma: float,
    lr: float,
    outer_steps: int,
    generator: torch.Generator,
) -> tuple[list[float], list[float], float]:
    """One trajectory: the relative error of the direction and ||g|| at each outer step, and the final loss."""
    x = x0.clone().requires_grad_(True)
    opt = EntropySGD(
        [x],
        lr=lr,
        gamma=gamma,
        sampler=sampler,
        sampler_options=sampler_options,
        inner_steps=inner_steps,
        averaging="uniform",
        warm_start=warm_start,
        generator=generator,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = problem.loss(x)
        loss.backward()
        return loss.detach()

    errors, norms = [], []
    for _ in range(outer_steps):
        x_before = x.detach().clone()
        opt.step(closure)
        # The base step is torch.optim.SGD without momentum or weight decay: it reads x.grad (where _direction
        # wrote gamma (x - mu)) and does not change it, so x.grad is exactly the direction the step used.
        direction = x.grad.detach()
        truth = problem.local_entropy_grad(x_before, gamma)
        norm = float(torch.linalg.vector_norm(truth))
        errors.append(float(torch.linalg.vector_norm(direction - truth)) / norm)
        norms.append(norm)
    with torch.no_grad():
        final_loss = float(problem.loss(x))
    return errors, norms, final_loss


def trajectory_accuracy(
    *,
    dim: int = 50,
    condition: float = 100,
    gamma: float = 1.0,
    temperature: float = 0.1,
    samplers: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_SAMPLERS,
    inner_steps: Sequence[int] = (1, 2, 5, 20),
    warm: Sequence[bool] = (False, True),
    noises: Sequence[str] = ("gaussian", "rademacher"),
    outer_steps: int = 60,
    lr: float = 0.02,
    replicates: int = 10,
    seed: int = 0,
    skip: int = 5,
) -> dict[str, Any]:
    """Relative error of the Entropy-SGD direction along trajectories, for every combination (module docstring).

    Returns a JSON-serialisable dict: ``settings`` (the arguments, the resolved sampler hyperparameters, the
    problem's lambda_max and stability limit, the initial loss, the minimum of f and the final loss of the same
    number of outer steps along the exact direction g), ``rows`` (one per sampler, noise, L and warm flag) and
    ``seconds``. A smaller call (fewer replicates, outer steps, L values or a smaller dim) is the quick version.
    """
    if not 0 <= skip < outer_steps:
        raise ValueError(f"skip must be in [0, outer_steps={outer_steps}), got {skip}")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    start = time.perf_counter()
    with torch_threads(1):  # tiny tensors: one intra-op thread is faster, and the machine is shared
        problem = Quadratic.random(dim, condition, 0, seed)
        # The same start for every combination and replicate: only the inner loop differs between rows
        x0 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        resolved = {name: _sampler_options(options, problem, gamma) for name, options in samplers}

        # Reference: the same outer steps along the exact direction g
        x_exact = x0.clone()
        for _ in range(outer_steps):
            x_exact -= lr * problem.local_entropy_grad(x_exact, gamma)

        rows = []
        for (name, _), noise, L, w in itertools.product(samplers, noises, inner_steps, warm):
            per_replicate, final_losses, curves, norm_curves = [], [], [], []
            for replicate in range(replicates):
                errors, norms, final_loss = _run_one(
                    problem,
                    x0,
                    sampler=name,
                    sampler_options={**resolved[name], "temperature": temperature, "noise": noise},
                    inner_steps=L,
                    warm_start=w,
                    gamma=gamma,
                    lr=lr,
                    outer_steps=outer_steps,
                    generator=torch.Generator().manual_seed(seed + replicate),
                )
                tail = errors[skip:]
                per_replicate.append(sum(tail) / len(tail))
                final_losses.append(final_loss)
                curves.append(errors)
                norm_curves.append(norms)
            error_mean, error_sd = _mean_sd(per_replicate)
            loss_mean, loss_sd = _mean_sd(final_losses)
            rows.append(
                {
                    "sampler": name,
                    "noise": noise,
                    "inner_steps": L,
                    "warm_start": w,
                    "grad_evals_per_step": L,
                    "rel_error_mean": error_mean,
                    "rel_error_sd": error_sd,
                    "rel_error_replicates": per_replicate,
                    "final_loss_mean": loss_mean,
                    "final_loss_sd": loss_sd,
                    "rel_error_by_step": _mean_curve(curves),
                    "grad_norm_by_step": _mean_curve(norm_curves),
                }
            )
        settings = {
            "problem": f"Quadratic.random(dim={dim}, condition={condition:g}, n_negative=0, seed={seed})",
            "dim": dim,
            "condition": condition,
            "gamma": gamma,
            "temperature": temperature,
            "samplers": {name: dict(options) for name, options in samplers},
            "sampler_hyperparameters": resolved,
            "inner_steps": list(inner_steps),
            "warm": list(warm),
            "noises": list(noises),
            "outer_steps": outer_steps,
            "lr": lr,
            "replicates": replicates,
            "seed": seed,
            "skip": skip,
            "lambda_max": float(problem.eigenvalues[-1]),
            "max_stable_step": problem.max_stable_step(gamma),
            "x0": x0.tolist(),
            "initial_loss": float(problem.loss(x0)),
            "min_loss": float(problem.loss(torch.linalg.solve(problem.A, problem.b))),
            "exact_direction_final_loss": float(problem.loss(x_exact)),
        }
    return {"settings": settings, "rows": rows, "seconds": time.perf_counter() - start}


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    sd = row["rel_error_sd"]
    return f"{row['rel_error_mean']:.3g}" + ("" if sd is None else f" ± {sd:.2g}")


def accuracy_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per sampler, noise and L; cold and warm start side by side (- where not run)."""
    lines = [
        "| sampler | noise | L | cold start: rel. error | warm start: rel. error | grad evals per outer step |",
        "|---|---|---:|---:|---:|---:|",
    ]
    cells: dict[tuple[str, str, int], dict[bool, dict[str, Any]]] = {}
    for row in result["rows"]:  # insertion order: the order of the run
        cells.setdefault((row["sampler"], row["noise"], row["inner_steps"]), {})[row["warm_start"]] = row
    for (sampler, noise, L), by_warm in cells.items():
        evals = next(iter(by_warm.values()))["grad_evals_per_step"]
        lines.append(
            f"| {sampler} | {noise} | {L} | {_cell(by_warm.get(False))} | {_cell(by_warm.get(True))} | {evals} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 replicates, 20 outer steps, L in (1, 5)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"replicates": 2, "outer_steps": 20, "inner_steps": (1, 5)} if args.quick else {}
    result = trajectory_accuracy(**options)
    settings = result["settings"]
    print(
        f"{settings['problem']}, gamma {settings['gamma']:g}, T {settings['temperature']:g}, lr {settings['lr']:g}, "
        f"{settings['outer_steps']} outer steps (errors averaged after the first {settings['skip']}), "
        f"{settings['replicates']} replicates; {result['seconds']:.1f} s"
    )
    print("\n".join(accuracy_table(result)))
    print(
        f"final loss: start {settings['initial_loss']:.4g}, "
        f"exact direction {settings['exact_direction_final_loss']:.4g}, minimum {settings['min_loss']:.4g}"
    )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
