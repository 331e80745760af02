"""``cupyx.scipy.sparse`` of the CuPy stand-in: SciPy sparse matrices held "on the device".

A matrix wraps a SciPy sparse matrix of its format (CSR, CSC or COO). Building one from a SciPy
matrix is the explicit host→device copy (counted ``h2d``, with the bytes of its value and index
arrays); `spmatrix.get` is the copy back (``d2h``, bytes and a ``sync``). Products and
element-wise operations with stand-in arrays give stand-in arrays; the value and index arrays
(``data``, ``indices``, ``indptr``, ``row``, ``col``) are stand-in arrays sharing the matrix's
memory. Host operands (NumPy arrays, SciPy matrices) and implicit conversions
(``numpy.asarray(A)``, pickling) are refused with a TypeError, as for `cupy.ndarray`.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as _sp
from cupy import _core, _counters
from cupy import ndarray as _ndarray

__all__ = ["coo_matrix", "csc_matrix", "csr_matrix", "eye", "hstack", "identity", "issparse",
           "isspmatrix", "isspmatrix_coo", "isspmatrix_csc", "isspmatrix_csr", "spmatrix",
           "vstack"]

_PARTS = {"csr": ("data", "indices", "indptr"), "csc": ("data", "indices", "indptr"),
          "coo": ("data", "row", "col")}


def _nbytes(m) -> int:
    return sum(getattr(m, part).nbytes for part in _PARTS[m.format])


def _operand(x):
    """``x`` as SciPy/NumPy sees it; host data refused; NotImplemented for unknown types."""
    if isinstance(x, spmatrix):
        return x._m
    if isinstance(x, _ndarray):
        return x._a
    if isinstance(x, (numbers.Number, np.generic)):
        return x
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return x
        raise _core.refuse_h2d(f"a NumPy array operand of shape {x.shape}")
    if _sp.issparse(x):
        raise _core.refuse_h2d(f"a SciPy {type(x).__name__} operand")
    return NotImplemented


def _wrap(x):
    """SciPy matrices as stand-in sparse matrices, NumPy results as stand-in arrays."""
    if _sp.issparse(x):
        return spmatrix._wrap(x)
    if isinstance(x, np.matrix):
        return _ndarray._wrap(np.asarray(x))
    return _core.wrap(x)


class spmatrix:  # noqa: N801 - CuPy's name
    """Base of the stand-in's sparse matrices (see the module docstring)."""

    format = ""
    __array_priority__ = 101  # above SciPy's, so mixed expressions come here

    def __init__(self, arg1, shape=None, dtype=None, copy=False):
        if isinstance(arg1, spmatrix):
            m = arg1._m.asformat(self.format, copy=copy)
        elif _sp.issparse(arg1):
            m = arg1.asformat(self.format, copy=True)
            m = m.astype(dtype) if dtype is not None else m
            _counters.h2d(_nbytes(m))
            dtype = None
        elif isinstance(arg1, _ndarray):
            m = _sp.coo_matrix(arg1._a).asformat(self.format)
        elif isinstance(arg1, tuple):
            m = _MATRIX[self.format](_core.unwrap(arg1, {}), shape=shape, copy=copy)
        elif isinstance(arg1, np.ndarray):
            raise _core.refuse_h2d(f"a NumPy array of shape {arg1.shape}")
        else:
            raise TypeError(f"cannot build a sparse matrix from {type(arg1).__name__}")
        if dtype is not None and m.dtype != dtype:
            m = m.astype(dtype)
        self._m = m

    @staticmethod
    def _wrap(m) -> spmatrix:
        if m.format not in _PARTS:
            m = m.tocsr()
        if not _sp.isspmatrix(m):  # a SciPy sparse array: CuPy's matrices are matrices
            m = _MATRIX[m.format](m)
        obj = object.__new__(_CLASSES[m.format])
        obj._m = m
        return obj

    # ------------------------------------------------------------------ refusals
    def __array__(self, *args, **kwargs):
        raise _core.refuse_d2h("__array__ of a sparse matrix")

    def __array_function__(self, func, types, args, kwargs):
        raise _core.refuse_d2h(f"numpy.{getattr(func, '__name__', func)}")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for x in inputs:
            if isinstance(x, np.ndarray) and x.ndim > 0:
                raise _core.refuse_h2d(f"a NumPy array operand of shape {x.shape}")
        raise _core.refuse_d2h(f"numpy.{ufunc.__name__}")

    def __reduce_ex__(self, protocol):
        raise _core.refuse_d2h("pickling a device sparse matrix")

    def __bool__(self) -> bool:
        if self.shape != (1, 1):
            raise ValueError("The truth value of a sparse matrix with more than one element "
                             "is ambiguous.")
        _counters.count("scalar_reads")
        return self._m.nnz != 0

    # ------------------------------------------------------------------ copies
    def get(self, stream=None):
        """A SciPy copy on the host (``d2h`` with the bytes of its arrays, and a ``sync``)."""
        _counters.d2h(_nbytes(self._m))
        _counters.count("sync")
        return self._m.copy()

    def copy(self) -> spmatrix:
        """A device copy."""
        return spmatrix._wrap(self._m.copy())

    # ------------------------------------------------------------------ properties
    shape = property(lambda self: self._m.shape, doc="(rows, columns).")
    dtype = property(lambda self: self._m.dtype, doc="Data type of the values.")
    nnz = property(lambda self: self._m.nnz, doc="Stored values.")
    ndim = 2
    T = property(lambda self: spmatrix._wrap(self._m.T), doc="The transpose.")

    @property
    def data(self) -> _ndarray:
        """The stored values (a stand-in array sharing the matrix's memory)."""
        return _ndarray._wrap(self._m.data)

    # ------------------------------------------------------------------ conversions
    def tocsr(self, copy=False) -> csr_matrix:
        """The CSR form."""
        return spmatrix._wrap(self._m.tocsr(copy=copy))

    def tocsc(self, copy=False) -> csc_matrix:
        """The CSC form."""
        return spmatrix._wrap(self._m.tocsc(copy=copy))

    def tocoo(self, copy=False) -> coo_matrix:
        """The COO form."""
        return spmatrix._wrap(self._m.tocoo(copy=copy))

    def asformat(self, format, copy=False) -> spmatrix:  # noqa: A002 - SciPy's name
        """The form ``format`` ("csr", "csc", "coo")."""
        return spmatrix._wrap(self._m.asformat(format, copy=copy))

    def astype(self, dtype, copy=True) -> spmatrix:
        """The values cast to ``dtype``."""
        return spmatrix._wrap(self._m.astype(dtype, copy=copy))

    def toarray(self, order=None, out=None) -> _ndarray:
        """A dense stand-in array (on the device: not counted)."""
        return _ndarray._wrap(self._m.toarray(order=order))

    todense = toarray

    def transpose(self, axes=None, copy=False) -> spmatrix:
        """The transpose."""
        return spmatrix._wrap(self._m.transpose(axes=axes, copy=copy))

    # ------------------------------------------------------------------ arithmetic
    def _apply(self, name: str, *args, **kwargs):
        a = [_operand(x) if isinstance(x, (spmatrix, _ndarray, np.ndarray)) or _sp.issparse(x)
             else x for x in args]
        return _wrap(getattr(self._m, name)(*a, **kwargs))

    def multiply(self, other):
        """Element-wise product."""
        return self._apply("multiply", other)

    def power(self, n, dtype=None):
        """Element-wise power of the stored values."""
        return self._apply("power", n, dtype=dtype)

    def dot(self, other):
        """Matrix product."""
        return self._apply("dot", other)

    def sum(self, axis=None, dtype=None, out=None):
        """Sum (a 0-d stand-in array for ``axis=None``, else a 2-D one, as in SciPy)."""
        return self._apply("sum", axis=axis, dtype=dtype)

    def mean(self, axis=None, dtype=None, out=None):
        """Mean (a 0-d stand-in array for ``axis=None``, else a 2-D one, as in SciPy)."""
        return self._apply("mean", axis=axis, dtype=dtype)

    def maximum(self, other):
        """Element-wise maximum."""
        return self._apply("maximum", other)

    def minimum(self, other):
        """Element-wise minimum."""
        return self._apply("minimum", other)

    def __getitem__(self, key):
        return _wrap(self._m[_core._index(key)])

    def _binary(self, other, op, reflected=False):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        return _wrap(op(o, self._m) if reflected else op(self._m, o))

    def __matmul__(self, other):
        if isinstance(other, numbers.Number | np.generic):
            raise ValueError("Scalar operands are not allowed, use '*' instead")
        return self._binary(other, lambda a, b: a @ b)

    def __rmatmul__(self, other):
        if isinstance(other, numbers.Number | np.generic):
            raise ValueError("Scalar operands are not allowed, use '*' instead")
        return self._binary(other, lambda a, b: a @ b, reflected=True)

    def __mul__(self, other):
        return self._binary(other, lambda a, b: a * b)

    def __rmul__(self, other):
        return self._binary(other, lambda a, b: a * b, reflected=True)

    def __truediv__(self, other):
        return self._binary(other, lambda a, b: a / b)

    def __add__(self, other):
        return self._binary(other, lambda a, b: a + b)

    def __radd__(self, other):
        return self._binary(other, lambda a, b: a + b, reflected=True)

    def __sub__(self, other):
        return self._binary(other, lambda a, b: a - b)

    def __rsub__(self, other):
        return self._binary(other, lambda a, b: a - b, reflected=True)

    def __neg__(self):
        return spmatrix._wrap(-self._m)

    # ------------------------------------------------------------------ in place
    def eliminate_zeros(self) -> None:
        """Drop stored zeros (in place)."""
        self._m.eliminate_zeros()

    def sum_duplicates(self) -> None:
        """Add up duplicate entries (in place)."""
        self._m.sum_duplicates()

    def __repr__(self) -> str:
        return (f"<cupyx.scipy.sparse.{type(self).__name__} of shape {self.shape} and dtype "
                f"{self.dtype} with {self.nnz} stored elements>")


class _compressed(spmatrix):  # noqa: N801
    indices = property(lambda self: _ndarray._wrap(self._m.indices), doc="Index array.")
    indptr = property(lambda self: _ndarray._wrap(self._m.indptr), doc="Row/column pointers.")

    @property
    def has_sorted_indices(self) -> bool:
        """Whether the indices are sorted within each row/column."""
        return bool(self._m.has_sorted_indices)

    @has_sorted_indices.setter
    def has_sorted_indices(self, value: bool) -> None:
        self._m.has_sorted_indices = value

    @property
    def has_canonical_format(self) -> bool:
        """Sorted indices and no duplicates."""
        return bool(self._m.has_canonical_format)

    def sort_indices(self) -> None:
        """Sort the indices within each row/column (in place)."""
        self._m.sort_indices()


class csr_matrix(_compressed):  # noqa: N801 - CuPy's name
    """Compressed sparse rows: ``csr_matrix(scipy_matrix)`` (a counted copy to the device),
    ``csr_matrix(dense_device_array)``, ``csr_matrix((data, indices, indptr), shape=...)`` or
    ``csr_matrix(device_sparse_matrix)``."""

    format = "csr"


class csc_matrix(_compressed):  # noqa: N801 - CuPy's name
    """Compressed sparse columns (built as `csr_matrix` is)."""

    format = "csc"


class coo_matrix(spmatrix):  # noqa: N801 - CuPy's name
    """Coordinates: ``coo_matrix((data, (row, col)), shape=...)`` and the other forms of
    `csr_matrix`."""

    format = "coo"
    row = property(lambda self: _ndarray._wrap(self._m.row), doc="Row indices.")
    col = property(lambda self: _ndarray._wrap(self._m.col), doc="Column indices.")


_CLASSES = {"csr": csr_matrix, "csc": csc_matrix, "coo": coo_matrix}
_MATRIX = {"csr": _sp.csr_matrix, "csc": _sp.csc_matrix, "coo": _sp.coo_matrix}


def issparse(x) -> bool:
    """True for a stand-in sparse matrix."""
    return isinstance(x, spmatrix)


isspmatrix = issparse


def isspmatrix_csr(x) -> bool:
    """True for a stand-in CSR matrix."""
    return isinstance(x, csr_matrix)


def isspmatrix_csc(x) -> bool:
    """True for a stand-in CSC matrix."""
    return isinstance(x, csc_matrix)


def isspmatrix_coo(x) -> bool:
    """True for a stand-in COO matrix."""
    return isinstance(x, coo_matrix)


def eye(m, n=None, k=0, dtype=float, format=None) -> spmatrix:  # noqa: A002 - SciPy's name
    """The sparse identity (made on the device: not counted)."""
    return spmatrix._wrap(_sp.eye(m, n, k=k, dtype=dtype, format=format or "csr"))


def identity(n, dtype=float, format=None) -> spmatrix:  # noqa: A002 - SciPy's name
    """The sparse n × n identity (made on the device: not counted)."""
    return eye(n, dtype=dtype, format=format)


def _stack(fn, blocks, format, dtype):  # noqa: A002
    mats = [b._m if isinstance(b, spmatrix) else _operand(b) for b in blocks]
    return spmatrix._wrap(fn(mats, format=format or "csr", dtype=dtype))


def vstack(blocks, format=None, dtype=None) -> spmatrix:  # noqa: A002 - SciPy's name
    """Stack sparse matrices vertically."""
    return _stack(_sp.vstack, blocks, format, dtype)


def hstack(blocks, format=None, dtype=None) -> spmatrix:  # noqa: A002 - SciPy's name
    """Stack sparse matrices horizontally."""
    return _stack(_sp.hstack, blocks, format, dtype)
