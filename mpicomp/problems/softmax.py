"""Multinomial (softmax) logistic regression (SPEC §4).

``f(x) = (1/m) Σ_j [logsumexp(a_jᵀW) − a_jᵀW_{:,b_j}] + (λ2/2)‖x‖²`` with ``W = x.reshape(d, C)``
(row-major: ``x[k·C + c] = W[k, c]``); labels are integers ``0..C−1``. There is no separate
bias: append a constant column to ``A`` for one.
"""

from __future__ import annotations

from ..backend import namespace
from ._softmax_ops import log_softmax_loss, softmax_residual
from .base import Problem, check_integer_labels, host_data
from .spectral import lambda_max_gram


class SoftmaxRegression(Problem):
    """Softmax regression over a shard ``(A, b)`` with ``b ∈ {0, …, C−1}^m``.

    Parameters
    ----------
    n_classes : int, optional
        ``C``. Inferred as ``max(b) + 1`` when omitted, which on a shard that misses the top
        class gives the wrong dimension: distributed runs should pass the global ``C``.

    Notes
    -----
    ``∇_W f = (1/m) Aᵀ(P − Y) + λ2 W`` with ``P`` the row-wise softmax of ``AW`` and ``Y`` the
    one-hot labels. The Hessian is ``(1/m) Σ_j (diag(p_j) − p_j p_jᵀ) ⊗ a_j a_jᵀ + λ2 I``. Every
    ``diag(p) − ppᵀ`` has ``λ_max ≤ 1/2``: by Gershgorin, row ``c`` has diagonal ``p_c(1 − p_c)``
    and off-diagonal absolute sum ``p_c(1 − p_c)``, so every eigenvalue is at most
    ``max_c 2p_c(1 − p_c) ≤ 1/2`` (cf. Böhning, "Multinomial logistic regression algorithm",
    Ann. Inst. Statist. Math. 44, 1992, whose bound ``(1/2)(I − 11ᵀ/C)`` is slightly sharper).
    Hence ``L = λ_max(AᵀA)/(2m) + λ2``. It is attained for ``C = 2`` at ``x = 0`` along
    ``u ⊗ (1, −1)/√2``, ``u`` the top eigenvector of ``AᵀA``.
    """

    name = "softmax"

    def __init__(self, A, b, l1: float = 0.0, l2: float = 0.0, n_classes: int | None = None):
        super().__init__(A, b, l1=l1, l2=l2)
        self.b, self.n_classes = check_integer_labels(self.b, n_classes, "softmax regression")

    def hyperparameters(self):
        return {**super().hyperparameters(), "n_classes": self.n_classes}

    @property
    def dim(self) -> int:
        return self.n_features * self.n_classes

    def _data_loss(self, x, rows) -> float:
        A, y, _ = self._rows(rows)
        loss, _ = log_softmax_loss(A @ self._weights(x), y)
        return loss

    def _data_grad(self, x, rows):
        A, y, m = self._rows(rows)
        _, P = log_softmax_loss(A @ self._weights(x), y)
        G = A.T @ softmax_residual(P, y)
        return namespace(G).reshape(G, (-1,)) / m

    def _data_smoothness(self) -> float:
        return lambda_max_gram(host_data(self.A)) / (2.0 * self.n_samples)

    def predict(self, x, A=None):
        """Predicted classes ``argmax_c (AW)_c`` for ``A`` (default: the shard)."""
        A = self.A if A is None else A
        Z = A @ self._weights(x)
        return namespace(Z).argmax(Z, axis=1)

    def _weights(self, x):
        """``W = x.reshape(d, C)`` (a view)."""
        return namespace(x).reshape(x, (self.n_features, self.n_classes))

