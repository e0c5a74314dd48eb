"""Readers for data files a user provides: MNIST-style IDX files and CIFAR-10 python batches.

Both readers validate what they read and raise :class:`ValueError` naming the file and the problem (a wrong
magic number, an unknown dtype code, a byte count that does not match the header, a truncated gzip stream, a
pickle that asks for anything but numpy arrays...). Nothing is allocated from a header before the file's size
has been checked against it, and CIFAR pickles go through :class:`RestrictedUnpickler`, which refuses every
global except numpy array reconstruction and a few plain builtins: a malicious pickle (one that would call
``os.system``) is refused before anything in it runs.
"""

from __future__ import annotations

import gzip
import io
import pickle
import zlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

# IDX dtype codes (http://yann.lecun.com/exdb/mnist/): data are big-endian
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
MAX_IDX_DIMS = 8
GZIP_MAGIC = b"\x1f\x8b"
CHUNK = 1 << 20


def _open(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it starts with the gzip magic (whatever its suffix)."""
    handle = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    head = handle.read(2)
    handle.seek(0)
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=handle, mode="rb")  # type: ignore[return-value]
    return handle


def _read_exactly(stream: BinaryIO, n: int, path: Path, what: str) -> bytes:
    """Read n bytes in chunks: a header that claims more than the file holds allocates nothing up front."""
    chunks, got = [], 0
    try:
        while got < n:
            chunk = stream.read(min(CHUNK, n - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a cut gzip stream: EOFError
        raise ValueError(f"{path}: corrupt compressed data while reading {what}: {exc}") from None
    if got != n:
        raise ValueError(f"{path}: truncated: {what} needs {n} bytes, only {got} are left in the file")
    return b"".join(chunks)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array of its declared dtype and shape.

    Layout: two zero bytes, a dtype code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), the number of dimensions, one big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with _open(path) as stream:
        magic = _read_exactly(stream, 4, path, "the 4-byte magic number")
        if magic[:2] != b"\x00\x00":
            raise ValueError(
                f"{path}: wrong magic number {magic.hex()}: an IDX file starts with two zero bytes, a dtype code and "
                "the number of dimensions (is this an IDX file?)"
            )
        code, ndim = magic[2], magic[3]
        if code not in IDX_DTYPES:
            known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            raise ValueError(f"{path}: unknown IDX dtype code 0x{code:02X}; known codes: {known}")
        if not 1 <= ndim <= MAX_IDX_DIMS:
            raise ValueError(f"{path}: {ndim} dimensions in the header; expected 1 to {MAX_IDX_DIMS}")
        dims = tuple(int(d) for d in np.frombuffer(_read_exactly(stream, 4 * ndim, path, "the dimensions"), ">u4"))
        dtype = IDX_DTYPES[code]
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        body = _read_exactly(stream, expected, path, f"the data of shape {dims} ({dtype.name})")
        extra = _read_exactly_or_less(stream, path)
        if extra:
            raise ValueError(
                f"{path}: {'at least ' if extra >= 1024 else ''}{extra} bytes after the data of shape {dims}: the "
                "header does not match the file (garbled or not an IDX file)"
            )
    return np.frombuffer(body, dtype=dtype).astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _read_exactly_or_less(stream: BinaryIO, path: Path) -> int:
    """How many bytes follow the data (at most 1024 are read)."""
    try:
        return len(stream.read(1024))
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path}: corrupt compressed data after the data: {exc}") from None


def read_idx_images_labels(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """An MNIST / Fashion-MNIST pair: uint8 images (N, H, W) and uint8 labels (N,) with values 0..9."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels")
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{labels_path}: label {int(labels.max())} is not a class 0..9")
    return images, labels


# --- CIFAR-10 python batches -----------------------------------------------------------------------------------


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover (numpy 1.x)
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _frombuffer() -> Any:
    try:
        from numpy._core.numeric import _frombuffer as fn  # numpy >= 2 (pickle protocol 5)
    except ImportError:  # pragma: no cover
        from numpy.core.numeric import _frombuffer as fn
    return fn


def _safe_dtype(*args: Any, **kwargs: Any) -> np.dtype:
    dtype = np.dtype(*args, **kwargs)
    if dtype.hasobject:  # object arrays unpickle arbitrary objects
        raise pickle.UnpicklingError(f"refused: an object dtype {dtype} (only plain numeric arrays are allowed)")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # pickle protocol 2 (Python 3) stores bytes as _codecs.encode(text, "latin1"): nothing else is allowed
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused: _codecs.encode with encoding {encoding!r} (only latin1 is allowed)")
    return text.encode("latin1")


_BUILTINS = frozenset(
    {"list", "dict", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float", "complex", "bool"}
)


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers, and refuses every other global.

    Allowed: ``numpy.core.multiarray._reconstruct`` and ``numpy._core.multiarray._reconstruct`` (protocols 0-4),
    ``numpy._core.numeric._frombuffer`` (protocol 5), ``numpy.ndarray``, ``numpy.dtype`` (never an object
    dtype), ``_codecs.encode`` with the latin1 codec only (how Python 3 writes bytes under protocol 2), and
    the builtins list, dict, tuple, set, frozenset, bytearray, bytes, str, int, float, complex, bool.
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct()
        if name == "_frombuffer" and module in ("numpy.core.numeric", "numpy._core.numeric"):
            return _frombuffer()
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return _safe_dtype
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise pickle.UnpicklingError(
            f"refused to load global {module}.{name}: only numpy arrays and plain containers may be unpickled"
        )


def restricted_load(path: str | Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (Python 2 strings read as bytes, as CIFAR needs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: unsafe or corrupt pickle: {exc}") from None
    except (
        EOFError,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        MemoryError,
        OverflowError,
        UnicodeDecodeError,
    ) as exc:
        raise ValueError(f"{path}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def _key(batch: dict[Any, Any], name: str) -> Any:
    for key in (name, name.encode()):
        if key in batch:
            return batch[key]
    return None


def read_cifar_batch(path: str | Path, image_shape: tuple[int, int, int] = (3, 32, 32)) -> tuple[np.ndarray, ...]:
    """One CIFAR-10 python batch: uint8 images (N, 3, 32, 32) and int64 labels (N,) with values 0..9."""
    path = Path(path)
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict with 'data' and 'labels', got {type(batch).__name__}")
    data, labels = _key(batch, "data"), _key(batch, "labels")
    size = int(np.prod(image_shape))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != size:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, {size}), got {got}")
    if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
        got = len(labels) if isinstance(labels, (list, np.ndarray)) else type(labels).__name__
        raise ValueError(f"{path}: 'labels' must be a list of {len(data)} class indices, got {got}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{path}: 'labels' must be integers 0..9") from None
    if y.ndim != 1 or (y.size and (y.min() < 0 or y.max() > 9)):
        raise ValueError(f"{path}: 'labels' must be integers 0..9")
    return data.reshape(len(data), *image_shape).copy(), y
