"""A hand-written reader for LIBSVM / svmlight text files.

One sample per line::

    <label> [qid:<int>] <index>:<value> <index>:<value> ...   # optional comment

- ``label`` is a real number (``+1``, ``-1``, ``0``, ``3``, ``2.5`` ...); it is returned as read
  (float64). Mapping labels to ``±1`` or ``0..C−1`` is the caller's business
  (`mpicomp.problems.data.load_libsvm` does it when asked).
- indices are 1-based by default (the LIBSVM convention), 0-based with ``zero_based=True``; on
  each line they must be strictly increasing (so no duplicates);
- ``#`` starts a comment that runs to the end of the line; blank and comment-only lines are
  skipped; a ``qid:`` token (svmlight ranking files) is checked to be an integer and ignored;
- a line with a label and no features is a sample whose features are all zero;
- files ending in ``.gz``, ``.bz2`` or ``.xz`` are decompressed on the fly (standard library).

Every error is a `ValueError` whose message starts with ``PATH:LINE:`` (line numbers count every
physical line from 1, comments and blanks included) and quotes the offending text.

Each line is split with plain string operations and converted in bulk; the checks that need the
whole line (ordering, range) are done once on NumPy arrays at the end, and only a line found
wrong is looked at token by token to word the message. About 10⁵ lines of 10² entries per
second or so on one core.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import math
import os
from dataclasses import dataclass
from typing import IO, Union

import numpy as np
import scipy.sparse as sp

from ..limits import check_dimension, check_regular_file

PathLike = Union[str, "os.PathLike[str]"]

_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open_text(path: PathLike) -> IO[str]:
    check_regular_file(path, "LIBSVM file")
    opener = _OPENERS.get(os.path.splitext(os.fspath(path))[1].lower())
    if opener is None:
        return open(path, encoding="utf-8")
    return opener(path, "rt", encoding="utf-8")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(text: str) -> float | None:
    """``float(text)`` if it is a finite number, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _diagnose(where: str, line: str, zero_based: bool, n_features: int | None) -> None:
    """Raise the precise error for one data line (comment already removed); return if it is fine."""
    tokens = line.split()
    if _number(tokens[0]) is None:
        raise ValueError(
            f"{where}: label {tokens[0]!r} is not a finite number (a line is "
            f"'<label> <index>:<value> ...'): {_short(line)!r}"
        )
    base = 0 if zero_based else 1
    previous = None
    for pos, token in enumerate(tokens[1:]):
        index_text, sep, value_text = token.partition(":")
        if pos == 0 and index_text == "qid" and sep:
            try:
                int(value_text)
            except ValueError:
                raise ValueError(
                    f"{where}: malformed qid token {token!r}; expected qid:<int>") from None
            continue
        if not sep or not index_text or not value_text:
            raise ValueError(
                f"{where}: malformed token {token!r}; expected <index>:<value>"
            )
        try:
            index = int(index_text)
        except ValueError:
            raise ValueError(
                f"{where}: feature index {index_text!r} in token {token!r} is not an integer"
            ) from None
        if _number(value_text) is None:
            raise ValueError(
                f"{where}: value {value_text!r} in token {token!r} is not a finite number"
            )
        if index < base:
            hint = ("; indices are 1-based here, pass zero_based=True (the apps' --zero-based) "
                    "for 0-based files" if index == 0 and not zero_based else "")
            raise ValueError(
                f"{where}: feature index {index} in token {token!r} is below {base}{hint}"
            )
        if n_features is not None and index - base >= n_features:
            raise ValueError(
                f"{where}: feature index {index} in token {token!r} is out of range: with "
                f"n_features={n_features} and {'0' if zero_based else '1'}-based indices the "
                f"largest valid index is {n_features - 1 + base}"
            )
        if previous is not None and index <= previous:
            kind = "duplicate" if index == previous else "decreasing"
            raise ValueError(
                f"{where}: {kind} feature index {index} in token {token!r} (after index "
                f"{previous}); indices on a line must be strictly increasing"
            )
        previous = index


def _line_text(path: PathLike, lineno: int) -> str:
    with _open_text(path) as fh:
        for k, line in enumerate(fh, start=1):
            if k == lineno:
                return line.split("#", 1)[0].strip()
    raise AssertionError("line vanished")  # pragma: no cover


def _checked_n_features(n_features) -> int | None:
    """``n_features`` as an int (None stays None); ValueError unless a positive integer."""
    if n_features is not None:
        if (isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer))
                or n_features < 1):
            raise ValueError(f"n_features must be a positive integer or None, got {n_features!r}")
        n_features = int(n_features)
    return n_features


def _parse_line(line: str) -> tuple[float, list[int], list[float]]:
    """``(label, indices, values)`` of one data line (comment removed, not blank), indices as
    written; ValueError or IndexError when it is malformed (`_diagnose` words why)."""
    tokens = line.split()
    feats = tokens[1:]
    if feats and feats[0].startswith("qid:"):
        feats = feats[1:]
    label = float(tokens[0])
    parts = [t.split(":") for t in feats]
    idx = [int(p[0]) for p in parts]
    val = [float(p[1]) for p in parts]
    if any(len(p) != 2 for p in parts) or not math.isfinite(label):
        raise ValueError
    if tokens[1:2] and tokens[1].startswith("qid:"):
        int(tokens[1][4:])
    return label, idx, val


@dataclass
class _Samples:
    """The samples of a file, read but not yet checked as a whole.

    Attributes
    ----------
    labels : list of float
    linenos : list of int
        Physical line of each sample.
    indptr : numpy.ndarray (int64)
        CSR row pointers: sample ``r``'s entries are ``indptr[r]:indptr[r + 1]``.
    cols : numpy.ndarray (int64)
        Column of each entry (index minus the base).
    data : numpy.ndarray (float64)
        Value of each entry.
    """

    labels: list[float]
    linenos: list[int]
    indptr: np.ndarray
    cols: np.ndarray
    data: np.ndarray


#: samples parsed and checked at a time: the reader holds one block of Python lists at most
BLOCK_SAMPLES = 8192


def _sample_blocks(path: PathLike, zero_based: bool, n_features: int | None,
                   block: int | None = None):
    """The samples of ``path``, ``block`` at a time, each block checked as a whole
    (`_check_block`); ValueError for a malformed line, a file that is not UTF-8 or one without
    samples. The first error in file order is the one raised. ``block``: `BLOCK_SAMPLES`."""
    block = block or BLOCK_SAMPLES
    name = os.fspath(path)
    pending = _Pending()
    n_lines = n_samples = 0
    try:
        with _open_text(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                n_lines = lineno
                hash_at = raw.find("#")
                line = (raw[:hash_at] if hash_at >= 0 else raw).strip()
                if not line:
                    continue
                try:
                    label, idx, val = _parse_line(line)
                except (ValueError, IndexError) as err:
                    if pending.labels:  # an earlier line's error comes first
                        _check_block(path, pending.samples(zero_based), zero_based, n_features)
                    _diagnose(f"{name}:{lineno}", line, zero_based, n_features)
                    raise AssertionError(  # pragma: no cover - _diagnose must have raised
                        f"{name}:{lineno}: unparsable line {_short(line)!r}") from err
                pending.add(label, lineno, idx, val)
                n_samples += 1
                if len(pending.labels) == block:
                    yield _check_block(path, pending.samples(zero_based), zero_based, n_features)
                    pending = _Pending()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a UTF-8 text file ({exc})") from None
    if pending.labels:
        yield _check_block(path, pending.samples(zero_based), zero_based, n_features)
    if not n_samples:
        what = "the file is empty" if n_lines == 0 else (
            f"all {n_lines} lines are blank or comments")
        raise ValueError(f"{name}: no samples to read: {what}")


class _Pending:
    """The lines of the block being read, as Python lists."""

    def __init__(self):
        self.labels: list[float] = []
        self.linenos: list[int] = []       # physical line of each sample
        self.counts: list[int] = []        # entries per sample
        self.index_chunks: list[list[int]] = []
        self.value_chunks: list[list[float]] = []

    def add(self, label: float, lineno: int, idx: list[int], val: list[float]) -> None:
        self.labels.append(label)
        self.linenos.append(lineno)
        self.counts.append(len(idx))
        self.index_chunks.append(idx)
        self.value_chunks.append(val)

    def samples(self, zero_based: bool) -> _Samples:
        indptr = np.zeros(len(self.counts) + 1, dtype=np.int64)
        np.cumsum(np.asarray(self.counts, dtype=np.int64), out=indptr[1:])
        nnz = int(indptr[-1])
        cols = np.fromiter((i for chunk in self.index_chunks for i in chunk), dtype=np.int64,
                           count=nnz)
        data = np.fromiter((v for chunk in self.value_chunks for v in chunk), dtype=np.float64,
                           count=nnz)
        cols -= 0 if zero_based else 1
        return _Samples(self.labels, self.linenos, indptr, cols, data)


def _check_block(path: PathLike, samples: _Samples, zero_based: bool,
                 n_features: int | None) -> _Samples:
    """``samples`` if every entry is in range, after a smaller index on its line and finite;
    else the first bad entry's line is diagnosed token by token (ValueError)."""
    entry = _first_bad_entry(samples, n_features)
    if entry is not None:
        row = int(np.searchsorted(samples.indptr, entry, side="right") - 1)
        lineno = samples.linenos[row]
        where = f"{os.fspath(path)}:{lineno}"
        _diagnose(where, _line_text(path, lineno), zero_based, n_features)
        raise AssertionError(f"{where}: invalid entry not diagnosed")  # pragma: no cover
    return samples


def _concatenated(blocks: list[_Samples]) -> _Samples:
    """One `_Samples` of consecutive blocks."""
    if len(blocks) == 1:
        return blocks[0]
    ends = np.cumsum([b.indptr[-1] for b in blocks])
    indptr = np.concatenate([[0]] + [b.indptr[1:] + (ends[k - 1] if k else 0)
                                     for k, b in enumerate(blocks)])
    return _Samples([v for b in blocks for v in b.labels], [v for b in blocks for v in b.linenos],
                    indptr.astype(np.int64), np.concatenate([b.cols for b in blocks]),
                    np.concatenate([b.data for b in blocks]))


def _first_bad_entry(samples: _Samples, n_features: int | None) -> int | None:
    """Index of the first entry that is out of range, not after a larger index on its line, or
    not finite; None when all are fine."""
    cols, data, indptr = samples.cols, samples.data, samples.indptr
    nnz = cols.size
    bad = np.zeros(nnz, dtype=bool)
    if nnz:
        bad |= cols < 0
        if n_features is not None:
            bad |= cols >= n_features
        if nnz > 1:
            not_row_start = np.ones(nnz, dtype=bool)
            starts = indptr[:-1][np.diff(indptr) > 0]
            not_row_start[starts] = False
            step_ok = np.empty(nnz, dtype=bool)
            step_ok[0] = True
            step_ok[1:] = cols[1:] > cols[:-1]
            bad |= not_row_start & ~step_ok
        if not np.isfinite(data).all():
            bad |= ~np.isfinite(data)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _width(n_features: int | None, widest: int, name: str) -> int:
    """The matrix width: ``n_features`` when given, else ``widest`` (checked to fit)."""
    width = n_features if n_features is not None else widest
    check_dimension(f"{name}: {width} features", width)
    return width


def _csr_matrix(samples: _Samples, width: int) -> sp.csr_matrix:
    """The samples as a CSR matrix with sorted indices, ``width`` wide; int32 indices where they
    fit."""
    nnz = samples.cols.size
    index_dtype = np.int32 if max(width, nnz) < np.iinfo(np.int32).max else np.int64
    A = sp.csr_matrix(
        (samples.data, samples.cols.astype(index_dtype), samples.indptr.astype(index_dtype)),
        shape=(len(samples.labels), width),
    )
    A.has_sorted_indices = True
    return A


def read_libsvm(
    path: PathLike,
    n_features: int | None = None,
    zero_based: bool = False,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Read a LIBSVM / svmlight file into a CSR matrix and a float64 label vector.

    Parameters
    ----------
    path : str or os.PathLike
        The file (``.gz`` / ``.bz2`` / ``.xz`` are decompressed).
    n_features : int, optional
        Number of columns. When given, an index beyond it is an error (use this to read a test
        file with the training file's width); when None, the width is the largest index seen.
    zero_based : bool
        False (default, LIBSVM convention): the first feature is ``1``; True: it is ``0``.

    Returns
    -------
    A : scipy.sparse.csr_matrix, float64, shape ``(n_samples, n_features)``, sorted indices
    y : numpy.ndarray, float64, the labels as written

    Raises
    ------
    ValueError
        ``PATH:LINE: ...`` for a malformed token, a non-numeric label or value, a non-increasing
        or duplicate index on a line, an index below the base or at/over ``n_features``; and
        ``PATH: ...`` for a file with no samples.
    FileNotFoundError
        The file does not exist.
    """
    n_features = _checked_n_features(n_features)
    samples = _concatenated(list(_sample_blocks(path, zero_based, n_features)))
    width = _width(n_features, int(samples.cols.max()) + 1 if samples.cols.size else 1,
                   os.fspath(path))
    return _csr_matrix(samples, width), np.asarray(samples.labels, dtype=np.float64)


@dataclass
class LibsvmSummary:
    """What one pass over a LIBSVM file finds, keeping no rows.

    Attributes
    ----------
    labels : numpy.ndarray
        Every sample's label as written (float64).
    n_features : int
        The width: ``n_features`` when given, else the largest index seen (at least 1).
    nnz : int
        Stored entries in all.
    """

    labels: np.ndarray
    n_features: int
    nnz: int


def scan_libsvm(path: PathLike, n_features: int | None = None,
                zero_based: bool = False) -> LibsvmSummary:
    """Check every line of ``path`` as `read_libsvm` does, keeping only the labels and the
    sizes: memory of one block of lines and one float per sample."""
    n_features = _checked_n_features(n_features)
    labels, widest, nnz = [], 0, 0
    for samples in _sample_blocks(path, zero_based, n_features):
        labels.extend(samples.labels)
        nnz += samples.cols.size
        widest = max(widest, int(samples.cols.max()) + 1 if samples.cols.size else 1)
    return LibsvmSummary(np.asarray(labels, dtype=np.float64),
                         _width(n_features, widest, os.fspath(path)), nnz)


def read_libsvm_rows(path: PathLike, rows, n_features: int,
                     zero_based: bool = False) -> sp.csr_matrix:
    """Samples ``rows`` (indices among the file's samples, in the order wanted) of a file that
    `scan_libsvm` has checked, as a CSR matrix ``n_features`` wide: only those rows are kept."""
    rows = np.asarray(rows, dtype=np.int64)
    wanted = np.unique(rows)
    kept: list[_Samples] = []
    start = 0
    for samples in _sample_blocks(path, zero_based, n_features):
        stop = start + len(samples.labels)
        lo, hi = np.searchsorted(wanted, (start, stop))
        if hi > lo:
            kept.append(_rows_of(samples, wanted[lo:hi] - start))
        start = stop
    picked = _concatenated(kept) if kept else _Samples([], [], np.zeros(1, np.int64),
                                                       np.zeros(0, np.int64), np.zeros(0))
    if picked.indptr.size - 1 != wanted.size:
        raise ValueError(f"{os.fspath(path)}: rows up to {int(wanted[-1])} asked for, but the "
                         f"file has {start} samples (was it changed while being read?)")
    A = _csr_matrix(picked, n_features)
    return A if np.array_equal(rows, wanted) else A[np.searchsorted(wanted, rows)]


def _rows_of(samples: _Samples, rows: np.ndarray) -> _Samples:
    """The samples ``rows`` (sorted, within the block) of a block."""
    lengths = np.diff(samples.indptr)[rows]
    starts = samples.indptr[rows]
    entries = (np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
               + np.arange(int(lengths.sum())))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return _Samples([samples.labels[r] for r in rows], [samples.linenos[r] for r in rows],
                    indptr, samples.cols[entries], samples.data[entries])


def write_libsvm(path: PathLike, A, y, zero_based: bool = False) -> None:
    """Write ``(A, y)`` in LIBSVM format (explicit zeros are dropped; values use ``repr``).

    ``A`` may be dense or SciPy sparse; the result reads back exactly with `read_libsvm`
    (given the same ``n_features`` when trailing columns are all zero).
    """
    A = sp.csr_matrix(A)
    A.eliminate_zeros()
    A.sort_indices()
    y = np.asarray(y).reshape(-1)
    if y.shape[0] != A.shape[0]:
        raise ValueError(f"y has {y.shape[0]} entries but A has {A.shape[0]} rows")
    base = 0 if zero_based else 1
    with open(path, "w", encoding="utf-8") as fh:
        for r in range(A.shape[0]):
            lo, hi = A.indptr[r], A.indptr[r + 1]
            items = " ".join(f"{int(c) + base}:{float(v)!r}"
                             for c, v in zip(A.indices[lo:hi], A.data[lo:hi]))
            label = y[r]
            label_text = str(int(label)) if float(label).is_integer() else repr(float(label))
            fh.write(f"{label_text} {items}\n" if items else f"{label_text}\n")


__all__ = ["read_libsvm", "scan_libsvm", "read_libsvm_rows", "write_libsvm", "LibsvmSummary"]
