"""The largest eigenvalue of ``AᵀA`` (``‖A‖₂²``), the constant in every smoothness bound.

Small matrices get the exact value from a dense symmetric eigensolver on the smaller Gram
matrix (``AᵀA`` or ``AAᵀ``, which share their non-zero spectrum). Large ones use Lanczos
(``scipy.sparse.linalg.eigsh``) on the operator ``v ↦ Aᵀ(Av)``, never forming ``AᵀA``; the Ritz
value is then raised by the norm of its residual, ``‖AᵀAv − θv‖`` (a symmetric matrix has an
eigenvalue within that distance of θ, Parlett, *The Symmetric Eigenvalue Problem*, Thm 4.5.1),
and by a relative ``1e-9``, so that the result is an upper bound in practice. A power iteration
is the fallback if Lanczos does not converge.
"""

from __future__ import annotations

import numpy as np

from ..backend import is_sparse, to_host

EXACT_MAX_DIM = 2048  # Gram matrices up to this size are decomposed exactly ...
EXACT_MAX_WORK = 1e11 # ... when forming them costs at most this many multiply-adds (nnz·min(m, d))
_SAFETY = 1e-9


def _host_matrix(A):
    """A NumPy or SciPy copy/view of a NumPy, SciPy, CuPy or cupyx.scipy.sparse matrix."""
    if isinstance(A, np.ndarray) or type(A).__module__.startswith("scipy.sparse"):
        return A
    if hasattr(A, "get"):  # cupy array or cupyx.scipy.sparse matrix
        return A.get()
    return to_host(np.asarray(A))


def lambda_max_gram(A, exact_max_dim: int = EXACT_MAX_DIM, seed: int = 0) -> float:
    """An upper bound on ``λ_max(AᵀA) = ‖A‖₂²``, exact (to round-off) when ``min(m, d)`` is small.

    Parameters
    ----------
    A : (m, d) array or sparse matrix
    exact_max_dim : int
        If ``min(m, d) <= exact_max_dim`` (and forming it costs at most `EXACT_MAX_WORK`
        multiply-adds) the smaller Gram matrix is formed and decomposed exactly.
    seed : int
        Seed of the Lanczos / power-iteration start vector.
    """
    A = _host_matrix(A)
    m, d = A.shape
    if m == 0 or d == 0:
        return 0.0
    nnz = A.nnz if is_sparse(A) else m * d
    if min(m, d) <= exact_max_dim and nnz * min(m, d) <= EXACT_MAX_WORK:
        G = (A.T @ A) if d <= m else (A @ A.T)
        G = G.toarray() if is_sparse(G) else np.asarray(G)
        return float(max(np.linalg.eigvalsh(G.astype(np.float64, copy=False))[-1], 0.0))
    import scipy.sparse.linalg as spla  # here: small Gram matrices need no SciPy

    n = d
    op = spla.LinearOperator((n, n), matvec=lambda v: A.T @ (A @ v), dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        vals, vecs = spla.eigsh(op, k=1, which="LA", v0=v0, tol=1e-10, maxiter=20 * n)
        theta, v = float(vals[0]), vecs[:, 0]
    except spla.ArpackNoConvergence:
        theta, v = _power_iteration(op, v0)
    resid = float(np.linalg.norm(op.matvec(v) - theta * v) / max(np.linalg.norm(v), 1e-300))
    return max(theta + resid, 0.0) * (1.0 + _SAFETY)


def _power_iteration(op, v0: np.ndarray, iters: int = 10_000, rtol: float = 1e-12):
    """Power iteration on a symmetric PSD operator; returns (Rayleigh quotient, unit vector)."""
    v = v0 / np.linalg.norm(v0)
    theta = 0.0
    for _ in range(iters):
        w = op.matvec(v)
        new = float(v @ w)
        nw = np.linalg.norm(w)
        if nw == 0.0:
            return 0.0, v
        v = w / nw
        if abs(new - theta) <= rtol * abs(new):
            return new, v
        theta = new
    return theta, v
