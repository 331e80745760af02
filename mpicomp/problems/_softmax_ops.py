"""Row-wise log-sum-exp and softmax cross-entropy, shared by the softmax and MLP problems.

Written with array API standard functions (`mpicomp.backend.namespace`), so they run on any
array namespace; on NumPy the arithmetic is the same as ever.
"""

from __future__ import annotations

from ..backend import namespace
from .base import dense_device


def log_softmax_loss(Z, y):
    """``(mean_j [logsumexp(Z_j) − Z_j,y_j], P)`` with ``P = softmax(Z)`` row-wise, stably.

    The maximum of each row is subtracted before exponentiating, so no entry overflows.
    """
    xp = namespace(Z)
    zmax = xp.max(Z, axis=1, keepdims=True)
    E = xp.exp(Z - zmax)
    s = xp.sum(E, axis=1, keepdims=True)
    lse = zmax[:, 0] + xp.log(s[:, 0])
    picked = xp.take_along_axis(Z, y[:, None], axis=1)[:, 0]  # Z[j, y_j]
    loss = float(xp.mean(lse - picked))
    return loss, E / s


def softmax_residual(P, y):
    """``P − onehot(y)``: the gradient of the cross-entropy with respect to the logits.

    Subtracts 1 at ``(j, y_j)`` and 0 elsewhere (exact), without an in-place scatter.
    """
    xp = namespace(P)
    classes = xp.arange(P.shape[1], dtype=y.dtype, device=dense_device(y))
    return P - xp.astype(y[:, None] == classes, P.dtype)
