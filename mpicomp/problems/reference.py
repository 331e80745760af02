"""The reference optimum ``x*`` of a convex problem over the whole data set (SPEC §4).

- ``λ1 = 0``: SciPy's L-BFGS-B on ``f`` (gradient tolerance 1e-12). Its line search compares
  values of ``f``, which stop changing in float64 once ``‖∇f‖² / L`` falls below the round-off
  of ``f`` (typically at ``‖∇f‖ ≈ 1e-9``), so the answer is then polished by a few Newton–CG
  steps that look at gradients only: Hessian-vector products by central differences of the
  gradient, a step accepted when it lowers ``‖∇f‖``. That reaches ``1e-12`` and below.
- ``λ1 > 0``: FISTA (accelerated proximal gradient, step ``1/L``) with O'Donoghue–Candès
  gradient-based adaptive restart, until the gradient mapping
  ``G(x) = L(x − prox_{R/L}(x − ∇f(x)/L))`` has norm below ``tol``. The returned point is a prox
  output, so its zeros are exact.

The driver builds one `Problem` over the concatenated shards on rank 0 (``problem.with_data``)
and calls `reference_optimum`; traces then report ``‖x − x*‖²``.

References
----------
Beck & Teboulle, "A fast iterative shrinkage-thresholding algorithm for linear inverse
problems", SIAM J. Imaging Sci. 2(1), 2009. O'Donoghue & Candès, "Adaptive restart for
accelerated gradient schemes", Found. Comput. Math. 15, 2015.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable

import numpy as np

from ..backend import get_xp, to_host
from .base import Problem


@dataclasses.dataclass
class ReferenceResult:
    """What the reference solve found.

    Attributes
    ----------
    x : numpy.ndarray
        ``x*`` (float64, on the host).
    f : float
        ``F(x*) = f(x*) + λ1‖x*‖₁``.
    residual : float
        ``‖∇f(x*)‖`` (smooth case) or ``‖G(x*)‖`` (gradient mapping, ℓ1 case).
    iterations : int
    method : str
    converged : bool
        Whether ``residual <= tol``.
    """

    x: np.ndarray
    f: float
    residual: float
    iterations: int
    method: str
    converged: bool


class ReferenceInterrupted(RuntimeError):
    """The solve was stopped because ``should_stop()`` said so (a stop request, e.g. SIGTERM)."""


def reference_optimum(problem: Problem, **kwargs) -> tuple[np.ndarray, float]:
    """``(x*, F(x*))`` to high precision; keyword arguments go to `solve_reference`."""
    res = solve_reference(problem, **kwargs)
    return res.x, res.f


def solve_reference(problem: Problem, x0=None, tol: float = 1e-12, max_iter: int = 100_000,
                    warn: bool = True,
                    should_stop: Callable[[], bool] | None = None) -> ReferenceResult:
    """Minimise ``F = f + λ1‖·‖₁`` of a convex `Problem` (L-BFGS-B if λ1 = 0, else FISTA).

    Parameters
    ----------
    problem : Problem
        Over the whole data set. Must be convex (``problem.convex``).
    x0 : array, optional
        Starting point (default: zeros).
    tol : float
        Target ``‖∇f‖`` (smooth) or ``‖G‖`` (ℓ1).
    max_iter : int
        Iteration cap (L-BFGS-B iterations over all restarts, or FISTA iterations).
    warn : bool
        Emit a RuntimeWarning when the tolerance is not reached.
    should_stop : callable, optional
        Asked before every gradient; when it returns true the solve raises
        `ReferenceInterrupted` (the driver's stop request during set-up).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"expected a mpicomp.problems.Problem, got {type(problem).__name__}")
    if not problem.convex:
        raise ValueError(
            f"no reference optimum for the non-convex {problem.name!r} problem: x* is not "
            "well defined (report dist_to_opt_sq as NaN instead)"
        )
    xp = get_xp(problem.b)
    x0 = np.zeros(problem.dim) if x0 is None else np.asarray(to_host(x0), dtype=np.float64)
    if x0.shape != (problem.dim,):
        raise ValueError(f"x0 must have shape ({problem.dim},), got {x0.shape}")
    if should_stop is not None:
        problem = _Interruptible(problem, should_stop)
    if problem.l1 > 0:
        res = _fista(problem, xp, x0, tol, max_iter)
    else:
        res = _lbfgs(problem, xp, x0, tol, max_iter)
    if warn and not res.converged:
        warnings.warn(
            f"reference optimum of {problem!r} reached residual {res.residual:.3g} > tol {tol:g} "
            f"after {res.iterations} iterations ({res.method}); the problem may have no "
            "minimiser (e.g. separable data with l2 = 0) or be badly conditioned",
            RuntimeWarning, stacklevel=2,
        )
    return res


class _Interruptible:
    """``problem`` whose ``grad`` first asks ``should_stop`` (every solver step takes one)."""

    def __init__(self, problem: Problem, should_stop: Callable[[], bool]):
        self._problem, self._should_stop = problem, should_stop

    def __getattr__(self, name: str):
        return getattr(self._problem, name)

    def grad(self, x, *args, **kwargs):
        if self._should_stop():
            raise ReferenceInterrupted("the reference solve was stopped by a stop request")
        return self._problem.grad(x, *args, **kwargs)


def _lbfgs(problem: Problem, xp, x0: np.ndarray, tol: float, max_iter: int) -> ReferenceResult:
    import scipy.optimize as so  # here, not at import: only the rank that solves needs it

    def fun(x):
        xd = xp.asarray(x)
        return problem.loss(xd), np.asarray(to_host(problem.grad(xd)), dtype=np.float64)

    out = so.minimize(
        fun, x0, jac=True, method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol * 1e-2, "ftol": 0.0, "maxcor": 30,
                 "maxls": 50},
    )
    x, its = out.x, int(out.nit)
    x, gnorm, newton = _newton_polish(problem, xp, x, tol)
    method = "L-BFGS-B" + (f" + {newton} Newton-CG" if newton else "")
    return ReferenceResult(x, problem.objective(xp.asarray(x)), gnorm, its + newton, method,
                           gnorm <= tol)


def _newton_polish(problem: Problem, xp, x: np.ndarray, tol: float, max_steps: int = 30,
                   eps: float = 1e-5):
    """Newton–CG from a point near the optimum, using gradients only; ``(x, ‖∇f‖, steps)``."""
    import scipy.sparse.linalg as spla

    def grad(z):
        return np.asarray(to_host(problem.grad(xp.asarray(z))), dtype=np.float64)

    def hvp(v):
        nv = np.linalg.norm(v)
        if nv == 0:
            return np.zeros_like(v)
        u = (eps / nv) * v
        return (grad(x + u) - grad(x - u)) * (nv / (2 * eps)) + damping * v

    # A little damping keeps the step finite along flat directions (softmax without ℓ2 is
    # invariant to adding a constant to every class; there ∇²f is singular).
    damping = 1e-9 * (problem.smoothness() or 1.0)
    g = grad(x)
    gnorm = float(np.linalg.norm(g))
    steps = 0
    n = x.shape[0]
    while gnorm > tol and steps < max_steps:
        H = spla.LinearOperator((n, n), matvec=hvp, dtype=np.float64)
        d, _ = spla.cg(H, -g, rtol=1e-10, atol=0.0, maxiter=2 * n + 20)
        accepted = False
        for scale in (1.0, 0.5, 0.25, 0.125):
            x_new = x + scale * d
            g_new = grad(x_new)
            n_new = float(np.linalg.norm(g_new))
            if n_new < gnorm:
                x, g, gnorm, accepted = x_new, g_new, n_new, True
                break
        steps += 1
        if not accepted:
            break
    return x, gnorm, steps


def _fista(problem: Problem, xp, x0: np.ndarray, tol: float, max_iter: int) -> ReferenceResult:
    L = problem.smoothness()
    if L is None or not L > 0:
        raise ValueError(f"FISTA needs a positive smoothness constant, {problem!r} gave {L}")
    step = 1.0 / L
    x = problem.prox(xp.asarray(x0), step)
    y, t = x, 1.0
    resid, k = math.inf, 0
    for k in range(1, max_iter + 1):  # noqa: B007 - k, the iterations taken, is returned below
        gy = problem.grad(y)
        x_new = problem.prox(y - step * gy, step)
        # ‖G(y)‖ = L‖y − x_new‖; stop when the mapping at the extrapolated point is tiny.
        resid = float(xp.linalg.norm(y - x_new)) * L
        if resid <= tol:
            x = x_new
            break
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        if float(xp.dot(y - x_new, x_new - x)) > 0:  # gradient restart: momentum points uphill
            t_new, t = 1.0, 1.0
            y = x_new
        else:
            y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    # The test above was at the extrapolated point; finish with plain proximal-gradient steps
    # (monotone) until the mapping at the returned prox output itself is below tol.
    for _ in range(1000):
        x_next = problem.prox(x - step * problem.grad(x), step)
        resid = float(xp.linalg.norm(x - x_next)) * L
        if resid <= tol:
            break
        x = x_next
    x_host = np.asarray(to_host(x), dtype=np.float64)
    return ReferenceResult(x_host, problem.objective(x), resid, k, "FISTA", resid <= tol)
