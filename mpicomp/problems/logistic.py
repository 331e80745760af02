"""Binary logistic regression with labels ±1 (SPEC §4).

``f(x) = (1/m) Σ_j log(1 + exp(−b_j a_jᵀx)) + (λ2/2)‖x‖²``, computed as
``logaddexp(0, −b_j a_jᵀx)`` so that it stays finite (and exact) for any margin.
"""

from __future__ import annotations

import numpy as np

from ..backend import namespace, to_host
from .base import Problem, dense_device, host_data
from .spectral import lambda_max_gram


class LogisticRegression(Problem):
    """Logistic regression over a shard ``(A, b)``, ``b ∈ {−1, +1}^m``.

    Notes
    -----
    ``∇f(x) = −(1/m) Aᵀ(b ⊙ σ(−b ⊙ Ax)) + λ2 x`` with ``σ(t) = 1/(1 + e^{−t})``, evaluated as
    ``exp(−logaddexp(0, t))`` (no overflow). The Hessian is ``(1/m) Aᵀ D A + λ2 I`` with
    ``D = diag(σ(1 − σ)) ⪯ I/4``, hence the smoothness bound
    ``L = λ_max(AᵀA)/(4m) + λ2`` (SPEC §4).
    """

    name = "logistic"

    def __init__(self, A, b, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(A, b, l1=l1, l2=l2)
        found = np.unique(np.asarray(to_host(self.b)))
        if not np.isin(found, (-1.0, 1.0)).all():
            shown = found.tolist()[:10] + (["..."] if found.size > 10 else [])
            hint = " (map 0 to -1)" if set(found.tolist()) <= {0, 1} else ""
            raise ValueError(
                f"logistic regression needs labels in {{-1, +1}}; found labels {shown}{hint}; "
                "use the softmax problem for more than two classes"
            )
        xp = namespace(self.b)
        dtype = self.A.dtype
        self.b = xp.asarray(self.b, dtype=dtype) if xp is np else xp.astype(self.b, dtype)

    @property
    def dim(self) -> int:
        return self.n_features

    def _data_loss(self, x, rows) -> float:
        A, b, m = self._rows(rows)
        xp = namespace(x)
        return float(xp.sum(xp.logaddexp(0.0, -b * (A @ x)))) / m

    def _data_grad(self, x, rows):
        A, b, m = self._rows(rows)
        xp = namespace(x)
        t = b * (A @ x)
        w = -b * xp.exp(-xp.logaddexp(0.0, t))  # −b σ(−t)
        return (A.T @ w) / m

    def _data_smoothness(self) -> float:
        return lambda_max_gram(host_data(self.A)) / (4.0 * self.n_samples)

    def predict(self, x, A=None):
        """Predicted labels ``sign(Ax)`` in ``{−1, +1}`` (a zero margin predicts +1)."""
        A = self.A if A is None else A
        z = A @ x
        xp = namespace(z)
        one = xp.asarray(1.0, dtype=xp.float64, device=dense_device(z))
        return xp.where(z >= 0, one, -1.0)
