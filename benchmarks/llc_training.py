"""Do Entropy-SGD's minima have a lower LLC than SGD's, SAM's and LPF-SGD's? Digits, seeds paired.

    python benchmarks/llc_training.py [--seeds 6] [--effective-epochs 30]

For each seed, ``localentropy train`` runs four optimizers from the same initial weights and minibatch order on
scikit-learn's digits (64-64-10 MLP, 30 effective epochs, cosine schedule; the settings of the shipped
train_digits_small config for Entropy-SGD and SGD, of train_digits for SAM and LPF-SGD) and measures the LLC at
each final weight vector (flatness measure ``llc``: nbeta = n / log n on the 1,294 training examples,
localization 100, SGLD at a tenth of its stability limit, 2 chains x 300 steps). The seed is the unit: the table
gives each optimizer's mean LLC and test error, the paired differences Entropy-SGD - other with 95 % t-intervals,
and the best set (lowest LLC; Holm-adjusted paired t-tests).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from localentropy.diagnostics.compare import best_set, paired_difference, verdict_text
from localentropy.experiments.training.config import parse_train_config
from localentropy.experiments.training.trainer import run_training

OPTIMIZERS = [
    {
        "label": "entropy-sgd",
        "kind": "entropy-sgd",
        "lr": 0.5,
        "sampler": "sgld",
        "options": {"gamma": 1.0, "scoping": 1e-3, "inner_steps": 5, "momentum": 0.9, "nesterov": True},
        "sampler_options": {"step_size": 0.1, "temperature": 1e-8},
    },
    {"label": "sgd", "kind": "sgd", "lr": 0.1, "options": {"momentum": 0.9, "nesterov": True}},
    {
        "label": "sam",
        "kind": "sam",
        "lr": 0.1,
        "options": {"rho": 0.05, "base": "sgd", "momentum": 0.9, "nesterov": True},
    },
    {"label": "lpf-sgd", "kind": "lpf-sgd", "lr": 0.1, "options": {"sigma": 1e-3, "n_samples": 1, "momentum": 0.9}},
]


def config(seed: int, effective_epochs: float) -> dict:
    return {
        "name": f"llc_training_{seed}",
        "seed": seed,
        "threads": 1,
        "batch_size": 64,
        "effective_epochs": effective_epochs,
        "eval_batch_size": 2000,
        "data": {"source": "digits", "validation_fraction": 0.1, "test_fraction": 0.2},
        "model": {"name": "mlp", "options": {"hidden": [64]}},
        "schedule": {"kind": "cosine"},
        "flatness": {"measures": ["llc"]},
        "optimizers": OPTIMIZERS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--effective-epochs", type=float, default=30.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    labels = [o["label"] for o in OPTIMIZERS]
    llc = {k: [] for k in labels}
    error = {k: [] for k in labels}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            out = Path(folder) / str(seed)
            run_training(parse_train_config(config(seed, args.effective_epochs)), out, progress=io.StringIO())
            for rec in json.loads((out / "results.json").read_text())["records"]:
                measure = (rec.get("flatness") or {}).get("llc") or {}
                llc[rec["label"]].append(measure.get("value", float("nan")))
                error[rec["label"]].append((rec.get("final") or {}).get("test_error", float("nan")))
            print(f"seed {seed}: " + ", ".join(f"{k} {llc[k][-1]:.2f}" for k in labels), flush=True)
    print(f"\n| optimizer | LLC mean ± SE ({args.seeds} seeds) | test error | Entropy-SGD - this |")
    print("|---|---|---|---|")
    for k in labels:
        v = np.asarray(llc[k])
        se = v.std(ddof=1) / np.sqrt(v.size)
        diff = "—"
        if k != "entropy-sgd":
            diff = paired_difference(llc["entropy-sgd"], llc[k]).text()
        print(f"| {k} | {v.mean():.2f} ± {se:.2f} | {100 * np.mean(error[k]):.1f} % | {diff} |")
    print(f"\nlowest LLC: {verdict_text(best_set(llc, unit='seed'))}")
    print(f"\n({time.perf_counter() - start:.0f} s, torch {torch.__version__}, 1 thread)")


if __name__ == "__main__":
    main()
