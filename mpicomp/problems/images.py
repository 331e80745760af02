"""Readers of the MNIST and CIFAR-10 image files (``mnist:DIR``, ``cifar10:DIR`` in `data`).

Nothing here downloads anything: the user points to a directory holding the files as they are
distributed. Both readers return ``(X, y)``: ``X`` float32, one image per row, flattened
C-major (row-major of ``(channels, height, width)``) and normalised per channel as
``(x/255 − mean)/std`` with the usual constants (`MNIST_MEAN` / `MNIST_STD`, `CIFAR10_MEAN` /
`CIFAR10_STD`); ``y`` int64 in ``0..9``.

MNIST (`read_mnist`)
    The four idx files ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (`MNIST_FILES`). Each may also be
    gzipped (``NAME.gz``) or spelled with a ``.`` before ``idx`` (``train-images.idx3-ubyte``,
    as some mirrors have them). The idx header is checked strictly (`read_idx`).
CIFAR-10 (`read_cifar10`)
    The "python version": ``data_batch_1`` … ``data_batch_5`` and ``test_batch``
    (`CIFAR10_TRAIN_FILES`, `CIFAR10_TEST_FILE`), in the directory or in its subdirectory
    ``cifar-10-batches-py`` (what ``cifar-10-python.tar.gz`` unpacks to). These are pickles, so
    they are read by `CifarUnpickler`, which builds NumPy arrays and nothing else: a file that
    asks for any other Python object is refused before anything of it runs.

Memory: the pixels stay ``uint8`` until they are mapped, through a 256-entry float32 table per
channel, straight into the float32 result; no float64 copy of a whole set is made. Each value is
the formula evaluated in float64 and rounded once to float32.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

N_CLASSES = 10

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Part → (images file, labels file), by their canonical names."""
MNIST_SHAPE = (1, 28, 28)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_SUBDIR = "cifar-10-batches-py"
CIFAR10_SHAPE = (3, 32, 32)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

PARTS = ("train", "test")

_CHUNK = 1 << 20  # bytes mapped to float32 at a time (bounds the index copy np.take makes)
_IDX_IMAGES = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS = 0x00000801  # unsigned byte, 1 dimension


# --------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------
def _check_part(part: str) -> str:
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    return part


def _check_n(n) -> int | None:
    """``n`` (None: all samples) checked as an integer >= 1."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return None if n is None else int(n)


def _first(n: int | None, available: int, part: str, where: str) -> int:
    """How many samples to keep: ``n`` (checked by `_check_n`), at most ``available``."""
    if n is None:
        return available
    if n > available:
        raise ValueError(f"n={n} is more than the {available} samples of the {part} set in "
                         f"{where}")
    return n


def _directory(path: str | os.PathLike[str], what: str, expected: Sequence[str]) -> Path:
    """``path`` as a Path; ValueError naming it and the expected files when it is no
    directory."""
    directory = Path(os.fspath(path)).expanduser()
    if not directory.is_dir():
        state = "is not a directory" if directory.exists() else "does not exist"
        hint = ""
        if "," in os.fspath(path) and "=" in os.fspath(path):
            hint = (" (the directory is everything after the ':' up to the first ',KEY=' of a "
                    "known key; check the keys)")
        raise ValueError(f"{what}: {os.fspath(path)!r} {state}{hint}; expected a directory "
                         f"with the files {', '.join(expected)}")
    return directory


def normalising_table(mean: float, std: float) -> np.ndarray:
    """The float32 value of each byte ``x`` in ``0..255``: ``(x/255 − mean)/std``, computed in
    float64 and rounded once."""
    return ((np.arange(256, dtype=np.float64) / 255.0 - mean) / std).astype(np.float32)


def _normalised(raw: np.ndarray, mean: Sequence[float], std: Sequence[float],
                out: np.ndarray | None = None) -> np.ndarray:
    """``raw`` (uint8, ``N × (C·P)``, C-major) as float32 ``N × (C·P)`` normalised with the
    per-channel ``mean`` and ``std`` (``C`` of each), written into ``out`` when given."""
    channels = len(mean)
    n, width = raw.shape
    if out is None:
        out = np.empty((n, width), dtype=np.float32)
    tables = [normalising_table(m, s) for m, s in zip(mean, std)]
    planes_in = raw.reshape(n, channels, width // channels)
    planes_out = out.reshape(n, channels, width // channels)
    step = max(1, _CHUNK // max(width, 1))  # np.take makes an intp copy of the indices
    for start in range(0, n, step):
        rows = slice(start, start + step)
        for c, table in enumerate(tables):
            np.take(table, planes_in[rows, c, :], out=planes_out[rows, c, :])
    return out


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The contents of ``path``, gunzipped when its name ends in ``.gz``; at most ``limit``
    bytes (a forged archive cannot expand beyond what the caller can use)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read(-1 if limit is None else limit)
        if limit is None:
            return path.read_bytes()
        with open(path, "rb") as f:
            return f.read(limit)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------
def read_idx(path: str | os.PathLike[str], kind: str) -> np.ndarray:
    """An idx file of MNIST as a uint8 array: ``N × 28 × 28`` images or ``N`` labels.

    Parameters
    ----------
    path : path-like
        The file; gunzipped first when its name ends in ``.gz``.
    kind : {"images", "labels"}
        What the file must hold.

    Raises
    ------
    ValueError
        Naming the file and what is wrong: a header shorter than it says, a magic number other
        than ``0x00000803`` (images: unsigned bytes, 3 dimensions) or ``0x00000801`` (labels:
        unsigned bytes, 1 dimension), images that are not 28 × 28, fewer bytes than the header
        promises (truncated) or more (trailing data), or a label outside ``0..9``.
    """
    if kind not in ("images", "labels"):
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    path = Path(os.fspath(path))
    magic, ndim = (_IDX_IMAGES, 3) if kind == "images" else (_IDX_LABELS, 1)
    header = 4 + 4 * ndim
    data = _read_bytes(path, header)  # the header first: it bounds what is read next
    if len(data) < 4:
        raise ValueError(f"{path}: not an idx file: it has only {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: not an MNIST {kind} file: magic number 0x{found:08X}, expected "
                         f"0x{magic:08X} (unsigned bytes, {ndim} dimension{'s' * (ndim > 1)})")
    if len(data) < header:
        raise ValueError(f"{path}: truncated idx header: {len(data)} bytes, the header of an "
                         f"idx {kind} file has {header}")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if kind == "images" and dims[1:] != MNIST_SHAPE[1:]:
        raise ValueError(f"{path}: images are {dims[1]}×{dims[2]}, expected "
                         f"{MNIST_SHAPE[1]}×{MNIST_SHAPE[2]}")
    expected = math.prod(dims)
    data = _read_bytes(path, header + expected + 1)  # one byte more shows trailing data
    payload = len(data) - header
    what = (f"{dims[0]} images of {dims[1]}×{dims[2]} pixels" if kind == "images"
            else f"{dims[0]} labels")
    if payload < expected:
        raise ValueError(f"{path}: truncated: the header announces {what} ({expected} bytes) "
                         f"but only {payload} bytes follow it")
    if payload > expected:
        raise ValueError(f"{path}: {payload - expected} bytes of trailing data after the "
                         f"{what} ({expected} bytes) its header announces")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    if kind == "labels" and array.size and array.max() >= N_CLASSES:
        bad = int(np.flatnonzero(array >= N_CLASSES)[0])
        raise ValueError(f"{path}: label {int(array[bad])} of sample {bad} is out of range "
                         f"0..{N_CLASSES - 1}")
    return array


def _mnist_candidates(name: str) -> list[str]:
    """The file names accepted for the canonical ``name``: itself, with ``.`` before ``idx``,
    and either gzipped."""
    stem, _, idx = name.rpartition("-idx")  # "train-images", "3-ubyte"
    dotted = f"{stem}.idx{idx}"
    return [name, dotted, f"{name}.gz", f"{dotted}.gz"]


def _all_mnist_names() -> list[str]:
    return [name for part in PARTS for name in MNIST_FILES[part]]


def mnist_file(directory: str | os.PathLike[str], name: str) -> Path:
    """The file in ``directory`` that holds the canonical MNIST file ``name``: ``name``, the
    mirrors' spelling with ``.`` before ``idx``, or either with ``.gz`` (first found, in this
    order). ValueError naming the directory and listing the expected names when none is
    there."""
    directory = _directory(directory, "mnist", _all_mnist_names())
    candidates = _mnist_candidates(name)
    for candidate in candidates:
        if (directory / candidate).is_file():
            return directory / candidate
    raise ValueError(
        f"mnist: no {name} in {directory} (looked for {', '.join(candidates)}); expected the "
        f"files {', '.join(_all_mnist_names())} (each may be gzipped as NAME.gz, and "
        "'-idx' may be written '.idx')")


def read_mnist(directory: str | os.PathLike[str], part: str = "train",
               n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of the MNIST training (60 000) or test (10 000) set in ``directory``.

    Parameters
    ----------
    directory : path-like
        Holds the idx files (see the module docstring).
    part : {"train", "test"}
    n : int, optional
        Keep only the first ``n`` samples.

    Returns
    -------
    X : numpy.ndarray
        float32 ``N × 784`` (images of shape `MNIST_SHAPE`), ``(x/255 − 0.1307)/0.3081``.
    y : numpy.ndarray
        int64 in ``0..9``.

    Raises
    ------
    ValueError
        The directory or a file is missing, a file is malformed (`read_idx`), or the images and
        labels files disagree on the number of samples.
    """
    images_name, labels_name = MNIST_FILES[_check_part(part)]
    n = _check_n(n)
    images_path = mnist_file(directory, images_name)
    labels_path = mnist_file(directory, labels_name)
    images = read_idx(images_path, "images")
    labels = read_idx(labels_path, "labels")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"mnist: {images_path} has {images.shape[0]} images but "
                         f"{labels_path} has {labels.shape[0]} labels")
    n = _first(n, images.shape[0], part, os.fspath(directory))
    images = images[:n].reshape(n, -1)
    return _normalised(images, MNIST_MEAN, MNIST_STD), labels[:n].astype(np.int64)


# --------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------
class _Refused(pickle.UnpicklingError):
    """A global the CIFAR-10 unpickler does not allow."""


class CifarUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` for CIFAR-10 batches that resolves only the globals NumPy's array
    pickles name: ``numpy.core.multiarray._reconstruct`` (or ``numpy._core.multiarray``, its
    NumPy 2 home), ``numpy.ndarray`` and ``numpy.dtype``. Any other global (``os.system``,
    ``builtins.eval`` ...) raises `pickle.UnpicklingError` when the pickle names it, before it
    can be called; so does a persistent id."""

    ALLOWED = (
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise _Refused(f"it asks to load {module}.{name}")
        if name == "_reconstruct":
            return _empty_reconstruct
        # ``ndarray`` only as the class argument of ``_reconstruct``: a sentinel, never the
        # constructor itself, so no pickle can allocate an array of a size the file does not hold
        return _NDARRAY if name == "ndarray" else np.dtype


class _NdarraySentinel:
    """Stands for ``numpy.ndarray`` in a CIFAR-10 pickle; calling it is refused."""

    def __call__(self, *args, **kwargs):
        raise _Refused(f"it asks to call numpy.ndarray{args!r} itself (an array of a size the "
                       "file does not hold)")


_NDARRAY = _NdarraySentinel()


def _empty_reconstruct(cls, shape, dtype):
    """NumPy's ``_reconstruct`` as array pickles call it: an empty array whose contents and
    size come from the pickle's own data (its BUILD step); anything else is refused."""
    if cls is not _NDARRAY or tuple(shape) != (0,):
        raise _Refused(f"it asks to build an array of class {cls!r} and shape {shape!r}")
    # Resolved here, not by import: importing numpy.core warns under NumPy 2.
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct(np.ndarray, (0,), dtype)


def _unpickle_batch(path: Path) -> dict:
    """The dict pickled in the CIFAR-10 batch ``path``, read with `CifarUnpickler`."""
    try:
        with open(path, "rb") as f:
            batch = CifarUnpickler(f, encoding="bytes").load()
    except _Refused as exc:
        raise ValueError(f"{path}: not a CIFAR-10 batch: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read: {exc}") from None
    except Exception as exc:  # whatever a malformed pickle makes the allowed constructors do
        raise ValueError(f"{path}: not a CIFAR-10 batch: not a readable pickle "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: not a CIFAR-10 batch: it holds a {type(batch).__name__}, "
                         "not a dict")
    return batch


def _entry(batch: dict, key: str, path: Path):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise ValueError(f"{path}: not a CIFAR-10 batch: no {key.encode()!r} entry (it has "
                     f"{sorted(map(repr, batch))[:10]})")


def read_cifar10_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(data, labels)`` of one CIFAR-10 batch file: uint8 ``N × 3072`` (rows C-major
    ``3 × 32 × 32``) and int64 ``N`` in ``0..9``.

    Raises
    ------
    ValueError
        Naming the file: it cannot be read, it is not a pickled dict (or asks for a Python
        object other than NumPy's array constructors, see `CifarUnpickler`), it lacks
        ``b'data'`` or ``b'labels'``, the data are not a uint8 ``N × 3072`` array, the labels
        are not ``N`` integers, or a label is outside ``0..9``.
    """
    path = Path(os.fspath(path))
    batch = _unpickle_batch(path)
    data = _entry(batch, "data", path)
    labels = _entry(batch, "labels", path)
    width = int(np.prod(CIFAR10_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or (
            data.shape[1] != width):
        described = (f"a {data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray)
                     else f"a {type(data).__name__}")
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape N × {width}, found "
                         f"{described}")
    given = labels
    try:
        labels = np.asarray(given)
    except Exception:  # ragged or odd objects
        labels = np.asarray([None])
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ValueError(f"{path}: b'labels' must be a list of N integers, found a "
                         f"{type(given).__name__} (as an array: {labels.dtype}, shape "
                         f"{labels.shape})")
    if labels.shape[0] != data.shape[0]:
        raise ValueError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    out_of_range = (labels < 0) | (labels >= N_CLASSES)
    if out_of_range.any():
        bad = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(f"{path}: label {int(labels[bad])} of sample {bad} is out of range "
                         f"0..{N_CLASSES - 1}")
    return data, labels.astype(np.int64)


def _all_cifar_names() -> list[str]:
    return [*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE]


def cifar10_directory(path: str | os.PathLike[str]) -> Path:
    """The directory of the CIFAR-10 batches: ``path`` itself, or its subdirectory
    ``cifar-10-batches-py`` when ``path`` holds no batch but that does."""
    directory = _directory(path, "cifar10", _all_cifar_names())
    if not any((directory / name).is_file() for name in _all_cifar_names()) and (
            directory / CIFAR10_SUBDIR).is_dir():
        return directory / CIFAR10_SUBDIR
    return directory


def read_cifar10(directory: str | os.PathLike[str], part: str = "train",
                 n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of the CIFAR-10 training (50 000, the five ``data_batch_*``) or test (10 000,
    ``test_batch``) set in ``directory`` (or its ``cifar-10-batches-py``).

    Parameters
    ----------
    directory : path-like
    part : {"train", "test"}
    n : int, optional
        Keep only the first ``n`` samples; only the batches these need are read.

    Returns
    -------
    X : numpy.ndarray
        float32 ``N × 3072`` (images of shape `CIFAR10_SHAPE`), channel ``c`` normalised as
        ``(x/255 − CIFAR10_MEAN[c])/CIFAR10_STD[c]``.
    y : numpy.ndarray
        int64 in ``0..9``.

    Raises
    ------
    ValueError
        The directory or a needed batch file is missing (the message lists the expected files),
        or a batch is malformed (`read_cifar10_batch`).
    """
    names = CIFAR10_TRAIN_FILES if _check_part(part) == "train" else (CIFAR10_TEST_FILE,)
    folder = cifar10_directory(directory)
    for name in names:
        if not (folder / name).is_file():
            raise ValueError(
                f"cifar10: no {name} in {folder}; expected the files "
                f"{', '.join(_all_cifar_names())} of the CIFAR-10 python version (unpack "
                f"cifar-10-python.tar.gz; the directory may also be the parent of "
                f"{CIFAR10_SUBDIR})")
    n = _check_n(n)
    datas, labels, have = [], [], 0
    for name in names:
        data, y = read_cifar10_batch(folder / name)
        datas.append(data)
        labels.append(y)
        have += data.shape[0]
        if n is not None and have >= n:
            break
    n = _first(n, have, part, os.fspath(folder))
    out = np.empty((n, int(np.prod(CIFAR10_SHAPE))), dtype=np.float32)
    start = 0
    for data in datas:
        rows = min(data.shape[0], n - start)
        _normalised(data[:rows], CIFAR10_MEAN, CIFAR10_STD, out=out[start:start + rows])
        start += rows
    return out, np.concatenate(labels)[:n]


__all__ = [
    "MNIST_FILES", "MNIST_SHAPE", "MNIST_MEAN", "MNIST_STD", "CIFAR10_TRAIN_FILES",
    "CIFAR10_TEST_FILE", "CIFAR10_SHAPE", "CIFAR10_MEAN", "CIFAR10_STD", "CifarUnpickler",
    "read_idx", "mnist_file", "read_mnist", "read_cifar10_batch", "cifar10_directory",
    "read_cifar10", "normalising_table",
]
