"""The `Problem` contract (SPEC §4) and the input checks every problem shares.

A problem is ``F(x) = f(x) + R(x)`` over this rank's shard ``(A, b)`` of ``m`` samples:

- ``f(x) = (1/m) Σ_j ℓ(x; a_j, b_j) + (λ2/2)‖x‖²`` is smooth; `Problem.loss` and `Problem.grad`
  are ``f`` and ``∇f`` (the ℓ2 term is part of them);
- ``R(x) = λ1‖x‖₁`` is not differentiable and never enters `grad`; algorithms apply it through
  `Problem.prox`, the soft threshold, which produces exact zeros.

Dense arrays are used through their array API namespace, ``xp = backend.namespace(array)``
(NumPy itself for host arrays), with standard functions only, so a shard held in CuPy arrays or
any other array API library (``array_api_strict`` on a non-default device) works the same way
and never converts to NumPy implicitly; the data matrix may also be a SciPy sparse matrix (kept
as CSR) or a ``cupyx.scipy.sparse`` matrix.
"""

from __future__ import annotations

import abc
import contextlib
import math
import numbers
from typing import Any

import numpy as np

from ..backend import is_device_array, is_sparse, namespace, to_host, to_like


def dense_device(x):
    """The device of a dense array, for ``device=`` of the namespace's creation functions."""
    from array_api_compat import device

    return device(x)


def xp_dtype(xp, dtype):
    """``dtype`` (a NumPy dtype or one of ``xp``'s) as a dtype of the namespace ``xp``."""
    if xp is np:
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:  # already a dtype of xp (array_api_strict's are not NumPy's)
        return dtype
    return getattr(xp, name)


def vdot(xp, a, b):
    """``aᵀb`` of two vectors: ``np.dot`` on the host (as always), ``a @ b`` elsewhere."""
    return np.dot(a, b) if xp is np else a @ b


def host_data(A):
    """``A`` as the host (NumPy or SciPy) matrix a one-time host computation needs; sparse
    matrices pass as they are (`spectral` copies ``cupyx.scipy.sparse`` itself)."""
    return A if is_sparse(A) else to_host(A)


def check_matrix(A, name: str = "A"):
    """Validate a data matrix: 2-D, numeric, finite; SciPy sparse becomes CSR, ints become
    float64."""
    sparse = is_sparse(A)
    if sparse:
        A = A.tocsr()
        values = A.data
    else:
        if not hasattr(A, "ndim"):
            A = np.asarray(A)
        values = A
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (samples × features) matrix, got shape {A.shape}")
    if A.shape[0] == 0:
        raise ValueError(f"{name} has no rows: a shard needs at least one sample")
    xp = namespace(values)
    if xp.isdtype(A.dtype, ("bool", "integral")):
        if sparse:
            A = A.astype(np.float64)
            values = A.data
        else:
            A = values = xp.astype(A, xp.float64)
    elif not xp.isdtype(A.dtype, "real floating"):
        raise TypeError(f"{name} must hold real numbers, got dtype {A.dtype}")
    finite = xp.isfinite(values)
    if not bool(xp.all(finite)):
        bad = ~to_host(finite)  # the error path only: an explicit copy to the host
        if sparse:
            coo = A.tocoo()
            k = int(np.flatnonzero(bad)[0])
            where = (int(coo.row[k]), int(coo.col[k]))
        else:
            where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} contains NaN or Inf (first at row, column {where})")
    return A


def check_labels(b, m: int, name: str = "b"):
    """Validate a label / target vector: 1-D, length ``m``, finite."""
    if not hasattr(b, "ndim"):
        b = np.asarray(b)
    xp = namespace(b)
    if b.ndim == 2 and 1 in b.shape:
        b = xp.reshape(b, (-1,))
    if b.ndim != 1 or b.shape[0] != m:
        raise ValueError(
            f"{name} must be a vector of length {m} (one entry per row of A), got shape {b.shape}"
        )
    if not xp.isdtype(b.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"{name} must be numeric, got dtype {b.dtype}")
    if xp.isdtype(b.dtype, "real floating") and not bool(xp.all(xp.isfinite(b))):
        k = int(np.flatnonzero(~np.isfinite(to_host(b)))[0])  # the error path: explicit copy
        raise ValueError(f"{name} contains NaN or Inf (first at index {k})")
    return b


def check_reg(value, name: str) -> float:
    """A regularisation weight: a finite real number ≥ 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def check_integer_labels(b, n_classes: int | None, what: str):
    """Labels ``0..C−1`` as an int64 array and ``C`` (inferred as ``max + 1`` when not given).

    Checked on the host (an explicit copy, once at construction); the result is on ``b``'s
    device."""
    host = np.asarray(to_host(b))
    as_int = host.astype(np.int64)
    if not np.array_equal(as_int, host):
        raise ValueError(f"{what} needs integer class labels 0..C-1, got non-integer values")
    found = np.unique(as_int)
    if n_classes is None:
        n_classes = int(found[-1]) + 1
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 2:
        raise ValueError(f"{what}: n_classes must be an integer >= 2, got {n_classes!r}")
    bad = found[(found < 0) | (found >= n_classes)]
    if bad.size:
        raise ValueError(
            f"{what} needs class labels in 0..{n_classes - 1}; found labels "
            f"{found.tolist()[:20]} (out of range: {bad.tolist()[:20]})"
        )
    return to_like(as_int, b), int(n_classes)


class Problem(abc.ABC):
    """Smooth loss + ℓ2 over a local shard, with an ℓ1 term handled by its prox.

    Attributes
    ----------
    dim : int
        Length of the parameter vector ``x``.
    n_samples : int
        Number of local samples ``m``.
    l1, l2 : float
        ``λ1`` (used by `regulariser` and `prox` only) and ``λ2`` (inside `loss` and `grad`).
    convex : bool
        Whether ``f`` is convex (the reference optimum is defined only then).
    """

    convex: bool = True
    name: str = "problem"

    def __init__(self, A, b, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = check_reg(l1, "l1")
        self.l2 = check_reg(l2, "l2")
        self.A = check_matrix(A)
        self.b = check_labels(b, self.A.shape[0])
        self._L: float | None = None

    # -- what a subclass provides ------------------------------------------------------------
    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Length of ``x``."""

    @abc.abstractmethod
    def _data_loss(self, x, rows) -> float:
        """Mean loss over the rows ``rows`` (an index array, or None for all), no regulariser."""

    @abc.abstractmethod
    def _data_grad(self, x, rows):
        """Gradient of `_data_loss` (same ``rows`` convention), no regulariser."""

    @abc.abstractmethod
    def _data_smoothness(self) -> float | None:
        """An upper bound on the Lipschitz constant of ``∇`` of the mean data loss (or None)."""

    def hyperparameters(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this problem on other data (see `with_data`)."""
        return {"l1": self.l1, "l2": self.l2}

    # -- the public contract -----------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.A.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.A.shape[1])

    def with_data(self, A, b) -> Problem:
        """The same problem (kind and hyper-parameters) over other data, e.g. all shards."""
        return type(self)(A, b, **self.hyperparameters())

    def loss(self, x, batch=None) -> float:
        """``f(x)``: mean loss over the shard (or over ``batch``) plus ``(λ2/2)‖x‖²``."""
        x = self._check_x(x)
        value = self._data_loss(x, self._check_batch(batch))
        if self.l2:
            value += 0.5 * self.l2 * float(vdot(namespace(x), x, x))
        return float(value)

    def grad(self, x, batch=None, rng: np.random.Generator | None = None):
        """``∇f(x)`` over the shard, or over the local sample indices ``batch`` (with repeats).

        The minibatch gradient is the mean of the per-sample gradients of ``batch`` plus
        ``λ2·x``; drawn uniformly it is an unbiased estimate of the full local gradient.
        ``rng`` is the rank's sampling generator, for problems that draw per batch (a neural
        network's data augmentation); these problems draw nothing.
        """
        x = self._check_x(x)
        g = self._data_grad(x, self._check_batch(batch))
        if self.l2:
            g = g + self.l2 * x
        return g

    def smoothness(self) -> float | None:
        """``L_i``: an upper bound on the Lipschitz constant of ``∇f`` (None if there is none)."""
        if self._L is None:
            data = self._data_smoothness()
            if data is None:
                return None
            self._L = float(data) + self.l2
        return self._L

    def regulariser(self, x) -> float:
        """``R(x) = λ1‖x‖₁`` (the part of the objective not in `loss`)."""
        if not self.l1:
            return 0.0
        xp = namespace(x)
        return self.l1 * float(xp.sum(xp.abs(x)))

    def objective(self, x) -> float:
        """``F(x) = f(x) + R(x)``, the full objective."""
        return self.loss(x) + self.regulariser(x)

    def prox(self, z, step: float):
        """``prox_{step·R}(z) = sign(z)·max(|z| − step·λ1, 0)`` (soft threshold, exact zeros)."""
        step = check_reg(step, "step")
        xp = namespace(z)
        return xp.sign(z) * xp.maximum(xp.abs(z) - step * self.l1, 0)

    def initial_point(self, rng: np.random.Generator | None = None, dtype=np.float64):
        """A starting ``x⁰``: zeros for the convex problems (subclasses may do better)."""
        xp = namespace(self.b)
        return xp.zeros(self.dim, dtype=xp_dtype(xp, dtype), device=dense_device(self.b))

    def evaluation(self):
        """A context in which the loss and gradient may be evaluated without changing the
        problem's own state (a trace row); nothing to guard here, see `NeuralNetwork`."""
        return contextlib.nullcontext()

    def checkpoint_arrays(self) -> dict:
        """Arrays of the problem's own state that a checkpoint saves (none here)."""
        return {}

    def restore_arrays(self, arrays: dict) -> None:
        """Restore what `checkpoint_arrays` returned."""
        return None

    def __repr__(self) -> str:
        kind = "sparse" if is_sparse(self.A) else "dense"
        return (
            f"{type(self).__name__}(m={self.n_samples}, d={self.n_features}, dim={self.dim}, "
            f"{kind}, l1={self.l1:g}, l2={self.l2:g})"
        )

    # -- helpers -----------------------------------------------------------------------------
    def _check_x(self, x):
        shape = getattr(x, "shape", None)
        if shape != (self.dim,):
            raise ValueError(f"x must have shape ({self.dim},) for {self!r}, got {shape}")
        return x

    def _check_batch(self, batch):
        """``batch`` checked where it lives (host indices on the host, so a device shard costs
        no scalar reads), then on the shard's device."""
        if batch is None:
            return None
        on_host = not is_device_array(batch)
        xp = np if on_host else namespace(batch)
        batch = xp.asarray(batch)
        if batch.ndim != 1 or batch.shape[0] == 0:
            raise ValueError(f"batch must be a non-empty 1-D index array, got shape {batch.shape}")
        if not xp.isdtype(batch.dtype, "integral"):
            raise TypeError(f"batch must hold integer sample indices, got dtype {batch.dtype}")
        lo, hi = int(xp.min(batch)), int(xp.max(batch))
        if lo < 0 or hi >= self.n_samples:
            raise IndexError(
                f"batch indices must lie in 0..{self.n_samples - 1}, got range {lo}..{hi}"
            )
        return to_like(batch, self.b) if on_host else batch

    def _rows(self, rows):
        """``(A_rows, b_rows, count)`` for an index array, or the whole shard for None."""
        if rows is None:
            return self.A, self.b, self.n_samples
        xp = namespace(self.b)
        if xp is np or is_sparse(self.A):  # host arrays and sparse matrices: as always
            return self.A[rows], self.b[rows], int(rows.shape[0])
        return xp.take(self.A, rows, axis=0), xp.take(self.b, rows, axis=0), int(rows.shape[0])
