"""A small, fast training comparison on scikit-learn's digits (shipped with scikit-learn: no download)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TextIO

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from localentropy.entropy import LPFSGD, EntropySGD, make_closure


def load_digits_split(seed: int = 0, test_fraction: float = 0.25) -> tuple[TensorDataset, TensorDataset]:
    """Digits as float32 pixels scaled to [0, 1], split into train and test deterministically by ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # scikit-learn is an optional extra
        raise ImportError("the digits comparison needs scikit-learn: pip install 'localentropy[data]'") from exc
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * len(x))
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def small_mlp(hidden: int = 64, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10))


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset) -> float:
    was_training = model.training
    model.eval()
    x, y = data.tensors
    result = float((model(x).argmax(1) == y).float().mean())
    model.train(was_training)
    return result


@dataclass
class DigitsRow:
    optimizer: str
    test_accuracy: float
    train_accuracy: float
    grad_evals: int
    effective_epochs: float
    seconds: float


def _optimizers(params: Any) -> dict[str, Any]:
    """The compared optimizers; Entropy-SGD's rows run L = 5 inner steps per outer step."""
    inner = {"gamma": 1.0, "scoping": 1e-3, "inner_steps": 5}
    eps = {"step_size": 0.1, "noise_scale": 1e-4}
    return {
        "sgd": lambda: torch.optim.SGD(params(), lr=0.1, momentum=0.9),
        "entropy-sgd": lambda: EntropySGD(
            params(),
            lr=0.5,
            sampler="sgld",
            sampler_options={"step_size": 0.1, "temperature": 1e-8},
            momentum=0.9,
            nesterov=True,
            **inner,
        ),
        "entropy-sgd paper": lambda: EntropySGD(params(), lr=1.0, preset="paper", sampler_options=eps, **inner),
        "entropy-sgd authors": lambda: EntropySGD(params(), lr=1.0, preset="authors", sampler_options=eps, **inner),
        "lpf-sgd": lambda: LPFSGD(params(), lr=0.1, sigma=1e-3, n_samples=1, momentum=0.9),
    }


def run_digits(
    epochs: int = 10, batch_size: int = 64, seed: int = 0, optimizers: list[str] | None = None
) -> list[DigitsRow]:
    """Train the same small MLP with each optimizer for the same number of gradient evaluations."""
    train, test = load_digits_split(seed)
    steps_per_epoch = -(-len(train) // batch_size)
    rows = []
    factories = _optimizers(lambda: model.parameters())
    unknown = sorted(set(optimizers or []) - set(factories))
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {sorted(factories)}")
    for name in optimizers or list(factories):
        torch.manual_seed(seed)
        model = small_mlp()
        optimizer = factories[name]()
        loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
        closure = make_closure(model, nn.functional.cross_entropy, loader)
        budget = epochs * steps_per_epoch  # the same number of forward-backward passes for every optimizer
        start = time.perf_counter()
        while closure.calls < budget:
            optimizer.step(closure)
        rows.append(
            DigitsRow(
                optimizer=name,
                test_accuracy=accuracy(model, test),
                train_accuracy=accuracy(model, train),
                grad_evals=closure.calls,
                effective_epochs=closure.examples / len(train),
                seconds=time.perf_counter() - start,
            )
        )
    return rows


def print_digits(rows: list[DigitsRow], out: TextIO) -> None:
    print("scikit-learn digits, MLP 64-64-10, same gradient budget for every optimizer", file=out)
    header = f"{'optimizer':<22} {'test acc':>9} {'train acc':>10} {'grad evals':>11} {'eff. epochs':>12}"
    print(f"{header} {'seconds':>8}", file=out)
    for r in rows:
        print(
            f"{r.optimizer:<22} {r.test_accuracy:9.4f} {r.train_accuracy:10.4f} {r.grad_evals:11d}"
            f" {r.effective_epochs:12.2f} {r.seconds:8.2f}",
            file=out,
        )
