"""Least squares, ridge and lasso (SPEC §4).

``f(x) = (1/2m)‖Ax − b‖² + (λ2/2)‖x‖²``; with ``l1 > 0`` the objective ``f + λ1‖x‖₁`` is the
lasso (elastic net with both).
"""

from __future__ import annotations

import numpy as np

from ..backend import namespace
from .base import Problem, host_data, vdot
from .spectral import lambda_max_gram


class LeastSquares(Problem):
    """Least squares over a shard ``(A, b)`` with real targets ``b``.

    Notes
    -----
    ``∇f(x) = (1/m) Aᵀ(Ax − b) + λ2 x``; the Hessian is the constant ``AᵀA/m + λ2 I``, so
    ``L = λ_max(AᵀA)/m + λ2`` is the exact Lipschitz constant of the gradient (attained along
    the top eigenvector of ``AᵀA``).
    """

    name = "least_squares"

    def __init__(self, A, b, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(A, b, l1=l1, l2=l2)
        xp = namespace(self.b)
        self.b = (xp.asarray(self.b, dtype=self.A.dtype) if xp is np else
                  xp.astype(self.b, self.A.dtype))

    @property
    def dim(self) -> int:
        return self.n_features

    def _data_loss(self, x, rows) -> float:
        A, b, m = self._rows(rows)
        r = A @ x - b
        return 0.5 * float(vdot(namespace(r), r, r)) / m

    def _data_grad(self, x, rows):
        A, b, m = self._rows(rows)
        return (A.T @ (A @ x - b)) / m

    def _data_smoothness(self) -> float:
        return lambda_max_gram(host_data(self.A)) / self.n_samples
