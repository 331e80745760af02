"""Row-wise log-sum-exp and softmax cross-entropy, shared by the softmax and MLP problems."""

from __future__ import annotations

from ..backend import get_xp


def log_softmax_loss(Z, y):
    """``(mean_j [logsumexp(Z_j) − Z_j,y_j], P)`` with ``P = softmax(Z)`` row-wise, stably.

    The maximum of each row is subtracted before exponentiating, so no entry overflows.
    """
    xp = get_xp(Z)
    zmax = Z.max(axis=1, keepdims=True)
    E = xp.exp(Z - zmax)
    s = E.sum(axis=1, keepdims=True)
    lse = zmax[:, 0] + xp.log(s[:, 0])
    rows = xp.arange(Z.shape[0])
    loss = float((lse - Z[rows, y]).mean())
    return loss, E / s


def softmax_residual(P, y):
    """``P − onehot(y)``: the gradient of the cross-entropy with respect to the logits."""
    xp = get_xp(P)
    R = P.copy()
    R[xp.arange(P.shape[0]), y] -= 1.0
    return R
