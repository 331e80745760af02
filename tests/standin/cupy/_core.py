"""The stand-in's array type and the wrapping of NumPy functions around it.

Arguments of wrapped functions are unwrapped (a stand-in array becomes its NumPy storage) and
checked: a NumPy array of ndim ≥ 1, a buffer or a list of non-integer numbers is host data, and
passing it where a device array is expected would be an implicit host→device copy, so it is
refused. Results are wrapped back: NumPy arrays and NumPy scalars become stand-in arrays (0-d
for scalars, like CuPy); a result that is an argument's storage (``out=``, ``copy=False``) is
that argument itself.
"""

from __future__ import annotations

import functools
import numbers
import operator
from types import ModuleType
from typing import Any

import numpy as np

from . import _counters
from .cuda.device import Device

D2H_MESSAGE = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
    "NumPy array explicitly. (CuPy stand-in: refused implicit device→host conversion{what})"
)
H2D_MESSAGE = (
    "Implicit conversion of host data ({what}) to a device array is not allowed: it would be "
    "an implicit host→device copy. Please use `cupy.asarray()` explicitly. (CuPy stand-in)"
)

#: NumPy names the stand-in does not offer: host I/O and host memory, host-side iteration and
#: callbacks, matrix/record types, and namespace helpers with no CuPy meaning
DENIED = frozenset({
    "asmatrix", "bmat", "matrix", "memmap", "recarray", "chararray", "record", "load", "save",
    "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromregex", "fromfile",
    "fromstring", "frombuffer", "fromiter", "fromfunction", "from_dlpack", "show_config",
    "show_runtime", "get_include", "info", "test", "r_", "c_", "mgrid", "ogrid", "s_",
    "index_exp", "nested_iters", "nditer", "broadcast", "frompyfunc", "vectorize", "piecewise",
    "apply_along_axis", "apply_over_axes", "ndenumerate", "flatiter", "setbufsize",
    "getbufsize", "seterrcall", "geterrcall", "ctypeslib", "lib", "ndarray", "ufunc",
})
#: NumPy submodules (never offered through the generic wrapper)
SUBMODULES = frozenset({
    "random", "ma", "exceptions", "emath", "dtypes", "linalg", "typing", "lib", "strings",
    "rec", "testing", "polynomial", "char", "core", "ctypeslib", "fft", "f2py", "matlib",
    "version",
})
#: functions whose NumPy result is a Python scalar but CuPy's a 0-d device array
SCALAR_TO_ARRAY = frozenset({"count_nonzero", "array_equal", "array_equiv", "allclose"})


def refuse_d2h(what: str = "") -> TypeError:
    """The TypeError of an implicit device→host conversion."""
    return TypeError(D2H_MESSAGE.format(what=f": {what}" if what else ""))


def refuse_h2d(what: str) -> TypeError:
    """The TypeError of an implicit host→device conversion of ``what``."""
    return TypeError(H2D_MESSAGE.format(what=what))


def _scan(seq) -> tuple[bool, bool]:
    """(holds a stand-in array, holds a non-integer number) for a nested list or tuple."""
    device = fractional = False
    for item in seq:
        if isinstance(item, ndarray):
            device = True
        elif isinstance(item, (list, tuple)):
            d, f = _scan(item)
            device, fractional = device or d, fractional or f
        elif isinstance(item, (numbers.Number, np.generic)) and (
            isinstance(item, (bool, np.bool_))
            or not isinstance(item, (numbers.Integral, np.integer))
        ):
            fractional = True
    return device, fractional


def unwrap(x: Any, originals: dict[int, ndarray]) -> Any:
    """``x`` with stand-in arrays replaced by their storage; host data refused (TypeError)."""
    if isinstance(x, ndarray):
        originals[id(x._a)] = x
        return x._a
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return x
        raise refuse_h2d(f"a NumPy array of shape {x.shape}")
    if isinstance(x, (list, tuple)):
        # a list of ints passes (a shape, axes); one of floats or bools is host data
        if isinstance(x, list) and _scan(x) == (False, True):
            raise refuse_h2d("a list of numbers")
        items = [unwrap(i, originals) for i in x]
        if isinstance(x, list):
            return items
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    if isinstance(x, (bytes, bytearray, memoryview)):
        raise refuse_h2d(f"a {type(x).__name__} buffer")
    if not isinstance(x, (np.generic, type)) and (
        hasattr(x, "__array__") or hasattr(x, "__array_interface__")
    ):
        raise refuse_h2d(f"an array-like {type(x).__name__}")
    return x


def wrap(x: Any, originals: dict[int, ndarray] | None = None) -> Any:
    """``x`` with NumPy arrays and scalars wrapped as stand-in arrays (an argument's storage
    returned as that argument)."""
    if isinstance(x, np.ndarray):
        if originals and id(x) in originals and originals[id(x)]._a is x:
            return originals[id(x)]
        return ndarray._wrap(x)
    if isinstance(x, np.generic):
        return ndarray._wrap(np.array(x))
    if isinstance(x, (list, tuple)):
        items = [wrap(i, originals) for i in x]
        if isinstance(x, list):
            return items
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    return x


def call(fn, args: tuple, kwargs: dict, scalar_to_array: bool = False) -> Any:
    """``fn(*args, **kwargs)`` on unwrapped arguments, its result wrapped."""
    originals: dict[int, ndarray] = {}
    a = [unwrap(x, originals) for x in args]
    k = {key: unwrap(v, originals) for key, v in kwargs.items()}
    result = fn(*a, **k)
    if scalar_to_array and isinstance(result, (bool, int, float, complex)):
        result = np.asarray(result)
    return wrap(result, originals)


def wrap_function(fn, name: str, module: str = "cupy"):
    """A stand-in version of the NumPy function ``fn``."""
    scalar_to_array = name in SCALAR_TO_ARRAY

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return call(fn, args, kwargs, scalar_to_array)

    wrapper.__module__ = module
    return wrapper


class ufunc:  # noqa: N801 - CuPy's name
    """A NumPy ufunc on stand-in arrays; sequences as operands are refused, like CuPy's."""

    __module__ = "cupy"

    def __init__(self, np_ufunc: np.ufunc):
        self._ufunc = np_ufunc
        self.__name__ = np_ufunc.__name__
        self.__doc__ = np_ufunc.__doc__

    def _check(self, operands: tuple) -> None:
        for x in operands:
            if isinstance(x, (list, tuple)):
                raise refuse_h2d(f"a {type(x).__name__} operand of {self.__name__}")

    def __call__(self, *args, **kwargs):
        self._check(args)
        return call(self._ufunc, args, kwargs)

    def reduce(self, *args, **kwargs):
        """``ufunc.reduce``."""
        return call(self._ufunc.reduce, args, kwargs)

    def accumulate(self, *args, **kwargs):
        """``ufunc.accumulate``."""
        return call(self._ufunc.accumulate, args, kwargs)

    def reduceat(self, *args, **kwargs):
        """``ufunc.reduceat``."""
        return call(self._ufunc.reduceat, args, kwargs)

    def outer(self, *args, **kwargs):
        """``ufunc.outer``."""
        self._check(args)
        return call(self._ufunc.outer, args, kwargs)

    def at(self, *args, **kwargs):
        """``ufunc.at`` (in place, unbuffered)."""
        return call(self._ufunc.at, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._ufunc, name)
        if callable(value):
            raise AttributeError(f"the stand-in ufunc has no method {name!r}")
        return value

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"


def namespace_attr(np_module: ModuleType, name: str, module: str) -> Any:
    """The stand-in version of ``np_module.name``: NumPy types and constants as they are,
    functions and ufuncs wrapped; AttributeError for what the stand-in does not offer."""
    top = np_module is np
    if name.startswith("_") or (top and (name in DENIED or name in SUBMODULES)):
        raise AttributeError(f"module {module!r} (CuPy stand-in) has no attribute {name!r}")
    try:
        obj = getattr(np_module, name)
    except AttributeError:
        raise AttributeError(
            f"module {module!r} (CuPy stand-in) has no attribute {name!r}") from None
    if isinstance(obj, ModuleType):
        raise AttributeError(f"module {module!r} (CuPy stand-in) has no attribute {name!r}")
    if isinstance(obj, np.ufunc):
        return ufunc(obj)
    if isinstance(obj, type) or not callable(obj):
        return obj
    return wrap_function(obj, name, module)


def public_names(np_module: ModuleType) -> list[str]:
    """The names of ``np_module.__all__`` the stand-in offers (without importing submodules)."""
    top = np_module is np
    return sorted(n for n in np_module.__all__ if not n.startswith("_")
                  and not (top and (n in DENIED or n in SUBMODULES)))


# ----------------------------------------------------------------------------- the array type

_SCALARS = (bool, int, float, complex, np.generic)


def _operand(x: Any) -> Any:
    """An operator operand as NumPy sees it; NotImplemented for unknown types."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _SCALARS):
        return x
    if isinstance(x, np.ndarray):
        if x.ndim == 0:
            return x
        raise refuse_h2d(f"a NumPy array operand of shape {x.shape}")
    return NotImplemented


def _index(key: Any) -> Any:
    """An index as NumPy sees it: ints, slices, Ellipsis, None and stand-in arrays."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, np.ndarray):
        if key.ndim == 0:
            return key
        raise refuse_h2d(f"a NumPy index array of shape {key.shape}")
    if isinstance(key, (list, bytes, bytearray, memoryview)):
        raise refuse_h2d(f"a {type(key).__name__} index")
    return key


class _Flags:
    """``ndarray.flags``: ``c_contiguous``, ``f_contiguous``, ``owndata``."""

    def __init__(self, a: np.ndarray):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, name: str) -> bool:
        key = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous",
               "OWNDATA": "owndata", "C": "c_contiguous", "F": "f_contiguous"}[name]
        return getattr(self, key)

    def __repr__(self) -> str:
        return (f"  C_CONTIGUOUS : {self.c_contiguous}\n  F_CONTIGUOUS : {self.f_contiguous}\n"
                f"  OWNDATA : {self.owndata}")


def _copy_out(a: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """A host copy of ``a`` (into ``out`` when given); not counted here."""
    if out is None:
        return np.array(a, order="C", copy=True)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != a.shape:
        raise ValueError(f"Shape mismatch: out {out.shape}, array {a.shape}")
    if out.dtype != a.dtype:
        raise TypeError(f"dtype mismatch: out {out.dtype}, array {a.dtype}")
    out[...] = a
    return out


class ndarray:  # noqa: N801 - CuPy's name
    """A device array of the CuPy stand-in: NumPy storage that refuses implicit host access.

    Parameters
    ----------
    shape : int or tuple of int
    dtype : dtype, optional
        float64 by default.
    order : {"C", "F"}, optional

    Notes
    -----
    Refused (TypeError): ``__array__`` (``numpy.asarray(a)``), ``__array_function__``
    (``numpy.sum(a)``), NumPy ufuncs (``numpy.add(a, 1)``), NumPy arrays of ndim ≥ 1 as
    operands, values or indices, lists as indices, pickling. There is no buffer protocol, no
    ``__cuda_array_interface__`` and no ``__dlpack__``. Counted: `get`, `tolist`, `tobytes`
    (``d2h``, bytes, ``sync``), `set` (``h2d``, bytes), and ``float(a)``, ``int(a)``,
    ``bool(a)``, ``operator.index(a)``, `item`, 0-d ``format`` and ``in`` (``scalar_reads``).
    """

    __slots__ = ("_a", "__weakref__")
    __module__ = "cupy"

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in takes no memptr or strides")
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _wrap(cls, a: np.ndarray) -> ndarray:
        obj = object.__new__(cls)
        obj._a = a
        return obj

    # ------------------------------------------------------------------ refusals
    def __array__(self, *args, **kwargs):
        raise refuse_d2h("__array__")

    def __array_function__(self, func, types, args, kwargs):
        raise refuse_d2h(f"numpy.{getattr(func, '__name__', func)}")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # NumPy scalars (and 0-d arrays) on the left of an operator reach here through the
        # ufunc of that operator; that is CuPy arithmetic, not a host conversion
        if (method == "__call__" and not kwargs and len(inputs) == 2
                and inputs[1] is self and ufunc in _REFLECTED_UFUNCS
                and (isinstance(inputs[0], np.generic)
                     or (isinstance(inputs[0], np.ndarray) and inputs[0].ndim == 0))):
            return wrap(ufunc(inputs[0], self._a))
        for x in inputs:
            if isinstance(x, np.ndarray) and x.ndim > 0:
                raise refuse_h2d(f"a NumPy array operand of shape {x.shape}")
        raise refuse_d2h(f"numpy.{ufunc.__name__}")

    def __reduce_ex__(self, protocol):
        raise refuse_d2h("pickling a device array")

    # ------------------------------------------------------------------ explicit copies
    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        """A host copy (``d2h`` with its bytes, and a ``sync`` when ``blocking``)."""
        host = _copy_out(self._a, out)
        _counters.d2h(self._a.nbytes)
        if blocking:
            _counters.count("sync")
        return host

    def set(self, arr: np.ndarray, stream=None) -> None:
        """Copy the host array ``arr`` (same shape and dtype) into this array (``h2d``)."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"set() takes a numpy.ndarray, got {type(arr).__name__}")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch: {arr.shape} into {self.shape}")
        if arr.dtype != self.dtype:
            raise TypeError(f"dtype mismatch: {arr.dtype} into {self.dtype}")
        if not self._a.flags.c_contiguous:
            raise RuntimeError("Cannot set to non-contiguous array")
        self._a[...] = arr
        _counters.h2d(arr.nbytes)

    def tolist(self) -> Any:
        """The values as nested Python lists (a ``d2h`` copy with its bytes, and a ``sync``)."""
        _counters.d2h(self._a.nbytes)
        _counters.count("sync")
        return self._a.tolist()

    def tobytes(self, order="C") -> bytes:
        """The bytes of the array (a ``d2h`` copy with its bytes, and a ``sync``)."""
        _counters.d2h(self._a.nbytes)
        _counters.count("sync")
        return self._a.tobytes(order)

    def __mpicomp_kernel_array__(self) -> np.ndarray:
        """The NumPy storage itself (not a copy), for kernels under the Numba CUDA simulator."""
        return self._a

    # ------------------------------------------------------------------ scalar reads
    def item(self, *args):
        """The single value as a Python scalar (counted as ``scalar_reads``)."""
        value = self._a.item(*args)
        _counters.count("scalar_reads")
        return value

    def _scalar(self, convert):
        value = convert(self._a)
        _counters.count("scalar_reads")
        return value

    def __bool__(self) -> bool:
        return self._scalar(bool)

    def __float__(self) -> float:
        return self._scalar(float)

    def __int__(self) -> int:
        return self._scalar(int)

    def __complex__(self) -> complex:
        return self._scalar(complex)

    def __index__(self) -> int:
        return self._scalar(operator.index)

    def __format__(self, spec: str) -> str:
        if self._a.ndim == 0:
            return format(self.item(), spec)
        return format(self._a, spec)

    def __contains__(self, value) -> bool:
        other = _operand(value)
        if other is NotImplemented:
            raise TypeError(f"'in <cupy.ndarray>' needs a scalar, got {type(value).__name__}")
        return bool(ndarray._wrap(np.asarray(self._a == other)).any())

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    def __getitem__(self, key):
        key = _index(key)
        if not isinstance(key, tuple):
            key = (key,)
        if not any(k is Ellipsis for k in key):
            key = (*key, Ellipsis)  # integer indices give a 0-d view, as in CuPy
        return ndarray._wrap(self._a[key])

    def __setitem__(self, key, value) -> None:
        v = _operand(value)
        if v is NotImplemented:
            raise refuse_h2d(f"a {type(value).__name__} value")
        self._a[_index(key)] = v

    def __repr__(self) -> str:
        return repr(self._a)

    def __str__(self) -> str:
        return str(self._a)

    def __copy__(self) -> ndarray:
        return ndarray._wrap(self._a.copy())

    def __deepcopy__(self, memo) -> ndarray:
        return ndarray._wrap(self._a.copy())

    # ------------------------------------------------------------------ properties
    shape = property(lambda self: self._a.shape, doc="Tuple of dimensions.")
    ndim = property(lambda self: self._a.ndim, doc="Number of dimensions.")
    size = property(lambda self: self._a.size, doc="Number of elements.")
    dtype = property(lambda self: self._a.dtype, doc="Data type.")
    nbytes = property(lambda self: self._a.nbytes, doc="Bytes of the elements.")
    itemsize = property(lambda self: self._a.itemsize, doc="Bytes per element.")
    strides = property(lambda self: self._a.strides, doc="Bytes to step along each axis.")
    flags = property(lambda self: _Flags(self._a), doc="Contiguity and ownership flags.")
    T = property(lambda self: ndarray._wrap(self._a.T), doc="Transposed view.")
    mT = property(lambda self: ndarray._wrap(self._a.mT), doc="Matrix-transposed view.")
    real = property(lambda self: ndarray._wrap(self._a.real), doc="Real part.")
    imag = property(lambda self: ndarray._wrap(self._a.imag), doc="Imaginary part.")

    @property
    def device(self):
        """The `cupy.cuda.Device` holding the array (always device 0)."""
        return Device(0)


_ARRAY_METHODS = (
    "astype", "view", "reshape", "ravel", "flatten", "copy", "fill", "sum", "prod", "max",
    "min", "mean", "std", "var", "dot", "any", "all", "argmax", "argmin", "nonzero", "cumsum",
    "cumprod", "clip", "round", "take", "put", "repeat", "sort", "argsort", "partition",
    "argpartition", "searchsorted", "diagonal", "trace", "transpose", "swapaxes", "squeeze",
    "conj", "conjugate", "compress", "choose", "ptp",
)


def _method(name: str):
    def method(self, *args, **kwargs):
        originals = {id(self._a): self}
        a = [unwrap(x, originals) for x in args]
        k = {key: unwrap(v, originals) for key, v in kwargs.items()}
        return wrap(getattr(self._a, name)(*a, **k), originals)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"``numpy.ndarray.{name}`` on the device array."
    return method


for _name in _ARRAY_METHODS:
    if hasattr(np.ndarray, _name):
        setattr(ndarray, _name, _method(_name))


def _binary(name: str):
    op = divmod if name == "divmod" else getattr(operator, name)

    def forward(self, other):
        o = _operand(other)
        return NotImplemented if o is NotImplemented else wrap(op(self._a, o))

    def reflected(self, other):
        o = _operand(other)
        return NotImplemented if o is NotImplemented else wrap(op(o, self._a))

    return forward, reflected


def _inplace(name: str):
    op = getattr(operator, name)

    def method(self, other):
        o = _operand(other)
        if o is NotImplemented:
            return NotImplemented
        op(self._a, o)  # NumPy's in-place operator writes the storage
        return self

    return method


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and_",
              "or_", "xor", "lshift", "rshift"):
    _dunder = _name.rstrip("_")
    _fwd, _rfl = _binary(_name)
    setattr(ndarray, f"__{_dunder}__", _fwd)
    setattr(ndarray, f"__r{_dunder}__", _rfl)
    setattr(ndarray, f"__i{_dunder}__", _inplace(f"i{_dunder}"))

for _name in ("lt", "le", "eq", "ne", "gt", "ge"):
    setattr(ndarray, f"__{_name}__", _binary(_name)[0])


ndarray.__divmod__, ndarray.__rdivmod__ = _binary("divmod")
ndarray.__hash__ = None

for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__",
            (lambda op: lambda self: wrap(op(self._a)))(getattr(operator, _name)))

#: the ufuncs through which NumPy evaluates ``numpy_scalar <op> array``
_REFLECTED_UFUNCS = frozenset({
    np.add, np.subtract, np.multiply, np.true_divide, np.floor_divide, np.remainder,
    np.power, np.matmul, np.bitwise_and, np.bitwise_or, np.bitwise_xor, np.left_shift,
    np.right_shift, np.less, np.less_equal, np.equal, np.not_equal, np.greater,
    np.greater_equal, np.divmod,
})
