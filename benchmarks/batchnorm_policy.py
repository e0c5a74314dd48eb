"""What Entropy-SGD's inner loop should do to batch-norm running statistics: measured on LeNet-BN and MNIST-5k.

The three policies of ``EntropySGD(batchnorm=...)``: ``inner`` (updated at every inner step at the perturbed weights,
the authors' code), ``frozen`` (left as they were before the inner loop) and ``refresh`` (frozen, then updated once at
the new weights: one more gradient evaluation per outer step). Each seed trains the same initial model on the same
minibatch order under every policy (paired), for the same budget of gradient evaluations (equal compute: refresh's
extra call counts), and reports the test error in train-mode-free evaluation (``model.eval()``: the running statistics
are what is being compared). Differences are paired by seed, with 95 % t-intervals over the seeds and Holm's
correction over the two comparisons with ``inner``.

    python benchmarks/batchnorm_policy.py --seeds 10 --json benchmarks/results/batchnorm_policy.json

(9.7 minutes on 2 cores shared with other work at a load of about 9; one thread per run.)
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from scipy import stats
from torch import nn

from localentropy.data.sources import load_data
from localentropy.entropy import EntropySGD
from localentropy.experiments.training.models import build_model

POLICIES = ("inner", "frozen", "refresh")


def test_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).float().mean().item()
    model.train()
    return 100.0 * wrong


def train(policy: str, seed: int, data, budget: int, batch: int) -> float:
    torch.manual_seed(seed)
    model = build_model("small-lenet", data.input_shape, data.num_classes, dropout=0.0)
    opt = EntropySGD(
        model.parameters(),
        lr=0.5,
        gamma=0.03,
        momentum=0.9,
        nesterov=True,
        sampler_options={"step_size": 0.1, "temperature": 1e-6},
        inner_steps=5,
        batchnorm=policy,
        modules=model,
        generator=torch.Generator().manual_seed(seed),
    )
    x, y = data.train.x, data.train.y
    order = torch.Generator().manual_seed(10_000 + seed)
    perm, position = torch.randperm(len(y), generator=order), 0

    def closure() -> torch.Tensor:
        nonlocal perm, position
        if position + batch > len(y):
            perm, position = torch.randperm(len(y), generator=order), 0
        index = perm[position : position + batch]
        position += batch
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x[index]), y[index])
        loss.backward()
        return loss

    model.train()
    while opt.grad_evals < budget:
        opt.step(closure)
    return test_error(model, data.test.x, data.test.y)


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    d = np.asarray(a) - np.asarray(b)
    n = len(d)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    return {"mean": float(d.mean()), "ci95": float(half), "p": float(stats.ttest_1samp(d, 0.0).pvalue), "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=1500, help="gradient evaluations per run")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_data("mnist5k", seed=0, validation_fraction=0.0)
    started = time.perf_counter()
    errors = {p: [train(p, seed, data, args.budget, args.batch) for seed in range(args.seeds)] for p in POLICIES}
    comparisons = {f"{p} - inner": paired(errors[p], errors["inner"]) for p in POLICIES if p != "inner"}
    # Holm's step-down over the comparisons with inner
    ranked = sorted(comparisons, key=lambda k: comparisons[k]["p"])
    for rank, key in enumerate(ranked):
        comparisons[key]["p_holm"] = min(
            1.0, max(comparisons[k]["p"] * (len(ranked) - i) for i, k in enumerate(ranked[: rank + 1]))
        )
    minutes = (time.perf_counter() - started) / 60
    print(
        f"LeNet-BN (small-lenet) on MNIST-5k, EntropySGD L = 5, {args.budget} gradient evaluations, {args.seeds} seeds"
    )
    print("| policy | test error, mean (%) | sd over seeds |")
    print("|---|---:|---:|")
    for p in POLICIES:
        print(f"| {p} | {np.mean(errors[p]):.2f} | {np.std(errors[p], ddof=1):.2f} |")
    print("\n| difference (points) | mean | 95 % CI half-width (t, seeds) | p | p (Holm) |")
    print("|---|---:|---:|---:|---:|")
    for key, c in comparisons.items():
        print(f"| {key} | {c['mean']:+.2f} | {c['ci95']:.2f} | {c['p']:.3f} | {c['p_holm']:.3f} |")
    print(f"\n{minutes:.1f} minutes")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"errors": errors, "comparisons": comparisons, "args": vars(args), "minutes": minutes}, handle)


if __name__ == "__main__":
    main()
