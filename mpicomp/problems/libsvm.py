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


def _read_samples(path: PathLike, zero_based: bool, n_features: int | None) -> _Samples:
    """Parse every line of ``path``; ValueError for a malformed line, a file that is not UTF-8
    or one without samples."""
    name = os.fspath(path)
    labels: list[float] = []
    linenos: list[int] = []       # physical line of each sample
    counts: list[int] = []        # entries per sample
    index_chunks: list[list[int]] = []
    value_chunks: list[list[float]] = []
    n_lines = 0
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
                    _diagnose(f"{name}:{lineno}", line, zero_based, n_features)
                    raise AssertionError(  # pragma: no cover - _diagnose must have raised
                        f"{name}:{lineno}: unparsable line {_short(line)!r}") from err
                labels.append(label)
                linenos.append(lineno)
                counts.append(len(idx))
                index_chunks.append(idx)
                value_chunks.append(val)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a UTF-8 text file ({exc})") from None
    if not labels:
        what = "the file is empty" if n_lines == 0 else (
            f"all {n_lines} lines are blank or comments")
        raise ValueError(f"{name}: no samples to read: {what}")
    indptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(np.asarray(counts, dtype=np.int64), out=indptr[1:])
    nnz = int(indptr[-1])
    cols = np.fromiter((i for chunk in index_chunks for i in chunk), dtype=np.int64, count=nnz)
    data = np.fromiter((v for chunk in value_chunks for v in chunk), dtype=np.float64, count=nnz)
    cols -= 0 if zero_based else 1
    return _Samples(labels, linenos, indptr, cols, data)


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


def _csr_matrix(samples: _Samples, n_features: int | None, name: str) -> sp.csr_matrix:
    """The samples as a CSR matrix with sorted indices, ``n_features`` wide (default: up to the
    largest column seen); int32 indices where they fit."""
    cols, nnz = samples.cols, samples.cols.size
    width = n_features if n_features is not None else (int(cols.max()) + 1 if nnz else 1)
    check_dimension(f"{name}: {width} features", width)
    index_dtype = np.int32 if max(width, nnz) < np.iinfo(np.int32).max else np.int64
    A = sp.csr_matrix(
        (samples.data, cols.astype(index_dtype), samples.indptr.astype(index_dtype)),
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
    name = os.fspath(path)
    n_features = _checked_n_features(n_features)
    samples = _read_samples(path, zero_based, n_features)
    # Whole-file checks; the first bad entry's line is then diagnosed token by token.
    entry = _first_bad_entry(samples, n_features)
    if entry is not None:
        row = int(np.searchsorted(samples.indptr, entry, side="right") - 1)
        lineno = samples.linenos[row]
        where = f"{name}:{lineno}"
        _diagnose(where, _line_text(path, lineno), zero_based, n_features)
        raise AssertionError(f"{where}: invalid entry not diagnosed")  # pragma: no cover
    return _csr_matrix(samples, n_features, name), np.asarray(samples.labels, dtype=np.float64)


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


__all__ = ["read_libsvm", "write_libsvm"]
